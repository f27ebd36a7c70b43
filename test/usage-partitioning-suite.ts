/**
 * Settlement's cost does not grow with the deployment's age (issue 17 item
 * 5), defined once for both back ends: usage_minute is partitioned by flush
 * month, the reads of a run skip the months before what it has not taken
 * (shown by running them under a row limit ClickHouse enforces), retention
 * drops only settled months, and a table from before partitioning keeps
 * working and is migrated by `drawdown storage partition-usage`.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { loadCatalogFile, type Catalog } from '../catalog/model.js';
import { flushPayload, flushStampSec } from '../rater/flush.js';
import type { AggregateRow } from '../rater/aggregate.js';
import { flushBoundsColumns, flushBoundsPayload } from '../shared/clickhouse/flush-bounds.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import type { Store } from '../shared/clickhouse/store.js';
import { usageMinuteFlushColumns, usageMinutePartitioned } from '../shared/clickhouse/usage-minute.js';
import { partitionUsageMinute } from '../shared/clickhouse/usage-partitioning.js';
import { isDrawdownError } from '../shared/errors.js';
import { LiveWatermarks } from '../settlement/live-watermarks.js';
import { UsageWatch } from '../settlement/notices/usage-watch.js';
import { settle } from '../settlement/settle.js';
import { lastCompletedRun } from '../settlement/runs.js';
import { dropSettledUsage } from '../settlement/usage-retention.js';
import { readPriorUsage, readSelectedUsage } from '../settlement/usage-reader.js';
import { catalogPath, cliPath, startClickHouse, tempDir, type Backend, type ClickHouseTarget } from './harness.js';

const run = promisify(execFile);
const hour = 3600;
const day = 86_400;
const meter = 'gpt-4o.input_tokens';
/** The first run's window ends here; history lies in the months before. */
const t0 = Date.UTC(2028, 6, 1) / 1000;

/** The usage_minute DDL as drawdown created it before partitioning. */
const legacyUsageMinute = `CREATE TABLE usage_minute (
    customer String, meter String, dimensions String, minute DateTime('UTC'),
    quantity Decimal(38, 9), events UInt64, stream_partition UInt16, flush_seq UInt64, flushed_at DateTime('UTC'),
    message_seqs String DEFAULT '', hold String DEFAULT ''
  ) ENGINE = MergeTree ORDER BY (customer, meter, minute, dimensions)`;

/** A store whose SELECTs from usage_minute fail once they read more than `rows` rows (ClickHouse counts them). */
function limitedReads(store: Store, rows: number): Store {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === 'query')
        return (sql: string) =>
          target.query(
            /FROM usage_minute\b/.test(sql)
              ? `${sql} SETTINGS max_rows_to_read = ${rows}, read_overflow_mode = 'throw'`
              : sql,
          );
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

