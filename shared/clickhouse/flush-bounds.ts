/**
 * Where each rater flush's usage lies in time, so settlement reads only what
 * it has not taken instead of the whole history (issue 17 item 5).
 *
 * usage_minute is ordered by (customer, meter, minute, …): a condition
 * `minute >= floor` lets ClickHouse skip every older granule of each
 * customer's history, but the rows a run has not taken are not all recent —
 * late usage, or a rater catching up on a backlog, commits rows for old
 * minutes. So the rater records each flush's earliest minute here before
 * writing the flush (like dedupe_ids: a record of a flush that then failed
 * only lowers the floor), and a run's floor is the earliest minute of the
 * flushes committed since the previous run's watermarks, or that run's
 * window end if lower. Where the records cannot vouch for every new flush
 * (no previous run, a partition the previous run did not see, flushes from
 * before this table existed) there is no floor: the read scans, as it always did.
 */
import type { Store } from './store.js';
import { sqlUInt } from '../sql.js';
import { assertCaughtUp } from './replication.js';
import { dropPartitionsBelow, monthNumber } from './partitions.js';
import { ReplicaBehindError } from './store.js';
import { encodeTsv, tsvDateTime } from '../tsv.js';

/** One row per flush; partitioned by month of writing so retention drops whole months. */
export const flushBoundsTable = `CREATE TABLE IF NOT EXISTS flush_bounds (
    stream_partition UInt16,
    flush_seq UInt64,
    first_minute DateTime('UTC'),
    written_at DateTime('UTC')
  ) ENGINE = MergeTree PARTITION BY toYYYYMM(written_at) ORDER BY (stream_partition, flush_seq)`;

export const flushBoundsColumns = ['stream_partition', 'flush_seq', 'first_minute', 'written_at'] as const;

/** The record of a flush whose earliest row is at `firstMinuteSec` ('' for a flush without rows). */
export function flushBoundsPayload(
  partition: number,
  flushSeq: number,
  firstMinuteSec: number | undefined,
  writtenAtSec: number,
): string {
  if (firstMinuteSec === undefined) return '';
  return encodeTsv([[String(partition), String(flushSeq), tsvDateTime(firstMinuteSec), tsvDateTime(writtenAtSec)]]);
}

type Watermarks = Readonly<Record<string, number>>;

async function recordsCaughtUp(store: Store): Promise<boolean> {
  try {
    await assertCaughtUp(store, ['flush_bounds']);
    return true;
  } catch (error) {
    if (error instanceof ReplicaBehindError) return false;
    throw error;
  }
}

/**
 * Where the rows committed at or below `watermarks` and not taken by
 * `excluding` can lie, epoch s: none has a minute before `minuteSec` or was
 * flushed before `flushedSec`. A row taken-or-not by its flush label alone is
 * new (its flush's record says when it was written, which is its rows'
 * flushed_at); a row of an old flush is untaken only for a minute at or
 * after the previous run's end, and a flush is stamped no earlier than its
 * latest minute (rater/flush.ts flushStampSec). Undefined when the records
 * cannot bound them.
 */
export interface UntakenFloor {
  minuteSec: number;
  flushedSec: number;
}

export async function untakenFloor(
  store: Store,
  excluding: { untilSec: number; watermarks: Watermarks } | undefined,
  watermarks: Watermarks | undefined,
): Promise<UntakenFloor | undefined> {
  if (excluding === undefined || watermarks === undefined) return undefined;
  const moved = Object.entries(watermarks).filter(([p, seq]) => seq > (excluding.watermarks[p] ?? -1));
  if (moved.length === 0) return { minuteSec: excluding.untilSec, flushedSec: excluding.untilSec };
  if (moved.some(([p]) => excluding.watermarks[p] === undefined)) return undefined;
  const recorded = await recordedFloor(
    store,
    moved.map(([p, seq]) => ({ partition: Number(p), since: excluding.watermarks[p]!, upto: seq })),
  );
  if (recorded === undefined) return undefined;
  return {
    minuteSec: Math.min(excluding.untilSec, recorded.minuteSec),
    flushedSec: Math.min(excluding.untilSec, recorded.flushedSec),
  };
}

/** A partition's flushes above `since` and at or below `upto` (labels). */
export interface FlushRange {
  partition: number;
  since: number;
  upto: number;
}

/**
 * The earliest minute and stamp among the flushes of `ranges`, from their
 * records, when the records vouch for every flush there: each range's start
 * has its record (so its rater wrote one for every later flush), each range
 * has at least one, and on a cluster every record committed before this call
 * is on this replica (a replica may hold a flush's rows before its record:
 * parts are fetched in any order). Undefined otherwise: the caller scans.
 * The records are read by their key (partition, label), not scanned.
 */
export async function recordedFloor(store: Store, ranges: readonly FlushRange[]): Promise<UntakenFloor | undefined> {
  if (ranges.length === 0 || !(await recordsCaughtUp(store))) return undefined;
  const rows = await store.query(
    `SELECT stream_partition, countIf(flush_seq = since), countIf(flush_seq > since),
       toUnixTimestamp(minIf(first_minute, flush_seq > since)), toUnixTimestamp(minIf(written_at, flush_seq > since))
     FROM (
       SELECT stream_partition, flush_seq, first_minute, written_at,
         multiIf(${ranges.map((r) => `stream_partition = ${sqlUInt(r.partition)}, ${sqlUInt(r.since)}`).join(', ')}, 0) AS since
       FROM flush_bounds
       WHERE ${ranges.map((r) => `(stream_partition = ${sqlUInt(r.partition)} AND flush_seq >= ${sqlUInt(r.since)} AND flush_seq <= ${sqlUInt(r.upto)})`).join(' OR ')}
     )
     GROUP BY stream_partition`,
  );
  if (rows.length !== ranges.length) return undefined;
  let minuteSec = Number.POSITIVE_INFINITY;
  let flushedSec = Number.POSITIVE_INFINITY;
  for (const [, anchored, newer, firstMinute, firstWritten] of rows) {
    if (Number(anchored) === 0 || Number(newer) === 0) return undefined;
    minuteSec = Math.min(minuteSec, Number(firstMinute));
    flushedSec = Math.min(flushedSec, Number(firstWritten));
  }
  return { minuteSec, flushedSec };
}

/**
 * Drops whole months of flush records written more than `keepDays` before
 * `newestRunSec` (the newest completed run's end); returns the months
 * dropped. Safe whatever is dropped: a flush's record is written after every
 * earlier flush's of its partition, so once a record a run needs is gone,
 * so is every record at or below the previous run's watermark, and
 * untakenFloor answers "no floor" (a scan) instead of a wrong floor.
 */
export async function dropOldFlushBounds(store: Store, newestRunSec: number, keepDays = 62): Promise<number> {
  const cutoffSec = newestRunSec - keepDays * 86_400;
  if (cutoffSec <= 0) return 0;
  return dropPartitionsBelow(store, 'flush_bounds', monthNumber(cutoffSec));
}
