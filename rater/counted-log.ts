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
 * A sequence alone does not name a message either: on a JetStream cluster
 * losing nodes (nats-server 2.9.10, R3) replicas can come to hold different
 * messages under one sequence, and a consumer whose leader moves delivers
 * first one, then the other (issue 16). So each message is recorded with a
 * fingerprint of its bytes, and a delivery is taken as counted only if a
 * record names its sequence with its fingerprint. A different message under
 * a counted sequence is counted; if it repeats events counted before (the
 * same batch stored under two sequences), event-id dedupe drops them.
 *
 * The text is comma separated, sorted by sequence: "1041:3f2a…,1045:9c0d…"
 * (sequence, colon, 16 hex digits of the message's SHA-256). Records written
 * before fingerprints (issue 16's first fix) are sequences and ranges
 * ("1041-1060,1063"), and name whatever message holds those sequences.
 * Both are TSV-safe.
 */
import { createHash } from 'node:crypto';
import type { Store } from '../shared/clickhouse/store.js';
import { sqlUInt } from '../shared/sql.js';

/** 16 hex digits of the SHA-256 of a message's bytes: what tells two messages under one sequence apart. */
export function messageFingerprint(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex').slice(0, 16);
}

export interface CountedMessage {
  seq: number;
  fingerprint: string;
}

const fingerprintPattern = /^[0-9a-f]{16}$/;

/** The record of a flush: every message as "seq:fingerprint", sorted by sequence. */
export function encodeCounted(messages: readonly CountedMessage[]): string {
  return [...messages]
    .sort((a, b) => a.seq - b.seq || (a.fingerprint < b.fingerprint ? -1 : a.fingerprint > b.fingerprint ? 1 : 0))
    .map((m) => `${m.seq}:${m.fingerprint}`)
    .join(',');
}

/**
 * Calls `add` for every message of a record, with its fingerprint, or with
 * undefined for a record written without fingerprints (any message under
 * that sequence); throws on text no rater writes.
 */
export function decodeCounted(text: string, add: (seq: number, fingerprint: string | undefined) => void): void {
  if (text === '') return;
  for (const part of text.split(',')) {
    const colon = part.indexOf(':');
    if (colon < 0) {
      decodeSeqs(part, (seq) => add(seq, undefined));
      continue;
    }
    const seq = Number(part.slice(0, colon));
    const fingerprint = part.slice(colon + 1);
    if (!Number.isSafeInteger(seq) || seq < 1 || !fingerprintPattern.test(fingerprint))
      throw new Error(`malformed message_seqs entry ${JSON.stringify(part)}`);
    add(seq, fingerprint);
  }
}

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
  /** Sequences at or above the bound asked for that committed flushes counted (with any fingerprint). */
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
export async function readCountedRecord(
  store: Store,
  partition: number,
  lowestSeq: number,
  /**
   * Filled, when given, with the fingerprints each counted sequence was
   * counted with; a sequence a record names without one (written before
   * fingerprints) has no entry: any message under it is counted.
   */
  fingerprints?: Map<number, Set<string>>,
): Promise<CountedRecord> {
  const rows = await store.query(
    `SELECT flush_seq, max(message_seqs) FROM usage_minute WHERE stream_partition = ${sqlUInt(partition)} AND flush_seq >= ${sqlUInt(lowestSeq)} GROUP BY flush_seq`,
  );
  const counted = new Set<number>();
  const anyMessage = new Set<number>();
  let legacyFloor = 0;
  for (const [label, seqs] of rows) {
    if (seqs === '') legacyFloor = Math.max(legacyFloor, Number(label));
    else
      decodeCounted(seqs!, (seq, fingerprint) => {
        counted.add(seq);
        if (fingerprints === undefined) return;
        if (fingerprint === undefined) anyMessage.add(seq);
        else {
          const known = fingerprints.get(seq);
          if (known === undefined) fingerprints.set(seq, new Set([fingerprint]));
          else known.add(fingerprint);
        }
      });
  }
  for (const seq of anyMessage) fingerprints?.delete(seq);
  return { counted, legacyFloor };
}
