/**
 * The usage_minute table's contract, used by the rater (which writes it) and
 * settlement (which reads it): its DDL, its columns, and its watermark.
 *
 * The rater's committed watermark lives in ClickHouse itself: every
 * aggregate row carries its partition and the label of the flush that wrote
 * it, so max(flush_seq) per partition is exactly what ClickHouse holds. A
 * flush is one INSERT, one part: its rows, its watermark and its record of
 * counted messages appear together or not at all (docs/exactly-once.md).
 */
import type { Store } from './store.js';
import { sqlUInt } from '../sql.js';

const partitionedByStore = new WeakMap<Store, Promise<boolean>>();

/** Whether `table` (usage_minute or its copy) has the flush-month layout, asked now. */
export async function partitionedByFlushMonth(store: Store, table: 'usage_minute'): Promise<boolean> {
  const ddl = (await store.query(`SHOW CREATE TABLE ${table}`))[0]?.[0] ?? '';
  return /PARTITION BY toYYYYMM\(flushed_at\)/i.test(ddl);
}

/**
 * Whether usage_minute is partitioned by flush month, so reads may name a
 * `flushed_at` floor: asked once per store (the layout changes only through
 * `drawdown storage partition-usage`, with every process stopped). In a table
 * from before, rows were stamped with the flush's clock alone, which may be
 * earlier than a future-skewed minute: no such floor is safe there.
 */
export function usageMinutePartitioned(store: Store): Promise<boolean> {
  let known = partitionedByStore.get(store);
  if (known === undefined) {
    known = partitionedByFlushMonth(store, 'usage_minute');
    // A failed question is asked again next time, not remembered.
    known.catch(() => partitionedByStore.delete(store));
    partitionedByStore.set(store, known);
  }
  return known;
}

export async function readWatermarks(store: Store): Promise<Map<number, number>> {
  const rows = await store.query('SELECT stream_partition, max(flush_seq) FROM usage_minute GROUP BY stream_partition');
  const out = new Map<number, number>();
  for (const [partition, seq] of rows) out.set(Number(partition), Number(seq));
  return out;
}

export async function readWatermark(store: Store, partition: number): Promise<number> {
  const rows = await store.query(
    `SELECT max(flush_seq) FROM usage_minute WHERE stream_partition = ${sqlUInt(partition)}`,
  );
  return Number(rows[0]?.[0] ?? 0);
}

/** A partition's watermark and the latest flushed_at it stamped (0, 0 for a partition with no flush yet). */
export async function readPartitionMarks(
  store: Store,
  partition: number,
): Promise<{ watermark: number; stampSec: number }> {
  const rows = await store.query(
    `SELECT max(flush_seq), toUnixTimestamp(max(flushed_at)) FROM usage_minute WHERE stream_partition = ${sqlUInt(partition)}`,
  );
  return { watermark: Number(rows[0]?.[0] ?? 0), stampSec: Number(rows[0]?.[1] ?? 0) };
}

/**
 * Usage aggregated per (customer, meter, dimensions, minute) by the rater.
 * Each row also names the stream partition and the label of the flush that
 * wrote it (strictly increasing per partition, at least the highest stream
 * sequence the flush counted): max(flush_seq) per partition IS the rater's
 * committed watermark (docs/exactly-once.md). The first row of each flush
 * also lists the stream sequences of the messages the flush counted
 * (`message_seqs`, rater/counted-log.ts); the others leave it empty.
 * `hold` names the credit hold the row's usage spent ('' for none): usage
 * naming a hold gets rows of its own, which sum like any other.
 *
 * Partitioned by the month of `flushed_at`, the one stamp every row of a
 * flush shares: one INSERT still writes one part and commits atomically
 * (partitioning by the rows' own minutes would split a flush across months
 * into parts that commit one by one). The rater stamps a flush no earlier
 * than its latest minute (rater/flush.ts flushStampSec), so `flushed_at >=
 * minute` holds for every row, and a read of minutes from T on, or of flushes
 * since T, skips every month before T whole: settlement's cost stays that of
 * the months it reads, not of the deployment's age (issue 17 item 5).
 * Tables created before this were unpartitioned; they keep working, read
 * whole, until `drawdown storage partition-usage` copies them.
 */
export const usageMinuteTable = `CREATE TABLE IF NOT EXISTS usage_minute (
    customer String,
    meter String,
    dimensions String,
    minute DateTime('UTC'),
    quantity Decimal(38, 9),
    events UInt64,
    stream_partition UInt16,
    flush_seq UInt64,
    flushed_at DateTime('UTC'),
    message_seqs String DEFAULT '',
    hold String DEFAULT ''
  ) ENGINE = MergeTree PARTITION BY toYYYYMM(flushed_at) ORDER BY (customer, meter, minute, dimensions)`;

export const usageMinuteColumns = [
  'customer',
  'meter',
  'dimensions',
  'minute',
  'quantity',
  'events',
  'stream_partition',
  'flush_seq',
  'flushed_at',
] as const;
/** What a rater flush writes: the usage columns plus the record of the messages it counted. */
export const usageMinuteFlushColumns = [...usageMinuteColumns, 'message_seqs', 'hold'] as const;
