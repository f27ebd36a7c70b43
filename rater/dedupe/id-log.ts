/**
 * The remembered event ids, kept in ClickHouse so a restarted rater forgets
 * nothing inside the dedupe window. A flush writes the fingerprints of the
 * ids it counted BEFORE its usage rows, both under the flush's label:
 *
 *   INSERT dedupe_ids (label F) ─▶ INSERT usage_minute (label F, with its record) ─▶ ack
 *
 *   crash before the ids insert: nothing written; the batches are redelivered.
 *   crash between the two: ids rows labelled F, and no usage row labelled F.
 *     A rebuild reads only ids of labels that usage_minute holds, and a
 *     restarted rater never labels a flush at or below the highest label in
 *     dedupe_ids, so those rows are never read.
 *   crash after the usage insert: both committed under F.
 *
 * Rows hold up to `idsPerRow` fingerprints as base64 of 12 bytes each (little
 * endian, three 32-bit words), so a flush is a handful of rows whatever its
 * size, and TabSeparated needs no escaping. The table is partitioned by day
 * so that retention is a cheap DROP PARTITION.
 */
import { dropPartitionsBelow } from '../../shared/clickhouse/partitions.js';
import type { Store } from '../../shared/clickhouse/store.js';
import { dedupeIdsColumns } from '../../shared/clickhouse/schema.js';
import { sqlUInt } from '../../shared/sql.js';
import { encodeTsv, tsvDateTime } from '../../shared/tsv.js';

const bytesPerId = 12;
/** ~1 MiB of base64 per row. */
export const idsPerRow = 65_536;
/** Rows of (flush_seq, ids) looked at when rebuilding: bounds the rebuild's first query. */
const rebuildRowsMax = 200_000;

/** The TSV for one flush's ids; `chunks` are fingerprint arrays (3 words per id) in the order they were counted. */
export function idsPayload(
  chunks: readonly Uint32Array[],
  partition: number,
  flushSeq: number,
  writtenAtSec: number,
): string {
  let words = 0;
  for (const c of chunks) words += c.length;
  if (words === 0) return '';
  const all = Buffer.allocUnsafe(words * 4);
  let at = 0;
  for (const c of chunks) {
    all.set(new Uint8Array(c.buffer, c.byteOffset, c.byteLength), at);
    at += c.byteLength;
  }
  const ids = words / 3;
  const rows: string[][] = [];
  for (let first = 0, chunk = 0; first < ids; first += idsPerRow, chunk++) {
    const count = Math.min(idsPerRow, ids - first);
    rows.push([
      String(partition),
      String(flushSeq),
      String(chunk),
      tsvDateTime(writtenAtSec),
      String(count),
      all.toString('base64', first * bytesPerId, (first + count) * bytesPerId),
    ]);
  }
  return encodeTsv(rows);
}

export async function writeIds(store: Store, payload: string): Promise<void> {
  if (payload !== '') await store.insert('dedupe_ids', dedupeIdsColumns, payload);
}

function decodeIds(base64: string): Uint32Array {
  const bytes = Buffer.from(base64, 'base64');
  // Copied into an aligned buffer of our own: Buffer.from may hand back a pooled, unaligned slice.
  const words = new Uint32Array(bytes.length / 4);
  new Uint8Array(words.buffer).set(bytes);
  return words;
}

/**
 * The fingerprints of at least the last `idsWanted` ids a partition committed
 * at or below `watermark`, oldest first (fewer if fewer were kept). Only ids
 * of committed flushes count: rows whose label no usage row carries were
 * written by a flush that crashed before its usage insert.
 */
export async function readRecentIds(
  store: Store,
  partition: number,
  watermark: number,
  idsWanted: number,
): Promise<Uint32Array[]> {
  if (watermark === 0 || idsWanted === 0) return [];
  const p = sqlUInt(partition);
  const committed = (from: number): string =>
    `flush_seq IN (SELECT DISTINCT flush_seq FROM usage_minute WHERE stream_partition = ${p} AND flush_seq >= ${sqlUInt(from)} AND flush_seq <= ${sqlUInt(watermark)})`;
  const counts = await store.query(
    `SELECT flush_seq, sum(ids) FROM dedupe_ids WHERE stream_partition = ${p} AND flush_seq <= ${sqlUInt(watermark)} AND ${committed(0)}
     GROUP BY flush_seq ORDER BY flush_seq DESC LIMIT ${sqlUInt(rebuildRowsMax)}`,
  );
  if (counts.length === 0) return [];
  let total = 0;
  let fromSeq = Number(counts[counts.length - 1]![0]);
  for (const [seq, ids] of counts) {
    total += Number(ids);
    if (total >= idsWanted) {
      fromSeq = Number(seq);
      break;
    }
  }
  // A retried insert may have written a flush's rows twice; repeats are harmless to a set.
  const rows = await store.query(
    `SELECT hashes FROM dedupe_ids WHERE stream_partition = ${p} AND flush_seq >= ${sqlUInt(fromSeq)} AND flush_seq <= ${sqlUInt(watermark)} AND ${committed(fromSeq)}
     ORDER BY flush_seq, chunk`,
  );
  return rows.map(([hashes]) => decodeIds(hashes!));
}

/** The highest label any flush of the partition wrote ids under, committed or not (0 if none). */
export async function highestIdsLabel(store: Store, partition: number): Promise<number> {
  const rows = await store.query(
    `SELECT max(flush_seq) FROM dedupe_ids WHERE stream_partition = ${sqlUInt(partition)}`,
  );
  return Number(rows[0]?.[0] ?? 0);
}

/** Drops whole days of remembered ids older than `retentionDays`; returns how many days were dropped. */
export async function dropExpiredIds(store: Store, retentionDays: number, nowSec: number): Promise<number> {
  const cutoff = Number(
    new Date((nowSec - retentionDays * 86_400) * 1000).toISOString().slice(0, 10).replaceAll('-', ''),
  );
  return dropPartitionsBelow(store, 'dedupe_ids', cutoff);
}
