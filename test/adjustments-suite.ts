/**
 * Manual adjustments through the real pipeline (issue 13 item 4), defined once
 * and run on both ClickHouse back ends: a credit adjustment is a block with
 * its own expiry that burns first when it expires soonest, a debit is drawn
 * from the blocks in burn order by the next run, balance = Σ ledger holds at
 * every step, and a key posts once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Decimal } from 'decimal.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  api,
  postEvents,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  waitForStreamDrained,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

const minuteMs = 60_000;

export function defineAdjustments(backend: Backend): void {
  describe(`manual adjustments on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`adjustments-${backend}`);
    let nats: NatsServerProcess;
    let clickhouse: ClickHouseTarget;
    let drawdown: Running;
    let base: string;
    const t0 = Math.floor(Date.now() / minuteMs) * minuteMs - 30 * minuteMs;
    const iso = (ms: number): string => new Date(ms).toISOString();
    const adjust = (customer: string, key: string, body: Record<string, unknown>) =>
      api(base, 'POST', `/v1/customers/${customer}/adjustments`, body, { 'idempotency-key': key });
    const ledgerOf = async (customer: string): Promise<any[]> =>
      (await api(base, 'GET', `/v1/customers/${customer}/ledger?limit=1000`)).body.entries;
    const sum = (entries: any[]): string =>
      entries.reduce((s: Decimal, e: any) => s.plus(e.amount), new Decimal(0)).toFixed();

    beforeAll(async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      drawdown = await startDrawdown(testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url }), {
        ingest: true,
        rater: true,
        settlement: true,
      });
      base = drawdown.url!;
    });

    afterAll(async () => {
      await drawdown?.stop();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    it('refuses what is not an adjustment, naming the field, and posts nothing', async () => {
      const cases: [Record<string, unknown>, Record<string, string>, string][] = [
        [{ unit: 'credits', amount: '0', reason: 'r' }, { 'idempotency-key': 'bad-1' }, 'amount'],
        [{ unit: 'credits', amount: 5, reason: 'r' }, { 'idempotency-key': 'bad-2' }, 'amount'],
        [
          { unit: 'credits', amount: '-5', reason: 'r', expires_at: iso(t0 + 60 * minuteMs) },
          { 'idempotency-key': 'bad-3' },
          'expires_at',
        ],
        [
          { unit: 'credits', amount: '5', reason: 'r', effective_at: iso(Date.now() + 60 * minuteMs) },
          { 'idempotency-key': 'bad-4' },
          'effective_at',
        ],
        [{ unit: 'credits', amount: '5', reason: 'r', reasn: 'typo' }, { 'idempotency-key': 'bad-5' }, 'reasn'],
        [{ unit: 'gold', amount: '5', reason: 'r' }, { 'idempotency-key': 'bad-6' }, 'unit'],
        [{ unit: 'credits', amount: '5', reason: '' }, { 'idempotency-key': 'bad-7' }, 'reason'],
        [{ unit: 'credits', amount: '5', reason: 'r' }, {}, 'Idempotency-Key'],
      ];
      for (const [body, headers, field] of cases) {
        const res = await api(base, 'POST', '/v1/customers/refused/adjustments', body, headers);
        expect({ field, status: res.status, code: res.body.code }).toEqual({
          field,
          status: 400,
          code: 'request_invalid',
        });
        expect(res.body.errors.map((e: any) => e.field)).toContain(field);
      }
      expect(await ledgerOf('refused')).toEqual([]);
    });

    it('posts once per key: a retry answers the same entry, another request under the key is 409', async () => {
      const body = { unit: 'credits', amount: '7.5', reason: 'goodwill for ticket 123' };
      const first = await adjust('keyed', 'goodwill-123', body);
      expect(first.status).toBe(201);
      expect(first.body.entry).toMatchObject({
        kind: 'manual',
        amount: '7.5',
        source: 'manual credit: goodwill for ticket 123',
      });
      // A second later, as a client's retry arrives: still the same adjustment (it left effective_at out).
      await new Promise((r) => setTimeout(r, 1_100));
      const again = await adjust('keyed', 'goodwill-123', body);
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ created: false, entry: { id: first.body.entry.id } });
      expect((await adjust('keyed', 'goodwill-123', { ...body, amount: '8' })).status).toBe(409);
      const balance = await api(base, 'GET', '/v1/customers/keyed/balance');
      expect(balance.body.units[0]).toMatchObject({ settled: '7.5', available: '7.5' });
    });

    it('posts once when ten requests under one key arrive together', async () => {
      const body = { unit: 'credits', amount: '-2', reason: 'duplicate charge' };
      const answers = await Promise.all(Array.from({ length: 10 }, () => adjust('concurrent', 'dup-charge', body)));
      expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
      expect(new Set(answers.map((a) => a.body.entry.id)).size).toBe(1);
      const entries = await ledgerOf('concurrent');
      expect(entries.map((e) => [e.kind, e.amount])).toEqual([['manual', '-2']]);
    });

    it('burns a credit adjustment in expiry order and draws a debit from the blocks like usage; balance = Σ ledger', async () => {
      const customer = 'adj';
      expect(
        (
          await api(
            base,
            'POST',
            `/v1/customers/${customer}/purchases`,
            { package: 'credits-100', effective_at: iso(t0) },
            { 'idempotency-key': 'adj-buy' },
          )
        ).status,
      ).toBe(201);
      // +20, expiring 25 minutes in: it expires before the purchase (which never does), so it burns first.
      const credit = await adjust(customer, 'adj-credit', {
        unit: 'credits',
        amount: '20',
        reason: 'launch bonus',
        effective_at: iso(t0 + minuteMs),
        expires_at: iso(t0 + 25 * minuteMs),
      });
      expect(credit.status).toBe(201);
      expect(credit.body.entry.block_expires_at).toBe(iso(t0 + 25 * minuteMs));
      // 2,000,000 tokens = 10 credits at minute 5: from the bonus (20 → 10).
      const sent = await postEvents(base, [
        { id: 'adj-1', customer, meter: 'gpt-4o.input_tokens', quantity: 2_000_000, timestamp: t0 + 5 * minuteMs },
      ]);
      expect(sent.status).toBe(202);
      // −30 at minute 10: the bonus's last 10, then 20 of the purchase.
      const debit = await adjust(customer, 'adj-debit', {
        unit: 'credits',
        amount: '-30',
        reason: 'chargeback 77',
        effective_at: iso(t0 + 10 * minuteMs),
      });
      expect(debit.status).toBe(201);
      expect(debit.body.entry).toMatchObject({ kind: 'manual', amount: '-30', block: null, block_expires_at: null });
      // Posted at once: the balance moves before any run.
      await waitForStreamDrained(nats.url);
      const before = await api(base, 'GET', `/v1/customers/${customer}/balance`);
      expect(before.body.units[0]).toMatchObject({ settled: '90', pending: '10', available: '80' });

      const run = await api(base, 'POST', '/v1/settlements', { until: iso(t0 + 29 * minuteMs) });
      expect(run.status).toBe(200);
      const entries = await ledgerOf(customer);
      // Nothing of the bonus is left to expire at minute 25: usage took 10, the debit the other 10.
      expect(entries.filter((e) => e.kind === 'expiry')).toEqual([]);
      const bonus = entries.find((e) => e.kind === 'manual' && e.amount === '20')!.block;
      const purchase = entries.find((e) => e.kind === 'purchase')!.block;
      const drawnFrom = (block: string): string =>
        sum(entries.filter((e) => e.block === block && e.kind !== 'manual' && e.kind !== 'purchase'));
      expect(drawnFrom(bonus)).toBe('-20');
      expect(drawnFrom(purchase)).toBe('-20');
      expect(sum(entries)).toBe('80');
      const after = await api(base, 'GET', `/v1/customers/${customer}/balance`);
      expect(after.body.units[0]).toMatchObject({ settled: '80', pending: '0', available: '80' });
      // A re-run of the window posts nothing twice.
      const rerun = await api(base, 'POST', '/v1/settlements', { from: run.body.from, until: run.body.until });
      expect(rerun.body.entries_posted).toBe(0);
      expect(sum(await ledgerOf(customer))).toBe('80');
    });

    it('expires what is left of a credit adjustment at its expiry, in a window without usage', async () => {
      const customer = 'adj-expiring';
      const posted = await adjust(customer, 'exp-credit', {
        unit: 'credits',
        amount: '12',
        reason: 'trial credit',
        effective_at: iso(t0 + 2 * minuteMs),
        expires_at: iso(t0 + 20 * minuteMs),
      });
      expect(posted.status).toBe(201);
      await api(base, 'POST', '/v1/settlements', { until: iso(Math.floor(Date.now() / minuteMs) * minuteMs) });
      const entries = await ledgerOf(customer);
      expect(entries.filter((e) => e.kind === 'expiry').map((e) => [e.amount, e.effective_at])).toEqual([
        ['-12', iso(t0 + 20 * minuteMs)],
      ]);
      expect(sum(entries)).toBe('0');
    });
  });
}
