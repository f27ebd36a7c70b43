/**
 * Writes one flush: aggregate rows plus the watermark they carry, as one
 * INSERT. On failure it asks ClickHouse whether the insert landed anyway (an
 * HTTP timeout can hide a commit) before trying again, so a flush is written
 * at most once and, while the rater lives, at least once.
 */
import type { Store } from '../shared/clickhouse/store.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import { formatScaled } from '../shared/quantity.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import type { AggregateRow } from './aggregate.js';
import { crashPoint } from '../shared/fault.js';
import { writeIds } from './dedupe/id-log.js';
import { readWatermark } from '../shared/clickhouse/usage-minute.js';
import { flushBoundsColumns } from '../shared/clickhouse/flush-bounds.js';
import { assertCaughtUp } from '../shared/clickhouse/replication.js';

/** What a rater reads back from ClickHouse: on a cluster, its replica must hold all of them first. */
export const raterTables = ['usage_minute', 'dedupe_ids'] as const;

/**
 * The TSV of one flush in `usageMinuteFlushColumns` order. `messageSeqs`
 * (rater/counted-log.ts) goes on the first row only: one copy per flush is
 * the record, and the other rows stay as small as before.
 */
export function flushPayload(
  rows: readonly AggregateRow[],
  partition: number,
  flushSeq: number,
  flushedAtSec: number,
  messageSeqs = '',
): string {
  const cells: string[][] = new Array(rows.length);
  const partitionText = String(partition);
  const seqText = String(flushSeq);
  const flushedText = tsvDateTime(flushedAtSec);
  for (let i = 0; i < rows.length; i++) {
    const [customer, meter, dimensions, minuteSec, scaled, events, hold] = rows[i]!;
    cells[i] = [
      customer,
      meter,
      dimensions,
      tsvDateTime(minuteSec),
      formatScaled(scaled),
      String(events),
      partitionText,
      seqText,
      flushedText,
      i === 0 ? messageSeqs : '',
      hold ?? '',
    ];
  }
  return encodeTsv(cells);
}

export interface FlushRetry {
  delayMaxMs: number;
  /** Stops retrying (returns false) when the rater is shutting down. */
  shouldContinue: () => boolean;
  onError: (error: unknown, attempt: number) => void;
}

/**
 * Returns true once the flush is in ClickHouse, false if told to stop first.
 * `idsPayload` (the flush's remembered event ids) and `boundsPayload` (its
 * earliest minute, shared/clickhouse/flush-bounds.ts) are written before the
 * usage rows: a record of a flush that never lands is read by nobody
 * (ids) or only lowers a floor (bounds), while a flush without them would
 * be wrong.
 */
export async function writeFlush(
  store: Store,
  partition: number,
  flushSeq: number,
  payload: string,
  retry: FlushRetry,
  idsPayload = '',
  boundsPayload = '',
): Promise<boolean> {
  let ambiguous = false;
  let idsWritten = idsPayload === '';
  let boundsWritten = boundsPayload === '';
  for (let attempt = 1; ; attempt++) {
    try {
      if (!idsWritten) {
        await writeIds(store, idsPayload);
        idsWritten = true;
        crashPoint('after-ids-insert');
      }
      if (!boundsWritten) {
        await store.insert('flush_bounds', flushBoundsColumns, boundsPayload);
        boundsWritten = true;
      }
      if (ambiguous) {
        // After a failover the next replica may lack the part this flush (or
        // an earlier one) committed on the one that failed: the watermark
        // read there would say "not landed", and a flush written above a
        // missing one could be skipped by settlement. Wait until it holds them.
        // (dedupe_ids needs no wait here: a retried ids block is identical,
        // so ZooKeeper's block ids drop it; a resume waits for it.)
        await assertCaughtUp(store, ['usage_minute']);
        if ((await readWatermark(store, partition)) >= flushSeq) return true;
      }
      await store.insert('usage_minute', usageMinuteFlushColumns, payload);
      return true;
    } catch (error) {
      ambiguous = true;
      retry.onError(error, attempt);
      if (!retry.shouldContinue()) return false;
      // Exponential back-off from 100 ms to delayMaxMs; ClickHouse being down is
      // an operating condition, and the stream buffers meanwhile.
      const delay = Math.min(retry.delayMaxMs, 100 * 2 ** Math.min(attempt - 1, 16));
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (!retry.shouldContinue()) return false;
    }
  }
}
