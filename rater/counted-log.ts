/**
 * The exact record of which stream messages a partition has counted.
 *
 * A message's stream sequence says nothing about whether it was counted: a
 * partition's sequences interleave with other partitions', and a delivery
 * lost around a nats-server restart leaves a hole below messages that were
 * counted after it (docs/exactly-once.md §2, "gaps"). So every flush records
 * the sequences of the messages it took, in the same INSERT as its usage
 * rows (on the first row, `message_seqs`): the record and the counts appear
 * together or not at all. A message is acked, or skipped on redelivery, only
 * if a committed flush names it.
 *
 * The text is sorted sequences as decimal numbers and ranges, comma
 * separated ("1041-1060,1063,1070-1075"): TSV-safe, and compact when a
 * partition owns runs of the stream.
 */
import type { Store } from '../shared/clickhouse/store.js';
import { sqlUInt } from '../shared/sql.js';

export function encodeSeqs(seqs: readonly number[]): string {
  const sorted = [...seqs].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    const start = sorted[i]!;
    let end = start;
    while (i + 1 < sorted.length && sorted[i + 1]! <= end + 1) end = sorted[++i]!;
    i++;
    parts.push(end === start ? String(start) : `${start}-${end}`);
  }
  return parts.join(',');
}

/** Calls `add` for every sequence of an encoded list; throws on text encodeSeqs never writes. */
export function decodeSeqs(text: string, add: (seq: number) => void): void {
  if (text === '') return;
  for (const part of text.split(',')) {
    const dash = part.indexOf('-');
    const start = Number(dash < 0 ? part : part.slice(0, dash));
    const end = dash < 0 ? start : Number(part.slice(dash + 1));
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 1 || end < start)
      throw new Error(`malformed message_seqs entry ${JSON.stringify(part)}`);
    for (let seq = start; seq <= end; seq++) add(seq);
  }
}

export interface CountedRecord {
  /** Sequences at or above the bound asked for that committed flushes counted. */
  counted: Set<number>;
  /**
   * The highest label of a flush written before flushes carried a record
   * (drawdown before the fix of issue 16), or 0. Such flushes' labels were
   * their highest message sequence, and what they covered is taken as
   * counted, as it was then.
   */
  legacyFloor: number;
}

/**
 * The record of every committed flush of `partition` that may name a message
 * at or above `lowestSeq`. A flush's label is at least its highest message
 * sequence, so flushes labelled below `lowestSeq` name none of them.
 */
export async function readCountedRecord(store: Store, partition: number, lowestSeq: number): Promise<CountedRecord> {
  const rows = await store.query(
    `SELECT flush_seq, max(message_seqs) FROM usage_minute WHERE stream_partition = ${sqlUInt(partition)} AND flush_seq >= ${sqlUInt(lowestSeq)} GROUP BY flush_seq`,
  );
  const counted = new Set<number>();
  let legacyFloor = 0;
  for (const [label, seqs] of rows) {
    if (seqs === '') legacyFloor = Math.max(legacyFloor, Number(label));
    else decodeSeqs(seqs!, (seq) => counted.add(seq));
  }
  return { counted, legacyFloor };
}
