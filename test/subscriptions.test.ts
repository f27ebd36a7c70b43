/**
 * Subscriptions through the real pipeline: monthly grants issued by
 * settlement, capped rollover applied at each period end, usage drawn from the
 * grant, and a plan's overage billed past the balance — on clickhouse-server.
 */
import { writeFileSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  api,
  catalogPath,
  postEvents,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  waitForStreamDrained,
  type ClickHouseTarget,
} from './harness.js';

const dayMs = 86_400_000;

describe('subscriptions and grants', () => {
  const dir = tempDir('subscriptions');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  let drawdown: Running;
  let base: string;
  // Whole seconds, 65 days ago: three monthly periods have started since.
  const startMs = Math.floor((Date.now() - 65 * dayMs) / 1000) * 1000;
  const usageAtMs = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;
  // The first run stops 2 minutes short of now, leaving room for a later run.
  const untilMs = Math.floor(Date.now() / 60_000) * 60_000 - 2 * 60_000;
  const untilIso = new Date(untilMs).toISOString();
  const priceChangeMs = usageAtMs + 5 * 60_000;
  let report: any;

  beforeAll(async () => {
    const catalog = JSON.parse(readFileSync(catalogPath, 'utf8'));
    catalog.plans = [
      {
        id: 'pro',
        billing: 'monthly',
        versions: [
          {
            version: 1,
            grants: [
              {
                id: 'monthly',
                unit: 'credits',
                quantity: '1000',
                frequency: 'monthly',
                rollover: { kind: 'capped', percent: '50', maximum: '250' },
              },
            ],
          },
          {
            version: 2,
            grants: [
              { id: 'monthly', unit: 'credits', quantity: '10', frequency: 'monthly', rollover: { kind: 'none' } },
            ],
            overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.02' } },
          },
        ],
      },
    ];
    // A price change 5 minutes before "now": 5.00 → 10.00 credits per 1,000,000 tokens.
    const v1 = catalog.rate_card.versions[0];
    catalog.rate_card.versions.push({
      ...v1,
      version: '2026-price-change',
      effective_from: new Date(priceChangeMs).toISOString(),
      rows: v1.rows.map((row: any) =>
        row.meter === 'gpt-4o.input_tokens' ? { ...row, price: { ...row.price, amount: '10.00' } } : row,
      ),
    });
    catalog.subscriptions = [
      // Started on version 1, and keeps it though version 2 exists.
      { id: 'sub-capped', customer: 'capped', plan: 'pro', plan_version: 1, start: new Date(startMs).toISOString() },
      { id: 'sub-overage', customer: 'overage', plan: 'pro', start: new Date(startMs).toISOString() },
    ];
    const path = `${dir.path}/catalog.json`;
    writeFileSync(path, JSON.stringify(catalog));
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    drawdown = await startDrawdown(testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url, catalog: path }), {
      ingest: true,
      rater: true,
      settlement: true,
    });
    base = drawdown.url!;
    for (const customer of ['capped', 'overage']) {
      // 80,000,000 tokens at 5.00 per 1,000,000 = 400 credits.
      const sent = await postEvents(base, [
        { id: `${customer}-1`, customer, meter: 'gpt-4o.input_tokens', quantity: 80_000_000, timestamp: usageAtMs },
      ]);
      expect(sent.status).toBe(202);
    }
    // One million tokens before the price change and one million after it, in the same settlement window.
    const repriced = await postEvents(base, [
      {
        id: 'rp-1',
        customer: 'repriced',
        meter: 'gpt-4o.input_tokens',
        quantity: 1_000_000,
        timestamp: priceChangeMs - 2 * 60_000,
      },
      {
        id: 'rp-2',
        customer: 'repriced',
        meter: 'gpt-4o.input_tokens',
        quantity: 1_000_000,
        timestamp: priceChangeMs + 2 * 60_000,
      },
    ]);
    expect(repriced.status).toBe(202);
    await waitForStreamDrained(nats.url);
    report = (await api(base, 'POST', '/v1/settlements', { until: untilIso })).body;
  });

  afterAll(async () => {
    await drawdown?.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('issues a monthly grant per period and applies the capped rollover at each period end', async () => {
    // 1,000 unused → 250 carry (750 expire); 1,250 unused → 250 carry (1,000 expire); 1,250 − 400 used = 850.
    expect(report.customers.capped).toMatchObject({
      granted: { credits: '3000' },
      expired: { credits: '1750' },
      carried: { credits: '500' },
      over_limit: {},
    });
    const balance = await api(base, 'GET', '/v1/customers/capped/balance');
    expect(balance.body.units[0]).toMatchObject({ settled: '850', over_limit: false });
    const ledger = await api(base, 'GET', '/v1/customers/capped/ledger');
    // Per block: the second period end expires the 250 carried from period 1 first (oldest), then 750 of
    // period 2's grant; the 400 used come from period 2's remaining 250, then 150 of period 3's grant.
    const kinds = (ledger.body.entries as any[])
      .map((e) => `${e.kind} ${e.amount} ${e.block.split(':').at(-1)}`)
      .sort();
    expect(kinds).toEqual([
      'expiry -250 p0',
      'expiry -750 p0',
      'expiry -750 p1',
      'grant 1000 p0',
      'grant 1000 p1',
      'grant 1000 p2',
      'usage -150 p2',
      'usage -250 p1',
    ]);
    // An auditor's view of that split line: each entry carries the share of the 80,000,000 tokens it paid for,
    // and the expiry of the block it drew from, which is the order blocks burn in.
    const usage = (ledger.body.entries as any[]).filter((e) => e.kind === 'usage');
    const byBlock = new Map(usage.map((e) => [e.block.split(':').at(-1), e]));
    expect(byBlock.get('p1')).toMatchObject({ quantity: '50000000' });
    expect(byBlock.get('p2')).toMatchObject({ quantity: '30000000' });
    // Capped-rollover blocks have no expiry of their own (they are trimmed at each period end).
    for (const e of usage) expect(e.block_expires_at).toBeNull();
  });

  it('bills overage at the plan price once the balance is exhausted', async () => {
    // Version 2: 10 credits a month, expiring; 400 used → 10 from the grant, 390 billed as overage at 0.02 USD.
    expect(report.customers.overage).toMatchObject({ overage: { credits: '390' }, over_limit: {} });
    const ledger = await api(base, 'GET', '/v1/customers/overage/ledger');
    const overage = (ledger.body.entries as any[]).find((e) => e.kind === 'overage');
    expect(overage).toMatchObject({ amount: '390' });
    expect(overage.source).toContain('7.8 USD');
    // The 10 came from this period's grant, which (rollover none) expires at the period end: the ledger says when.
    const usage = (ledger.body.entries as any[]).filter((e) => e.kind === 'usage');
    const fromGrant = usage.find((e) => e.block !== null);
    const grant = (ledger.body.entries as any[]).find((e) => e.kind === 'grant' && e.block === fromGrant.block);
    // 80,000,000 tokens for 400 credits: 10 credits' worth (2,000,000) from the grant, the rest as overage.
    expect(fromGrant).toMatchObject({ amount: '-10', quantity: '2000000' });
    expect(usage.find((e) => e.block === null)).toMatchObject({ amount: '-390', quantity: '78000000' });
    expect(fromGrant.block_expires_at).toBe(grant.block_expires_at);
    expect(Date.parse(fromGrant.block_expires_at)).toBeGreaterThan(usageAtMs);
    expect(Date.parse(fromGrant.block_expires_at)).toBeLessThanOrEqual(usageAtMs + 31 * dayMs);
    const balance = await api(base, 'GET', '/v1/customers/overage/balance');
    expect(balance.body.units[0]).toMatchObject({ settled: '0', over_limit: false });
  });

  it('prices each part of a window by the rate card version in force at its own minutes', async () => {
    expect(report.customers.repriced.rated.map((r: any) => [r.rate_version, r.quantity, r.cost]).sort()).toEqual([
      ['2026-01', '1000000', '5'],
      ['2026-price-change', '1000000', '10'],
    ]);
    const balance = await api(base, 'GET', '/v1/customers/repriced/balance');
    expect(balance.body.units[0]).toMatchObject({ settled: '-15' });
  });

  it('settling again, up to the same instant, posts nothing new', async () => {
    const again = await api(base, 'POST', '/v1/settlements', { until: untilIso });
    expect(again.body.entries_posted).toBe(0);
    const balance = await api(base, 'GET', '/v1/customers/capped/balance');
    expect(balance.body.units[0].settled).toBe('850');
  });

  it('usage arriving after its time was settled is billed by the next run, as an adjustment', async () => {
    const late = await postEvents(base, [
      {
        id: 'late-1',
        customer: 'late',
        meter: 'gpt-4o.input_tokens',
        quantity: 1_000_000,
        timestamp: untilMs - 60_000,
      },
    ]);
    expect(late.status).toBe(202);
    await waitForStreamDrained(nats.url);
    const pending = await api(base, 'GET', '/v1/customers/late/balance');
    // Its minute lies after the price change: 10.00 per 1,000,000 tokens.
    expect(pending.body.units[0]).toMatchObject({ settled: '0', pending: '10', available: '-10' });
    const next = await api(base, 'POST', '/v1/settlements', {
      until: new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString(),
    });
    expect(next.body.customers.late.rated).toEqual([
      expect.objectContaining({ quantity: '1000000', cost: '10', rate_version: '2026-price-change', late: true }),
    ]);
    const ledger = await api(base, 'GET', '/v1/customers/late/ledger');
    expect((ledger.body.entries as any[]).map((e) => [e.kind, e.amount])).toEqual([['adjustment', '-10']]);
    // Nothing settled earlier is billed again.
    const capped = await api(base, 'GET', '/v1/customers/capped/balance');
    expect(capped.body.units[0].settled).toBe('850');
  });
});
