/**
 * Upgrading a store created before flushes recorded what they counted:
 * ensureSchema adds usage_minute.message_seqs (ALTER … ADD COLUMN, on
 * ClickHouse 18.16 and on chDB), old rows read as '' and keep their usage,
 * and the rater's record reader treats their flushes as legacy.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { readCountedRecord } from '../rater/counted-log.js';
import {
  openTestStore,
  startClickHouse,
  tempDir,
  usageTotals,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

const oldUsageMinute = `CREATE TABLE usage_minute (
    customer String, meter String, dimensions String, minute DateTime('UTC'), quantity Decimal(38, 9), events UInt64,
    stream_partition UInt16, flush_seq UInt64, flushed_at DateTime('UTC')
  ) ENGINE = MergeTree ORDER BY (customer, meter, minute, dimensions)`;

for (const backend of ['chdb', 'server'] as Backend[]) {
  describe(`schema upgrade (${backend})`, () => {
    const dir = tempDir(`schema-upgrade-${backend}`);
    let clickhouse: ClickHouseTarget | undefined;
    afterAll(async () => {
      await clickhouse?.stop();
      dir.remove();
    });

    it('given usage_minute without message_seqs, then ensureSchema adds it, old usage stays, and old flushes count as legacy', async () => {
      clickhouse = await startClickHouse(backend, dir.path);
      const store = await openTestStore(clickhouse.url);
      try {
        await store.command(oldUsageMinute);
        await store.command(
          "INSERT INTO usage_minute VALUES ('acme', 'tokens', '{}', toDateTime('2026-11-01 00:00:00', 'UTC'), toDecimal128('2.5', 9), 3, 0, 42, toDateTime('2026-11-01 00:00:05', 'UTC'))",
        );
        await ensureSchema(store);
        // Twice: the second start finds the column and changes nothing.
        await ensureSchema(store);
        expect(await usageTotals(store)).toEqual(new Map([['acme|tokens|{}', '2.5|3']]));
        const [[seqs]] = (await store.query('SELECT message_seqs FROM usage_minute')) as [[string]];
        expect(seqs).toBe('');
        expect(await readCountedRecord(store, 0, 1)).toEqual({ counted: new Set(), legacyFloor: 42 });
      } finally {
        await store.close();
      }
    });
  });
}