export function defineUsagePartitioning(backend: Backend): void {
  describe(`minute usage partitioned by flush month on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`usage-partitioning-${backend}`);
    let clickhouse: ClickHouseTarget;
    let catalog: Catalog;
    let store: Store;

    afterAll(async () => {
      await store?.close();
      await clickhouse?.stop();
      dir.remove();
    });

    /**
     * Each test starts from an empty database and a store of its own: whether usage_minute is partitioned is
     * asked once per store, and these tests change it.
     */
    beforeEach(async () => {
      if (store === undefined) {
        clickhouse = await startClickHouse(backend, dir.path);
        catalog = loadCatalogFile(catalogPath);
      } else {
        for (const [table] of await store.query('SELECT name FROM system.tables WHERE database = currentDatabase()'))
          await store.command(`DROP TABLE ${table}`);
        await store.close();
      }
      store = await openStore(clickhouse.url);
    });

    /** A flush as the rater writes it: its record, then its rows stamped by flushStampSec. */
    async function flush(
      partition: number,
      seq: number,
      rows: { customer: string; minuteSec: number; tokens: number }[],
      nowSec: number,
    ): Promise<void> {
      const aggregate = rows.map((r): AggregateRow => [
        r.customer,
        meter,
        '{}',
        r.minuteSec,
        BigInt(r.tokens) * 1_000_000_000n,
        1,
      ]);
      const stamp = flushStampSec(nowSec, aggregate);
      const first = Math.min(...rows.map((r) => r.minuteSec));
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(partition, seq, first, stamp));
      await store.insert('usage_minute', usageMinuteFlushColumns, flushPayload(aggregate, partition, seq, stamp));
    }

    /** `months` months of history before t0, one row per customer a month, each month flushed in that month. */
    async function history(months: number, customers: number): Promise<void> {
      for (let m = months; m >= 1; m--) {
        const minuteSec = t0 - m * 31 * day;
        await flush(
          0,
          months - m + 1,
          Array.from({ length: customers }, (_, i) => ({ customer: `h-${i}`, minuteSec, tokens: 1 })),
          minuteSec + 60,
        );
      }
    }

    it('given a fresh store, then usage_minute is partitioned by flush month and a flush is stamped no earlier than its minutes', async () => {
      await ensureSchema(store);
      expect(await usageMinutePartitioned(store)).toBe(true);
      // An event five minutes in the future (within the allowed skew) at the end of a month:
      const lastMinute = Date.UTC(2027, 0, 31, 23, 58) / 1000;
      await flush(0, 1, [{ customer: 'skew', minuteSec: lastMinute + 5 * 60, tokens: 3 }], lastMinute);
      const [[minute, flushed]] = (await store.query(
        'SELECT toUnixTimestamp(minute), toUnixTimestamp(flushed_at) FROM usage_minute',
      )) as [[string, string]];
      expect(Number(flushed)).toBeGreaterThanOrEqual(Number(minute));
      const partitions = await store.query(
        "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = 'usage_minute' AND active",
      );
      expect(partitions.map(([p]) => p)).toEqual(['202702']);
    });

    it('given months of settled history, then the next run reads only the months it has not taken', async () => {
      await ensureSchema(store);
      await history(4, 20_000);
      await settle(store, catalog, { untilSec: t0, nowSec: t0 + 60 });
      await flush(0, 4, [{ customer: 'h-1', minuteSec: t0 + 60, tokens: 7 }], t0 + 120);
      await flush(0, 5, [{ customer: 'h-2', minuteSec: t0 - 10 * day, tokens: 5 }], t0 + 180);
      const previous = (await lastCompletedRun(store))!;
      const excluding = { untilSec: previous.untilSec, watermarks: previous.watermarks };
      const selection = { untilSec: t0 + hour, watermarks: { '0': 5 }, excluding, lateBeforeSec: t0 };
      // 80,000 rows of history; the reads may touch four granules of 8,192 (ClickHouse counts whole granules).
      const limited = limitedReads(store, 4 * 8_192);
      const lines = await readSelectedUsage(limited, catalog, selection);
      expect(lines.map((l) => [l.customer, l.quantity.toString(), l.late])).toEqual([
        ['h-1', '7', false],
        ['h-2', '5', true],
      ]);
      const prior = await readPriorUsage(limited, {
        excluding,
        meters: [meter],
        monthStartsSec: [t0],
      });
      expect(prior.size).toBe(0);
      // And the limit is real: reading the whole table breaks it.
      await expect(limited.query('SELECT count() FROM usage_minute WHERE quantity > 0')).rejects.toThrow();
    });

    it('given months of history, then live watermarks and the notices usage watch read only the flushes since their last look', async () => {
      await ensureSchema(store);
      await history(4, 20_000);
      // A partition that flushed once, long ago, and has been quiet since.
      await flush(1, 1, [{ customer: 'quiet', minuteSec: t0 - 100 * day, tokens: 1 }], t0 - 100 * day + 60);
      let limit: number | undefined = undefined;
      const guarded = new Proxy(store, {
        get(target, property, receiver) {
          if (property === 'query')
            return (sql: string) => (limit === undefined ? target.query(sql) : limitedReads(target, limit).query(sql));
          const value: unknown = Reflect.get(target, property, receiver);
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
      const marks = new LiveWatermarks(guarded);
      const watch = new UsageWatch(guarded, 100);
      // The first look of each scans once.
      expect(await marks.read()).toEqual(
        new Map([
          [0, 4],
          [1, 1],
        ]),
      );
      expect(await watch.changed()).toEqual({ customers: [], truncated: false });

      // From here on, 80,000 rows of history may not be read: one granule per new part is all there is to read.
      limit = 4 * 8_192;
      expect(await marks.read()).toEqual(
        new Map([
          [0, 4],
          [1, 1],
        ]),
      );
      await flush(0, 5, [{ customer: 'new-a', minuteSec: t0 + 60, tokens: 2 }], t0 + 120);
      // A record of a flush that never landed (its rater died after writing it) changes no watermark.
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(1, 2, t0 + 60, t0 + 130));
      expect(await marks.read()).toEqual(
        new Map([
          [0, 5],
          [1, 1],
        ]),
      );
      expect(await watch.changed()).toEqual({ customers: ['new-a'], truncated: false });
      // A partition never seen before is found through its records too.
      await flush(2, 1, [{ customer: 'new-b', minuteSec: t0 + 60, tokens: 3 }], t0 + 180);
      await flush(1, 3, [{ customer: 'quiet', minuteSec: t0 + 120, tokens: 4 }], t0 + 190);
      expect(await marks.read()).toEqual(
        new Map([
          [0, 5],
          [1, 3],
          [2, 1],
        ]),
      );
      // And the limit is real: reading the whole table breaks it.
      await expect(guarded.query('SELECT count() FROM usage_minute WHERE quantity > 0')).rejects.toThrow();
    });

    it('given a table from before partitioning, then the same reads still find everything, and the migration partitions it with nothing lost', async () => {
      await store.command(legacyUsageMinute);
      await ensureSchema(store);
      expect(await usageMinutePartitioned(store)).toBe(false);
      await history(4, 20_000);
      await settle(store, catalog, { untilSec: t0, nowSec: t0 + 60 });
      // An old rater stamped its clock: a future-skewed minute after its flush's stamp.
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(0, 4, t0 + 300, t0 + 60));
      await store.insert(
        'usage_minute',
        usageMinuteFlushColumns,
        flushPayload([['h-3', meter, '{}', t0 + 300, 4_000_000_000n, 1]], 0, 4, t0 + 60),
      );
      const previous = (await lastCompletedRun(store))!;
      const excluding = { untilSec: previous.untilSec, watermarks: previous.watermarks };
      const selection = { untilSec: t0 + hour, watermarks: { '0': 4 }, excluding, lateBeforeSec: t0 };
      // Unpartitioned, the read scans: the row limit that a partitioned table meets is broken here.
      await expect(readSelectedUsage(limitedReads(store, 4 * 8_192), catalog, selection)).rejects.toThrow();
      const lines = await readSelectedUsage(store, catalog, selection);
      expect(lines.map((l) => [l.customer, l.quantity.toString()])).toEqual([['h-3', '4']]);
      // Retention leaves a table it cannot drop by month alone.
      expect((await dropSettledUsage(store, previous, 2)).dropped).toEqual([]);

      const before = await store.query('SELECT count(), toString(sum(quantity)), sum(events) FROM usage_minute');
      const outcome = await partitionUsageMinute(store);
      expect(outcome).toEqual({ partitioned: 'now', rows: 80_001 });
      // A store opened after the migration (each asks once whether the table is partitioned).
      await store.close();
      store = await openStore(clickhouse.url);
      expect(await usageMinutePartitioned(store)).toBe(true);
      expect(await store.query('SELECT count(), toString(sum(quantity)), sum(events) FROM usage_minute')).toEqual(
        before,
      );
      expect(await store.query('SELECT count() FROM usage_minute WHERE flushed_at < minute')).toEqual([['0']]);
      expect(await store.query('SELECT count() FROM usage_minute_unpartitioned')).toEqual([['80001']]);
      expect(
        (await readSelectedUsage(limitedReads(store, 4 * 8_192), catalog, selection)).map((l) => l.customer),
      ).toEqual(['h-3']);
      expect(await partitionUsageMinute(store)).toEqual({ partitioned: 'already', rows: 0 });
    });

    it('given a rater flush during the copy, then the migration is refused and nothing changes', async () => {
      await store.command(legacyUsageMinute);
      await ensureSchema(store);
      await history(1, 100);
      // A real write lands right after the copy's INSERT … SELECT, as a running rater's would.
      const writing = new Proxy(store, {
        get(target, property, receiver) {
          if (property === 'command')
            return async (sql: string) => {
              await target.command(sql);
              if (sql.startsWith('INSERT INTO usage_minute_partitioned'))
                await target.insert(
                  'usage_minute',
                  usageMinuteFlushColumns,
                  flushPayload([['late', meter, '{}', t0, 1_000_000_000n, 1]], 0, 2, t0),
                );
            };
          const value: unknown = Reflect.get(target, property, receiver);
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
      const refused = await partitionUsageMinute(writing).catch((e: unknown) => e);
      expect(isDrawdownError(refused) && refused.code).toBe('usage_migration_refused');
      const [[ddl]] = (await store.query('SHOW CREATE TABLE usage_minute')) as [[string]];
      expect(ddl).not.toMatch(/PARTITION BY/);
      expect(
        await store.query(
          "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'usage_minute_%'",
        ),
      ).toEqual([['0']]);
      expect(await store.query('SELECT count() FROM usage_minute')).toEqual([['101']]);
    });

    it('given a migration cut between its renames, then the next start finishes it', async () => {
      await ensureSchema(store);
      await flush(0, 1, [{ customer: 'cut', minuteSec: t0, tokens: 2 }], t0);
      await store.command('RENAME TABLE usage_minute TO usage_minute_partitioned');
      await ensureSchema(store);
      expect(await store.query('SELECT customer FROM usage_minute')).toEqual([['cut']]);
    });

    it("given old settled months, then retention drops them, and keeps a month with unsettled usage or a partition's newest flush", async () => {
      await ensureSchema(store);
      // Partition 0 flushed 20, 19 and 18 months before t0; partition 1 only 18 months before (its newest flush).
      const monthAgo = (m: number): number => Date.UTC(2028, 6 - m, 10) / 1000;
      await flush(0, 1, [{ customer: 'r-1', minuteSec: monthAgo(20), tokens: 1 }], monthAgo(20));
      await flush(0, 2, [{ customer: 'r-1', minuteSec: monthAgo(19), tokens: 1 }], monthAgo(19));
      await flush(1, 1, [{ customer: 'r-2', minuteSec: monthAgo(18), tokens: 1 }], monthAgo(18));
      await flush(0, 3, [{ customer: 'r-1', minuteSec: monthAgo(1), tokens: 1 }], monthAgo(1));
      // This run keeps every month (100 years), so the call below shows each rule.
      const first = await settle(store, catalog, { untilSec: t0, nowSec: t0 + 60, usageRetentionMonths: 1200 });
      expect(first.usageMonthsDropped).toBeUndefined();
      const balance = async (): Promise<string[][]> =>
        store.query(
          "SELECT customer, toString(sum(amount)) FROM ledger_entries FINAL WHERE customer IN ('r-1', 'r-2') GROUP BY customer ORDER BY customer",
        );
      const charged = await balance();
      // An old row no run has taken yet (committed after the run's snapshot, stamped long ago by a stuck flush):
      await flush(0, 4, [{ customer: 'r-1', minuteSec: monthAgo(19) + 60, tokens: 5 }], monthAgo(19) + 60);

      const outcome = await dropSettledUsage(store, (await lastCompletedRun(store))!, 13);
      const month = (m: number): number => {
        const d = new Date(monthAgo(m) * 1000);
        return d.getUTCFullYear() * 100 + d.getUTCMonth() + 1;
      };
      expect(outcome).toEqual({ dropped: [month(20)], kept: [month(19), month(18)] });
      expect(await store.query("SELECT count() FROM usage_minute WHERE customer = 'r-1'")).toEqual([['3']]);
      // The ledger is untouched, and the next run bills the late row exactly once.
      expect(await balance()).toEqual(charged);
      // The late flush is partition 0's newest until this one:
      await flush(0, 5, [{ customer: 'r-1', minuteSec: t0 + 60, tokens: 2 }], t0 + 120);
      const next = await settle(store, catalog, { untilSec: t0 + hour, nowSec: t0 + hour + 60 });
      expect(next.customers['r-1']!.rated.map((r) => r.quantity).sort()).toEqual(['2', '5']);
      // Once settled, the run's own retention (13 months by default) drops its month; partition 1's newest
      // flush keeps month 18.
      expect(next.usageMonthsDropped).toEqual([month(19)]);
      expect(await dropSettledUsage(store, (await lastCompletedRun(store))!, 13)).toEqual({
        dropped: [],
        kept: [month(18)],
      });
      // Nothing inside the retention is dropped.
      expect((await dropSettledUsage(store, (await lastCompletedRun(store))!, 24)).dropped).toEqual([]);
    });

    if (backend === 'chdb')
      it('given `drawdown storage partition-usage` on a table from before, then it partitions it and says so in JSON', async () => {
        await store.command(legacyUsageMinute);
        await ensureSchema(store);
        await history(1, 10);
        const url = clickhouse.url;
        await store.close();
        const { stdout } = await run('node', [cliPath, 'storage', 'partition-usage', '--clickhouse-url', url], {
          env: { ...process.env, DRAWDOWN_LOG_LEVEL: 'info' },
        });
        const lines = stdout
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { msg: string; rows?: number });
        expect(lines.at(-1)).toMatchObject({ partitioned: 'now', rows: 10 });
        store = await openStore(url);
        expect(await usageMinutePartitioned(store)).toBe(true);
      });
  });
}
