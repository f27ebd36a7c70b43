/**
 * Settlement run records in settlement_runs: a "started" row (with the
 * rater's watermarks the run owns) before a run posts anything, a
 * "completed" row with its report after. Which run ended where, which one
 * was interrupted, and what a run may take are all read from here.
 */
import type { Store } from '../shared/clickhouse/store.js';
import { settlementRunColumns } from '../shared/clickhouse/schema.js';
import { sqlString, sqlUInt } from '../shared/sql.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import type { Watermarks } from './usage-reader.js';

export function runIdFor(fromSec: number, untilSec: number): string {
  return `run:${fromSec}:${untilSec}`;
}

export interface RunRecord {
  runId: string;
  fromSec: number;
  untilSec: number;
  /** When the run recorded its start: entries posted later are not its inputs. */
  startedAtSec: number;
  /** The rater's committed watermarks when the run started: usage committed later is the next run's. */
  watermarks: Watermarks;
}

const runColumns = `run_id, toUnixTimestamp(any(window_from)), toUnixTimestamp(any(window_until)), toUnixTimestamp(minIf(recorded_at, status = 'started')), anyIf(watermarks, status = 'started')`;

function toRun(row: string[]): RunRecord {
  return {
    runId: row[0]!,
    fromSec: Number(row[1]),
    untilSec: Number(row[2]),
    startedAtSec: Number(row[3]),
    watermarks: JSON.parse(row[4] || '{}') as Watermarks,
  };
}

/** The completed run that ended where this one starts, whose usage this one must not take again. */
export async function previousRun(store: Store, fromSec: number): Promise<RunRecord | undefined> {
  if (fromSec === 0) return undefined;
  const rows = await store.query(
    `SELECT ${runColumns} FROM settlement_runs GROUP BY run_id HAVING max(status = 'completed') = 1 AND toUnixTimestamp(any(window_until)) = ${sqlUInt(fromSec)} ORDER BY run_id LIMIT 1`,
  );
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

/** The last completed run, for what counts as settled in balances. */
export async function lastCompletedRun(
  store: Store,
): Promise<{ untilSec: number; watermarks: Watermarks } | undefined> {
  const rows = await store.query(
    `SELECT ${runColumns} FROM settlement_runs GROUP BY run_id HAVING max(status = 'completed') = 1 ORDER BY toUnixTimestamp(any(window_until)) DESC, run_id LIMIT 1`,
  );
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

/** A run that recorded its intent but not its completion: it crashed, or is still running. */
export async function interruptedRun(store: Store): Promise<RunRecord | undefined> {
  const rows = await store.query(
    `SELECT ${runColumns} FROM settlement_runs GROUP BY run_id HAVING max(status = 'completed') = 0 ORDER BY run_id LIMIT 1`,
  );
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

export async function findRun(store: Store, runId: string): Promise<RunRecord | undefined> {
  const rows = await store.query(
    `SELECT ${runColumns} FROM settlement_runs WHERE run_id = ${sqlString(runId)} GROUP BY run_id`,
  );
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

export async function recordRun(
  store: Store,
  run: RunRecord,
  nowSec: number,
  status: 'started' | 'completed',
  report: string,
): Promise<void> {
  await store.insert(
    'settlement_runs',
    settlementRunColumns,
    encodeTsv([
      [
        run.runId,
        tsvDateTime(run.fromSec),
        tsvDateTime(run.untilSec),
        tsvDateTime(nowSec),
        report,
        status,
        JSON.stringify(run.watermarks),
      ],
    ]),
  );
}
