/**
 * The rater's committed watermark lives in ClickHouse itself: every aggregate
 * row carries its partition and the last stream sequence of the flush that
 * wrote it, so max(flush_seq) per partition is exactly what ClickHouse holds.
 * A flush is one INSERT, one part: its rows and its watermark appear together
 * or not at all.
 */
import type { Store } from '../shared/clickhouse/store.js';
import { sqlUInt } from '../shared/sql.js';

export async function readWatermarks(store: Store): Promise<Map<number, number>> {
  const rows = await store.query('SELECT stream_partition, max(flush_seq) FROM usage_minute GROUP BY stream_partition');
  const out = new Map<number, number>();
  for (const [partition, seq] of rows) out.set(Number(partition), Number(seq));
  return out;
}

export async function readWatermark(store: Store, partition: number): Promise<number> {
  const rows = await store.query(`SELECT max(flush_seq) FROM usage_minute WHERE stream_partition = ${sqlUInt(partition)}`);
  return Number(rows[0]?.[0] ?? 0);
}
