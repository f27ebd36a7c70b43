/**
 * Add-ons, one-time charges and frozen unit names through the real process
 * (issue 18), defined once and run on both ClickHouse back ends: catalog
 * writes over HTTP, a settlement run across the first term end, then the
 * statement names each grant's source and what it carried and expired; a
 * rename mid-term leaves what the existing subscriber sees unchanged while
 * a customer with no subscription sees the new name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  api,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

export function defineAddOns(backend: Backend): void {
  describe(`add-ons, charges and unit names on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`add-ons-${backend}`);
    let nats: NatsServerProcess;
    let clickhouse: ClickHouseTarget;
    let drawdown: Running;
    let base: string;
    const put = async (path: string, body: unknown): Promise<any> => {
      const res = await api(base, 'PUT', path, body);
      expect({ path, status: res.status, body: res.status === 200 ? 'ok' : res.body }).toEqual({
        path,
        status: 200,
        body: 'ok',
      });
      return res.body;
    };

    beforeAll(async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      drawdown = await startDrawdown(testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url }), {
        ingest: true,
        rater: true,
        settlement: true,
      });
      base = drawdown.url!;
      await put('/v1/catalog/credit-units/ai', { name: 'AI credits', internal_name: 'ai_v1' });
      const plan = await api(base, 'POST', '/v1/catalog/plans/pro-ai/versions', {
        billing: 'monthly',
        grants: [
          {
            id: 'monthly',
            unit: 'ai',
            quantity: '10000',
            frequency: 'monthly',
            rollover: { kind: 'capped', percent: '20', maximum: '1000' },
          },
        ],
      });
      expect(plan.status).toBe(200);
      await put('/v1/catalog/add-ons/ai-5k', {
        name: '+5,000 AI credits / month',
        billing: 'monthly',
        versions: [
          { version: 1, grant: { unit: 'ai', quantity: '5000', frequency: 'monthly', rollover: { kind: 'none' } } },
        ],
      });
      await put('/v1/catalog/charges/launch-bonus', { grant: { unit: 'ai', quantity: '2000', expires_after: 'P60D' } });
      await put('/v1/catalog/subscriptions/sub-ai', {
        customer: 'addon-co',
        plan: 'pro-ai',
        start: '2025-01-01T00:00:00Z',
        add_ons: [{ add_on: 'ai-5k', quantity: 2 }],
        charges: [{ id: 'bonus', charge: 'launch-bonus', at: '2025-01-10T00:00:00Z' }],
      });
    });

    afterAll(async () => {
      await drawdown?.stop();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    it('refuses a grant on a metered add-on with 422 naming the field', async () => {
      const res = await api(base, 'PUT', '/v1/catalog/add-ons/ai-overage', {
        kind: 'metered',
        billing: 'monthly',
        overage: { unit: 'ai', price_per_credit: { currency: 'USD', amount: '0.002' } },
        versions: [{ version: 1, grant: { unit: 'ai', quantity: '5', frequency: 'monthly' } }],
      });
      expect(res.status).toBe(422);
      expect(res.body.errors).toEqual([expect.objectContaining({ field: 'versions[0].grant', code: 'metered' })]);
    });

    it('grants plan, add-on and charge blocks, and the closed term states each source, carry and expiry', async () => {
      const run = await api(base, 'POST', '/v1/settlements', { until: '2025-02-01T00:01:00Z' });
      expect(run.status).toBe(200);
      // Terms close by the clock (newest first), so January 2025 is far down the list.
      const statements = (await api(base, 'GET', '/v1/customers/addon-co/statements?limit=120')).body.statements;
      const january = statements.find((s: any) => s.term_start === '2025-01-01T00:00:00.000Z');
      expect(january.units.ai).toMatchObject({
        name: 'AI credits',
        internal_name: 'ai_v1',
        opening_balance: '0',
        granted: '22000',
        grants: [
          { source: 'plan', id: 'pro-ai', granted: '10000' },
          { source: 'add_on', id: 'ai-5k', granted: '10000' },
          { source: 'charge', id: 'launch-bonus', granted: '2000' },
        ],
        // The add-on's 10,000 (no rollover) and 9,000 of the plan's (capped at 1,000) expire at the term end.
        expired: '19000',
        carried: '3000',
        closing_balance: '3000',
      });
      const ledger = (await api(base, 'GET', '/v1/customers/addon-co/ledger?limit=1000')).body.entries;
      const grants = ledger
        .filter((e: any) => e.kind === 'grant')
        .map((e: any) => [e.effective_at, e.grant_source, e.grant_origin, e.amount, e.block_expires_at])
        // Entries of one second are ordered by id (a hash); order them by source to read.
        .sort((a: string[], b: string[]) => (a.join() < b.join() ? -1 : 1));
      expect(grants).toEqual([
        ['2025-01-01T00:00:00.000Z', 'add_on', 'ai-5k', '10000', '2025-02-01T00:00:00.000Z'],
        ['2025-01-01T00:00:00.000Z', 'plan', 'pro-ai', '10000', null],
        ['2025-01-10T00:00:00.000Z', 'charge', 'launch-bonus', '2000', '2025-03-11T00:00:00.000Z'],
        ['2025-02-01T00:00:00.000Z', 'add_on', 'ai-5k', '10000', '2025-03-01T00:00:00.000Z'],
        ['2025-02-01T00:00:00.000Z', 'plan', 'pro-ai', '10000', null],
      ]);
    });

    it('keeps the names in force when the subscription started after a mid-term rename; others see the new name', async () => {
      const renamed = await put('/v1/catalog/credit-units/ai', { name: 'Spark credits', internal_name: 'ai_v2' });
      expect(renamed.changes).toEqual([expect.objectContaining({ kind: 'credit_unit', id: 'ai', change: 'changed' })]);
      // The store kept the old names, until the rename.
      const document = (await api(base, 'GET', '/v1/catalog')).body.document;
      const unit = document.credit_units.find((u: any) => u.id === 'ai');
      expect(unit.previous_names).toEqual([{ name: 'AI credits', internal_name: 'ai_v1', until: expect.any(String) }]);
      // A file that leaves the history out keeps it; one that rewrites it is refused.
      const { previous_names: _kept, ...withoutHistory } = unit;
      const again = await api(base, 'PUT', '/v1/catalog/credit-units/ai', withoutHistory);
      expect([again.status, again.body.changed]).toEqual([200, false]);
      const rewritten = await api(base, 'PUT', '/v1/catalog/credit-units/ai', {
        ...unit,
        previous_names: [{ ...unit.previous_names[0], name: 'Something else' }],
      });
      expect(rewritten.status).toBe(409);
      expect(rewritten.body.errors).toEqual([expect.objectContaining({ field: 'previous_names', code: 'immutable' })]);

      const balance = (await api(base, 'GET', '/v1/customers/addon-co/balance')).body;
      expect(balance.units.find((u: any) => u.unit === 'ai')).toMatchObject({
        name: 'AI credits',
        internal_name: 'ai_v1',
        settled: '23000',
      });
      const ledger = (await api(base, 'GET', '/v1/customers/addon-co/ledger?limit=1000')).body.entries;
      expect(new Set(ledger.map((e: any) => e.unit_name))).toEqual(new Set(['AI credits']));
      const statements = (await api(base, 'GET', '/v1/customers/addon-co/statements')).body.statements;
      expect(statements[0].units.ai.name).toBe('AI credits');

      // A customer with no subscription is not an existing subscriber: the current name.
      const credit = await api(
        base,
        'POST',
        '/v1/customers/walk-in/adjustments',
        { unit: 'ai', amount: '5', reason: 'goodwill' },
        { 'idempotency-key': 'walk-in-1' },
      );
      expect(credit.status).toBe(201);
      expect(credit.body.entry).toMatchObject({ unit_name: 'Spark credits', unit_internal_name: 'ai_v2' });
      const walkIn = (await api(base, 'GET', '/v1/customers/walk-in/balance')).body;
      expect(walkIn.units.find((u: any) => u.unit === 'ai')).toMatchObject({ name: 'Spark credits' });
    });
  });
}
