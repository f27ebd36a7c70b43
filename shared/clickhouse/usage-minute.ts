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

/**
 * Usage aggregated per (customer, meter, dimensions, minute) by the rater.
 * Each row also names the stream partition and the label of the flush that
 * wrote it (strictly increasing per partition, at least the highest stream
 * sequence the flush counted): max(flush_seq) per partition IS the rater's
 * committed watermark (docs/exactly-once.md). The first row of each flush
 * also lists the stream sequences of the messages the flush counted
 * (`message_seqs`, rater/counted-log.ts); the others leave it empty.
 * `hold` names the credit hold the row's usage spent ('' for none): usage
 * naming a hold gets rows of its own, which sum like any other. No
 * PARTITION BY, so one INSERT writes one part and commits atomically.
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
  ) ENGINE = MergeTree ORDER BY (customer, meter, minute, dimensions)`;

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
