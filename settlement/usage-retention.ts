/**
 * Retention of minute usage (issue 17 item 5): usage_minute is partitioned
 * by flush month (shared/clickhouse/usage-minute.ts), and settlement drops
 * whole months of it once they are old and settled. The ledger keeps every
 * charge for ever (statements read it); what goes is the per-minute detail
 * behind the charges, which only `GET /v1/customers/{id}/usage` shows.
 *
 * A flush month is dropped only when all of these hold, checked against the
 * newest completed run:
 * - it was flushed more than `keepMonths` months before that run's end;
 * - every row in it was taken by that run (a minute before its end,
 *   committed at or below its watermarks): nothing unsettled is ever dropped;
 * - no stream partition's newest flush is in it: its label is the
 *   partition's watermark, which the rater resumes from and settlement
 *   compares against, and must stay readable.
 * New flushes are stamped with the current time, so nothing lands in a month
 * that old between the check and the drop. On a cluster the check waits for
 * the replica to hold every committed part; a replica behind skips retention
 * until the next run.
 */
import type { Store } from '../shared/clickhouse/store.js';
import { ReplicaBehindError } from '../shared/clickhouse/store.js';
import { assertCaughtUp } from '../shared/clickhouse/replication.js';
import { dropPartition, monthNumber } from '../shared/clickhouse/partitions.js';
import { usageMinutePartitioned } from '../shared/clickhouse/usage-minute.js';
import { sqlDateTime, sqlUInt } from '../shared/sql.js';
import { committedUnder, type Watermarks } from './usage-reader.js';

export interface UsageRetentionOutcome {
  /** The flush months dropped (YYYYMM). */
  dropped: number[];
  /** Months old enough that were kept: they hold untaken usage or a partition's newest flush. */
  kept: number[];
}

export async function dropSettledUsage(
  store: Store,
  newestRun: { untilSec: number; watermarks: Watermarks } | undefined,
  keepMonths: number,
): Promise<UsageRetentionOutcome> {
  const outcome: UsageRetentionOutcome = { dropped: [], kept: [] };
  // A table from before partitioning can only be dropped whole: it is kept (drawdown storage partition-usage).
  if (newestRun === undefined || !(await usageMinutePartitioned(store))) return outcome;
  const below = monthNumber(newestRun.untilSec, keepMonths);
  const parts = await store.query(
    "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = 'usage_minute' AND active",
  );
  const old = parts
    .map(([partition]) => Number(partition))
    .filter((month) => Number.isSafeInteger(month) && month < below)
    .sort((a, b) => a - b);
  if (old.length === 0) return outcome;
  try {
    await assertCaughtUp(store, ['usage_minute']);
  } catch (error) {
    if (error instanceof ReplicaBehindError) return outcome;
    throw error;
  }
  const newest = await store.query(
    'SELECT stream_partition, max(flush_seq) FROM usage_minute GROUP BY stream_partition',
  );
  const watermarkOf = new Map(newest.map(([p, seq]) => [p!, Number(seq)]));
  const taken = `(minute < ${sqlDateTime(newestRun.untilSec)} AND ${committedUnder(newestRun.watermarks)})`;
  for (const month of old) {
    const rows = await store.query(
      `SELECT stream_partition, max(flush_seq), countIf(NOT ${taken})
       FROM usage_minute WHERE toYYYYMM(flushed_at) = ${sqlUInt(month)} GROUP BY stream_partition`,
    );
    const keep = rows.some(
      ([partition, highest, untaken]) => Number(untaken) > 0 || Number(highest) >= (watermarkOf.get(partition!) ?? 0),
    );
    if (keep) outcome.kept.push(month);
    else {
      await dropPartition(store, 'usage_minute', month);
      outcome.dropped.push(month);
    }
  }
  return outcome;
}
