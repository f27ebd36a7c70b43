/**
 * End to end through real servers, HTTP to balance: SPEC §7 examples 1 and 2,
 * batch retries, a rejected batch, and settlement re-runs. Defined once and
 * run on both ClickHouse back ends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { example1, example2 } from '../deploy/workloads.js';
import {
  api,
  postEvents,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

export function defineEndToEnd(backend: Backend): void {
  describe(`end to end on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`e2e-${backend}`);
    let nats: NatsServerProcess;
    let clickhouse: ClickHouseTarget;
    let drawdown: Running;
    let base: string;
    // Usage sits well inside the lateness window and wholly before the settlement cut-off.
    const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 30 * 60_000;
    const untilIso = new Date(atMs + 20 * 60_000).toISOString();
    const first = { retried: undefined as any, rejected: undefined as any, settlement: undefined as any };

    beforeAll(async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      drawdown = await startDrawdown(testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url }), {
        ingest: true,
        rater: true,
        settlement: true,
      });
      base = drawdown.url!;

      for (const customer of ['acme', 'studio']) {
        const bought = await api(
          base,
          'POST',
          `/v1/customers/${customer}/purchases`,
          { package: 'credits-100', effective_at: new Date(atMs - 60_000).toISOString() },
          { 'idempotency-key': `buy-${customer}` },
        );
        expect(bought.status).toBe(201);
      }
      expect((await postEvents(base, example1('acme', atMs))).status).toBe(202);
      // Example 2 as JSON, to cover both body formats end to end.
      expect((await postEvents(base, example2('studio', atMs), { json: true })).status).toBe(202);

      // The same batch sent twice under one Idempotency-Key, as a client retry.
      const retryBatch = [
        { id: 'r-1', customer: 'retry', meter: 'gpt-4o.input_tokens', quantity: 1_000_000, timestamp: atMs },
      ];
      const once = await postEvents(base, retryBatch, { key: 'batch-retry-1' });
      first.retried = { once, again: await postEvents(base, retryBatch, { key: 'batch-retry-1' }) };

      // One bad event among good ones: the whole batch is refused.
      first.rejected = await postEvents(base, [
        { id: 'm-1', customer: 'malformed', meter: 'gpt-4o.input_tokens', quantity: 10, timestamp: atMs },
        { id: 'm-2', customer: 'malformed', meter: 'gpt-4o.input_tokens', quantity: -5, timestamp: atMs },
        { id: 'm-3', customer: 'malformed', meter: 'no.such.meter', timestamp: atMs },
      ]);

      // Usage no rate card row prices: the run reports it as unrated.
      expect(
        (
          await postEvents(base, [
            {
              id: 'u-1',
              customer: 'unpriced',
              meter: 'images',
              quantity: 3,
              timestamp: atMs,
              dimensions: { model: 'Unpriced', resolution: '1K', input: 'prompt' },
            },
          ])
        ).status,
      ).toBe(202);

      await waitForStreamDrained(nats.url);
      first.settlement = await api(base, 'POST', '/v1/settlements', { until: untilIso });
      expect(first.settlement.status).toBe(200);
    });

    afterAll(async () => {
      await drawdown?.stop();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    it('example 1: 2,000,000 GPT-4o tokens and 50 images deduct 12.00; 100 → 88', async () => {
      const balance = await api(base, 'GET', '/v1/customers/acme/balance');
      expect(balance.body.units).toEqual([
        {
          unit: 'credits',
          name: 'Credits',
          internal_name: 'credits_usd',
          settled: '88',
          pending: '0',
          held: '0',
          available: '88',
          display: '88.00',
          over_limit: false,
        },
      ]);
      const ledger = await api(base, 'GET', '/v1/customers/acme/ledger');
      // Bought before the usage: both usage entries draw on the purchase's block, and nothing is over limit.
      const purchase = (ledger.body.entries as any[]).find((e) => e.kind === 'purchase');
      expect((ledger.body.entries as any[]).filter((e) => e.kind === 'usage').map((e) => e.block)).toEqual([
        purchase.block,
        purchase.block,
      ]);
      expect(first.settlement.body.customers.acme.over_limit).toEqual({});
      const lines = (ledger.body.entries as any[]).map((e) => [e.kind, e.meter, e.quantity, e.amount]).sort();
      expect(lines).toEqual(
        [
          ['purchase', null, null, '100'],
          ['usage', 'dall-e-3.images', '50', '-2'],
          ['usage', 'gpt-4o.input_tokens', '2000000', '-10'],
        ].sort(),
      );
    });

    it('example 2: 10 + 4 + 2 + 5 dimensional images cost 30 + 20 + 20 + 30 = 100', async () => {
      const ledger = await api(base, 'GET', '/v1/customers/studio/ledger');
      const usage = (ledger.body.entries as any[])
        .filter((e) => e.kind === 'usage')
        .map((e) => [e.dimensions.model, e.dimensions.input, e.quantity, e.amount])
        .sort();
      expect(usage).toEqual(
        [
          ['Nano Banana', 'prompt', '10', '-30'],
          ['Nano Banana', 'prompt+image', '4', '-20'],
          ['Nano Banana Pro', 'prompt+multi-image', '2', '-20'],
          ['GPT Image 1.5', 'prompt', '5', '-30'],
        ].sort(),
      );
      // request_id is not a declared dimension: it never reaches prices or storage.
      expect((ledger.body.entries as any[]).some((e) => e.dimensions && 'request_id' in e.dimensions)).toBe(false);
      const balance = await api(base, 'GET', '/v1/customers/studio/balance');
      expect(balance.body.units[0]).toMatchObject({ unit: 'credits', settled: '0', available: '0' });
    });

    it('a batch retried with the same Idempotency-Key is counted once', async () => {
      expect(first.retried.once).toMatchObject({ status: 202, body: { accepted: 1, duplicate: false } });
      expect(first.retried.again).toMatchObject({ status: 202, body: { accepted: 1, duplicate: true } });
      const usage = await api(base, 'GET', '/v1/customers/retry/usage?granularity=day&from=0');
      expect(usage.body.usage).toEqual([
        expect.objectContaining({ meter: 'gpt-4o.input_tokens', quantity: '1000000', events: 1 }),
      ]);
      const balance = await api(base, 'GET', '/v1/customers/retry/balance');
      // No credits bought: the usage is posted anyway, and the customer is over limit.
      expect(balance.body.units).toEqual([expect.objectContaining({ settled: '-5', over_limit: true })]);
      expect(first.settlement.body.customers.retry.over_limit).toEqual({ credits: '5' });
    });

    it('a batch with a bad event is refused whole, naming each bad event and field, and nothing is counted', async () => {
      expect(first.rejected.status).toBe(422);
      expect(first.rejected.body).toMatchObject({ code: 'event_invalid', status: 422 });
      expect(first.rejected.body.errors).toEqual([
        expect.objectContaining({ index: 1, field: 'quantity', code: 'quantity_negative' }),
        expect.objectContaining({ index: 2, field: 'meter', code: 'unknown_meter' }),
      ]);
      const usage = await api(base, 'GET', '/v1/customers/malformed/usage?granularity=day&from=0');
      expect(usage.body.usage).toEqual([]);
      const totals = await usageTotals(drawdown.store!);
      expect([...totals.keys()].some((k) => k.startsWith('malformed|'))).toBe(false);
    });

    it('re-running the settlement window posts nothing new and leaves balances unchanged', async () => {
      const from = first.settlement.body.from;
      const again = await api(base, 'POST', '/v1/settlements', { from, until: untilIso });
      expect(again.status).toBe(200);
      expect(again.body.entries_posted).toBe(0);
      expect(again.body.entries_already_posted).toBe(first.settlement.body.entries_posted);
      const balance = await api(base, 'GET', '/v1/customers/acme/balance');
      expect(balance.body.units[0].settled).toBe('88');
    });

    it('a repeated purchase with the same Idempotency-Key buys once', async () => {
      const again = await api(
        base,
        'POST',
        '/v1/customers/acme/purchases',
        { package: 'credits-100' },
        { 'idempotency-key': 'buy-acme' },
      );
      expect(again.status).toBe(200);
      expect(again.body.created).toBe(false);
      const balance = await api(base, 'GET', '/v1/customers/acme/balance');
      expect(balance.body.units[0].settled).toBe('88');
    });

    it('lists past runs newest first, page by page, each with its window, totals and unpriced usage', async () => {
      const secondUntil = new Date(atMs + 25 * 60_000).toISOString();
      const second = await api(base, 'POST', '/v1/settlements', { until: secondUntil });
      expect(second.status).toBe(200);
      const page1 = await api(base, 'GET', '/v1/settlements?limit=1');
      expect(page1.status).toBe(200);
      expect(page1.body.runs).toHaveLength(1);
      expect(page1.body.runs[0]).toMatchObject({
        run_id: second.body.run_id,
        from: untilIso,
        until: secondUntil,
        status: 'completed',
        entries_posted: 0,
        unrated_lines: 0,
      });
      const page2 = await api(base, 'GET', `/v1/settlements?limit=1&after=${encodeURIComponent(page1.body.next)}`);
      const run = page2.body.runs[0];
      expect(run).toMatchObject({
        run_id: first.settlement.body.run_id,
        until: untilIso,
        status: 'completed',
        entries_posted: first.settlement.body.entries_posted,
        customer_count: Object.keys(first.settlement.body.customers).length,
        unrated_lines: 1,
      });
      // 12 (acme) + 100 (studio) + 5 (retry, which bought nothing: over its limit).
      expect(run.totals.credits).toMatchObject({ deducted: '117', over_limit: '5' });
      expect(run.catalog_revision).toBe(first.settlement.body.catalog_revision);
      expect(Date.parse(run.completed_at)).toBeGreaterThanOrEqual(Date.parse(run.started_at));
      const detail = await api(base, 'GET', `/v1/settlements/${encodeURIComponent(run.run_id)}`);
      expect(detail.status).toBe(200);
      expect(detail.body.unrated).toEqual([
        {
          customer: 'unpriced',
          meter: 'images',
          dimensions: { input: 'prompt', model: 'Unpriced', resolution: '1K' },
          quantity: '3',
          reason: expect.stringContaining('no row'),
        },
      ]);
      expect(detail.body.report.customers.acme.deducted).toEqual({ credits: '12' });
      expect((await api(base, 'GET', '/v1/settlements/run:1:2')).status).toBe(404);
      expect((await api(base, 'GET', '/v1/settlements?after=yesterday')).status).toBe(400);
    });
  });
}
