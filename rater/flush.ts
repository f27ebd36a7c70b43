/**
 * Writes one flush: aggregate rows plus the watermark they carry, as one
 * INSERT. On a retryable failure it asks ClickHouse whether the insert landed
 * anyway (an HTTP timeout can hide a commit) before trying again, so a flush
 * is written at most once and, while the rater lives and ClickHouse accepts
 * its rows, at least once.
 */
import { StoreError, writeFailure, type Store } from '../shared/clickhouse/store.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import { formatScaled } from '../shared/quantity.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import type { AggregateRow } from './aggregate.js';
import { crashPoint } from '../shared/fault.js';
import { writeIds } from './dedupe/id-log.js';
import { readWatermark } from '../shared/clickhouse/usage-minute.js';
import { flushBoundsColumns } from '../shared/clickhouse/flush-bounds.js';
import { assertCaughtUp } from '../shared/clickhouse/replication.js';
import { isFenceError } from './lease-fence.js';

/** What a rater reads back from ClickHouse: on a cluster, its replica must hold all of them first. */
export const raterTables = ['usage_minute', 'dedupe_ids'] as const;

/**
 * The `flushed_at` of a flush: now, or its latest minute if that is later
 * (an event up to the allowed skew in the future), and never before the
 * partition's previous stamp. usage_minute is partitioned by this stamp, and
 * reads skip months by it on the promise that no row was stamped before its
 * own minute (shared/clickhouse/usage-minute.ts). Stamps that only grow with
 * a partition's labels keep its flushes' parts in label order on a cluster
 * (shared/clickhouse/replication.ts assertUsageInOrder).
 */
export function flushStampSec(nowSec: number, rows: readonly AggregateRow[], previousSec = 0): number {
  let stamp = Math.max(nowSec, previousSec);
  for (const row of rows) if (row[3] > stamp) stamp = row[3];
  return stamp;
}

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
  /** Failed attempts after which the partition reports itself unready (it keeps retrying: nothing is dropped). */
  attemptsBeforeUnready: number;
  /** Stops retrying (returns 'stopped') when the rater is shutting down. */
  shouldContinue: () => boolean;
  onError: (error: unknown, attempt: number, failure: 'retry' | 'refused') => void;
  /** Called with true once `attemptsBeforeUnready` attempts failed in a row, with false once a write succeeds after. */
  onUnready: (unready: boolean) => void;
  /**
   * Called right before each INSERT (ids, bounds, usage): throws when this
   * rater cannot prove it still holds the partition's lease (rater/lease-fence.ts).
   * That error is not a store failure: it ends the write at once, unretried.
   */
  fence?: () => Promise<void>;
}

export type FlushOutcome =
  | { written: true }
  | { written: false; stopped: true }
  /** ClickHouse refused this flush's rows (not retryable, not store-wide): retrying the same rows cannot help. */
  | { written: false; stopped: false; refused: unknown };

/**
 * Test-only, like shared/fault.ts: DRAWDOWN_FAULT_REFUSE_CUSTOMER=<id> makes
 * an insert holding a row of that customer fail as ClickHouse refusing its
 * data (code 69), so the isolation of a refused flush can be tested with
 * real processes: an event the rater's checks pass is one ClickHouse takes.
 */
function refusedByFault(payload: string): string | undefined {
  const customer = process.env.DRAWDOWN_FAULT_REFUSE_CUSTOMER;
  if (customer === undefined || customer === '') return undefined;
  return payload.startsWith(`${customer}\t`) || payload.includes(`\n${customer}\t`) ? customer : undefined;
}

/**
 * Exponential back-off with jitter: 100 ms doubling up to `delayMaxMs`, each
 * delay drawn from its upper half, so partitions (and raters) that failed
 * together do not retry in step.
 */
export function retryDelayMs(attempt: number, delayMaxMs: number, random = Math.random): number {
  const ceiling = Math.min(delayMaxMs, 100 * 2 ** Math.min(attempt - 1, 16));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * Writes the flush; 'written' once it is in ClickHouse. `idsPayload` (the
 * flush's remembered event ids) and `boundsPayload` (its earliest minute,
 * shared/clickhouse/flush-bounds.ts) are written before the usage rows: a
 * record of a flush that never lands is read by nobody (ids) or only lowers
 * a floor (bounds), while a flush without them would be wrong.
 *
 * Retryable failures (ClickHouse unreachable, or refusing every write) are
 * retried for as long as the rater runs, with back-off; past
 * `attemptsBeforeUnready` in a row the partition says so (readiness), and
 * the stream buffers meanwhile. A failure that refuses these rows returns
 * at once: the caller isolates the message(s) responsible.
 */
export async function writeFlush(
  store: Store,
  partition: number,
  flushSeq: number,
  payload: string,
  retry: FlushRetry,
  idsPayload = '',
  boundsPayload = '',
): Promise<FlushOutcome> {
  let ambiguous = false;
  let idsWritten = idsPayload === '';
  let boundsWritten = boundsPayload === '';
  let unready = false;
  for (let attempt = 1; ; attempt++) {
    try {
      if (!idsWritten) {
        await retry.fence?.();
        await writeIds(store, idsPayload);
        idsWritten = true;
        crashPoint('after-ids-insert');
      }
      if (!boundsWritten) {
        await retry.fence?.();
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
        if ((await readWatermark(store, partition)) >= flushSeq) {
          if (unready) retry.onUnready(false);
          return { written: true };
        }
      }
      const refused = refusedByFault(payload);
      if (refused !== undefined)
        throw new StoreError(`Code: 69. DB::Exception: test fault: the rows of ${refused} are refused`, false);
      await retry.fence?.();
      await store.insert('usage_minute', usageMinuteFlushColumns, payload);
      if (unready) retry.onUnready(false);
      return { written: true };
    } catch (error) {
      // Not ClickHouse's doing: the caller stops (or resumes) without writing.
      if (isFenceError(error)) throw error;
      const failure = writeFailure(error);
      retry.onError(error, attempt, failure);
      // A refused insert wrote nothing (an INSERT is one part, or none).
      if (failure === 'refused') return { written: false, stopped: false, refused: error };
      ambiguous = true;
      if (attempt >= retry.attemptsBeforeUnready && !unready) {
        unready = true;
        retry.onUnready(true);
      }
      if (!retry.shouldContinue()) return { written: false, stopped: true };
      await new Promise((resolve) => setTimeout(resolve, retryDelayMs(attempt, retry.delayMaxMs)));
      if (!retry.shouldContinue()) return { written: false, stopped: true };
    }
  }
}
