/**
 * Settlement reads only what it has not taken (issue 17 item 5), defined once
 * for both back ends: the floor below which no untaken usage lies comes from
 * the rater's flush records, late flushes lower it, and wherever the records
 * cannot vouch for a flush the read falls back to a scan, so no usage is
 * ever skipped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCatalogFile, type Catalog } from '../catalog/model.js';
import { flushPayload } from '../rater/flush.js';
import {
  dropOldFlushBounds,
  flushBoundsColumns,
  flushBoundsPayload,
  untakenFloor,
} from '../shared/clickhouse/flush-bounds.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import type { Store } from '../shared/clickhouse/store.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import { settle } from '../settlement/settle.js';
import { catalogPath, startClickHouse, tempDir, type Backend, type ClickHouseTarget } from './harness.js';

const hour = 3600;
const t0 = Date.UTC(2027, 5, 1) / 1000;

export function defineFlushBounds(backend: Backend): void {
  describe(`settlement reads from the flush records' floor on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`flush-bounds-${backend}`);
    let clickhouse: ClickHouseTarget;
    let store: Store;
    let catalog: Catalog;

    beforeAll(async () => {
      clickhouse = await startClickHouse(backend, dir.path);
      store = await openStore(clickhouse.url);
      await ensureSchema(store);
      catalog = loadCatalogFile(catalogPath);
    });

    afterAll(async () => {
      await store?.close();
      await clickhouse?.stop();
      dir.remove();
    });

    /** A flush as the rater writes it: its record first (unless `recorded` is false), then its rows. */
    async function flush(
      partition: number,
      seq: number,
      rows: { customer: string; minuteSec: number; tokens: number }[],
      recorded = true,
    ): Promise<void> {
      const first = Math.min(...rows.map((r) => r.minuteSec));
      if (recorded)
        await store.insert(
          'flush_bounds',
          flushBoundsColumns,
          flushBoundsPayload(partition, seq, first, t0 + 100 * hour),
        );
      const aggregate = rows.map(
        (r) =>
          [r.customer, 'gpt-4o.input_tokens', '{}', r.minuteSec, BigInt(r.tokens) * 1_000_000_000n, 1] as [
            string,
            string,
            string,
            number,
            bigint,
            number,
          ],
      );
      await store.insert(
        'usage_minute',
        usageMinuteFlushColumns,
        flushPayload(aggregate, partition, seq, t0 + 100 * hour),
      );
    }

    const tokensOf = (report: Awaited<ReturnType<typeof settle>>, customer: string): string[] =>
      (report.customers[customer]?.rated ?? []).map((r) => r.quantity);

    it('given no earlier run, a partition it did not see, or a flush without a record, then there is no floor', async () => {
      const excluding = { untilSec: t0, watermarks: { '0': 10 } };
      expect(await untakenFloor(store, undefined, { '0': 10 })).toBeUndefined();
      expect(await untakenFloor(store, excluding, { '0': 10, '1': 3 })).toBeUndefined();
      // Partition 0 moved past 10, and no record at or below 10 proves the new flushes were all recorded.
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(0, 12, t0 - hour, t0));
      expect(await untakenFloor(store, excluding, { '0': 12 })).toBeUndefined();
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(0, 10, t0 - 5 * hour, t0));
      expect(await untakenFloor(store, excluding, { '0': 12 })).toEqual({ minuteSec: t0 - hour, flushedSec: t0 });
      // Nothing new: the previous window's end; a new flush below it lowers the floor, one after it does not.
      expect(await untakenFloor(store, excluding, { '0': 10 })).toEqual({ minuteSec: t0, flushedSec: t0 });
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(0, 13, t0 + hour, t0));
      expect(await untakenFloor(store, excluding, { '0': 13 })).toEqual({ minuteSec: t0 - hour, flushedSec: t0 });
      expect(await untakenFloor(store, { untilSec: t0, watermarks: { '0': 12 } }, { '0': 13 })).toEqual({
        minuteSec: t0,
        flushedSec: t0,
      });
    });

    it('given late usage committed after a run, then the next run bills it whether or not its flush was recorded', async () => {
      // Given a run that took hour 0 of day A from partitions 5 and 6,
      const a = t0 + 48 * hour;
      await flush(5, 1, [{ customer: 'fb-1', minuteSec: a, tokens: 100 }]);
      await flush(6, 1, [{ customer: 'fb-2', minuteSec: a, tokens: 100 }]);
      const first = await settle(store, catalog, { untilSec: a + hour, nowSec: a + 2 * hour });
      expect(tokensOf(first, 'fb-1')).toEqual(['100']);

      // when a flush recorded on partition 5 and an unrecorded one on partition 6 (a rater from before the records)
      // commit usage for minutes the run had settled, and new usage follows,
      await flush(5, 2, [
        { customer: 'fb-1', minuteSec: a + 60, tokens: 7 },
        { customer: 'fb-1', minuteSec: a + hour + 60, tokens: 1 },
      ]);
      await flush(6, 2, [{ customer: 'fb-2', minuteSec: a + 120, tokens: 9 }], false);
      const second = await settle(store, catalog, { untilSec: a + 2 * hour, nowSec: a + 3 * hour });

      // then the next run bills every late line and the new one.
      expect(tokensOf(second, 'fb-1').sort()).toEqual(['1', '7']);
      expect(tokensOf(second, 'fb-2')).toEqual(['9']);
      expect(second.customers['fb-1']!.rated.find((r) => r.quantity === '7')!.late).toBe(true);

      // And with every flush recorded, a late flush still lowers the floor enough to be read.
      await flush(5, 3, [{ customer: 'fb-1', minuteSec: a + 180, tokens: 3 }]);
      await flush(6, 3, [{ customer: 'fb-2', minuteSec: a + 2 * hour + 60, tokens: 4 }]);
      const third = await settle(store, catalog, { untilSec: a + 3 * hour, nowSec: a + 4 * hour });
      expect(tokensOf(third, 'fb-1')).toEqual(['3']);
      expect(tokensOf(third, 'fb-2')).toEqual(['4']);
    });

    it('given records written months before the newest run, then retention drops them and the floor falls back to a scan', async () => {
      const old = t0 - 120 * 24 * hour;
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(9, 1, old, old));
      await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(9, 2, t0, t0));
      const excluding = { untilSec: t0, watermarks: { '9': 1 } };
      expect(await untakenFloor(store, excluding, { '9': 2 })).toEqual({ minuteSec: t0, flushedSec: t0 });
      // Four months back is past the 62 days kept: its month goes, this month's record stays.
      expect(await dropOldFlushBounds(store, t0)).toBeGreaterThanOrEqual(1);
      const left = await store.query('SELECT flush_seq FROM flush_bounds WHERE stream_partition = 9');
      expect(left.map(([seq]) => seq)).toEqual(['2']);
      expect(await untakenFloor(store, excluding, { '9': 2 })).toBeUndefined();
    });
  });
}
