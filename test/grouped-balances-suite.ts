/**
 * Balance notices read the live figures of every customer a rater flush
 * touched in one read of each kind (settlement/balance.ts balancesOf,
 * hold-coverage.ts readHoldCoverages, live-balance.ts freshMany). Defined once
 * for both back ends: for customers in every state — settled and pending,
 * pending only, usage naming a hold, usage no rate prices, nothing at all —
 * the grouped read answers exactly what one read per customer answers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCatalogFile, type Catalog } from '../catalog/model.js';
import type { AggregateRow } from '../rater/aggregate.js';
import { flushPayload } from '../rater/flush.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import type { Store } from '../shared/clickhouse/store.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import { balanceOf, balancesOf } from '../settlement/balance.js';
import { readHoldCoverage, readHoldCoverages } from '../settlement/hold-coverage.js';
import { holdIdFor } from '../settlement/holds/hold-ids.js';
import { LiveBalances } from '../settlement/live-balance.js';
import { purchasePackage } from '../settlement/purchases.js';
import { settle } from '../settlement/settle.js';
import { catalogPath, startClickHouse, tempDir, type Backend, type ClickHouseTarget } from './harness.js';

const minute = 60;
/** A minute boundary in the past, so every flush below is committed usage a balance read now includes. */
const t0 = Math.floor(Date.now() / 1000 / 3600) * 3600 - 6 * 3600;
const customers = ['g-settled', 'g-pending', 'g-hold', 'g-unpriced', 'g-none'];

export function defineGroupedBalances(backend: Backend): void {
  describe(`grouped live balance reads on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`grouped-balances-${backend}`);
    let clickhouse: ClickHouseTarget;
    let store: Store;
    let catalog: Catalog;
    let label = 0;

    const flush = async (rows: AggregateRow[]): Promise<void> => {
      label++;
      await store.insert('usage_minute', usageMinuteFlushColumns, flushPayload(rows, 0, label, t0 + 3 * 3600));
    };
    const tokens = (customer: string, at: number, n: bigint, hold?: string): AggregateRow =>
      hold === undefined
        ? [customer, 'gpt-4o.input_tokens', '{}', at, n * 1_000_000_000n, 1]
        : [customer, 'gpt-4o.input_tokens', '{}', at, n * 1_000_000_000n, 1, hold];

    beforeAll(async () => {
      clickhouse = await startClickHouse(backend, dir.path);
      store = await openStore(clickhouse.url);
      await ensureSchema(store);
      catalog = loadCatalogFile(catalogPath);
      for (const customer of ['g-settled', 'g-hold'])
        await purchasePackage(store, catalog, {
          customer,
          packageId: 'credits-100',
          idempotencyKey: `buy-${customer}`,
          nowSec: t0,
        });
      // Settled: usage a run took; then pending usage for several customers after the run.
      await flush([tokens('g-settled', t0 + minute, 40_000n)]);
      await settle(store, catalog, { untilSec: t0 + 3600, nowSec: t0 + 3600 + minute });
      const hold = holdIdFor({ customer: 'g-hold', unit: 'credits' }, 'reserve-1');
      await flush([
        tokens('g-settled', t0 + 3600 + minute, 25_000n),
        tokens('g-pending', t0 + 3600 + 2 * minute, 7_000n),
        tokens('g-hold', t0 + 3600 + 3 * minute, 3_000n, hold),
        tokens('g-hold', t0 + 3600 + 4 * minute, 1_000n),
        ['g-unpriced', 'no-such-meter', '{}', t0 + 3600 + minute, 5_000_000_000n, 1],
      ]);
    });

    afterAll(async () => {
      await store?.close();
      await clickhouse?.stop();
      dir.remove();
    });

    it('given customers in every state, then balancesOf answers what balanceOf answers for each', async () => {
      const nowMs = (t0 + 4 * 3600) * 1000;
      const grouped = await balancesOf(store, catalog, customers, nowMs);
      expect([...grouped.keys()]).toEqual(customers);
      for (const customer of customers)
        expect(grouped.get(customer)).toEqual(await balanceOf(store, catalog, customer, nowMs));
      // The states are what they say: the figures differ, and a customer with nothing has no units.
      expect(grouped.get('g-settled')!.units[0]!.pending).not.toBe('0');
      expect(grouped.get('g-settled')!.units[0]!.settled).not.toBe(grouped.get('g-pending')!.units[0]!.settled);
      expect(grouped.get('g-unpriced')!.unrated_pending.map((u) => u.meter)).toEqual(['no-such-meter']);
      expect(grouped.get('g-none')!.units).toEqual([]);
    });

    it('given usage naming a hold, then readHoldCoverages answers what readHoldCoverage answers for each', async () => {
      const grouped = await readHoldCoverages(store, catalog, customers, t0, undefined);
      for (const customer of customers)
        expect(grouped.get(customer)).toEqual(await readHoldCoverage(store, catalog, customer, t0, undefined));
      expect([...grouped.get('g-hold')!.keys()]).toEqual(['credits']);
      expect(grouped.get('g-pending')!.size).toBe(0);
    });

    it('given one grouped live read, then each customer is served the figures fresh() reads', async () => {
      const options = { cacheMs: 60_000, cachedCustomersMax: 100, holdLookbackMs: 86_400_000 };
      const many = await new LiveBalances(store, catalog, options).freshMany(customers);
      for (const customer of customers) {
        const one = await new LiveBalances(store, catalog, options).fresh(customer);
        expect(many.get(customer)!.balance.units).toEqual(one.balance.units);
        expect(many.get(customer)!.coverage).toEqual(one.coverage);
      }
    });
  });
}
