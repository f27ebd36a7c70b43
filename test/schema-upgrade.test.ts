/**
 * Upgrading a store created before flushes recorded what they counted:
 * ensureSchema adds usage_minute.message_seqs (ALTER … ADD COLUMN, on
 * ClickHouse 18.16 and on chDB), old rows read as '' and keep their usage,
 * and the rater's record reader treats their flushes as legacy.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { readCountedRecord } from '../rater/counted-log.js';
import { entriesOf } from '../settlement/ledger.js';
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

const oldLedger = `CREATE TABLE ledger_entries (
    entry_id String, customer String, unit String, kind String, amount Decimal(38, 9), effective_at DateTime('UTC'),
    posted_at DateTime('UTC'), run_id String, meter String, dimensions String, quantity Decimal(38, 9),
    rate_version String, source String, block_id String, expires_at DateTime('UTC')
  ) ENGINE = ReplacingMergeTree ORDER BY (customer, unit, entry_id)`;

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

    it('given a ledger without grant sources, then ensureSchema adds them and an old grant reads as a plan grant', async () => {
      clickhouse ??= await startClickHouse(backend, dir.path);
      const store = await openTestStore(clickhouse.url);
      try {
        await store.command('DROP TABLE IF EXISTS ledger_entries');
        await store.command(oldLedger);
        await store.command(
          "INSERT INTO ledger_entries VALUES ('grant:1', 'acme', 'credits', 'grant', toDecimal128('10', 9), toDateTime('2026-11-01 00:00:00', 'UTC'), toDateTime('2026-11-01 00:00:05', 'UTC'), 'run:1', '', '', toDecimal128('0', 9), '', 'monthly grant', 'sub:g:v1:p0', toDateTime(0, 'UTC'))",
        );
        await ensureSchema(store);
        await ensureSchema(store);
        const [entry] = await entriesOf(store, ['acme'], 2_000_000_000);
        expect([entry?.kind, entry?.amount.toFixed(), entry?.grantSource, entry?.grantOrigin]).toEqual([
          'grant',
          '10',
          'plan',
          undefined,
        ]);
      } finally {
        await store.close();
      }
    });
  });
}
