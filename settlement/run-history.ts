/**
 * Past settlement runs as an operator looks them up: newest window first,
 * each with its window, when it started and completed, the catalog revision
 * it priced with, what it posted per credit unit, and the usage it could not
 * price. Read from settlement_runs (the "started" and "completed" rows
 * runs.ts writes); nothing here writes.
 */
import type { Decimal } from 'decimal.js';
import type { Store } from '../shared/clickhouse/store.js';
import { DrawdownError } from '../shared/errors.js';
import { formatAmount, money } from '../shared/money.js';
import { sqlString, sqlUInt } from '../shared/sql.js';

export const runsLimitMax = 100;
export const runsLimitDefault = 20;

/** A run id as runs.ts makes them: `run:<from>:<until>`, seconds since the epoch. */
const runIdPattern = /^run:(\d{1,10}):(\d{1,10})$/;

export function isRunId(value: string): boolean {
  return runIdPattern.test(value);
}

interface RunRow {
  runId: string;
  fromSec: number;
  untilSec: number;
  startedAtSec: number;
  completedAtSec: number;
  completed: boolean;
  /** The first completion's report (a re-run of the window stores another, posting nothing). */
  report: Record<string, unknown> | undefined;
}

const columns = `run_id,
  toUnixTimestamp(any(window_from)),
  toUnixTimestamp(any(window_until)),
  toUnixTimestamp(minIf(recorded_at, status = 'started')),
  toUnixTimestamp(minIf(recorded_at, status = 'completed')),
  max(status = 'completed'),
  argMinIf(report, recorded_at, status = 'completed')`;

function toRow(r: string[]): RunRow {
  const completed = r[5] === '1';
  return {
    runId: r[0]!,
    fromSec: Number(r[1]),
    untilSec: Number(r[2]),
    startedAtSec: Number(r[3]),
    completedAtSec: Number(r[4]),
    completed,
    report: completed && r[6] ? (JSON.parse(r[6]) as Record<string, unknown>) : undefined,
  };
}

const iso = (sec: number): string => new Date(sec * 1000).toISOString();

type Totals = Record<string, Record<string, string>>;
const totalFields = ['deducted', 'over_limit', 'granted', 'expired', 'carried', 'overage'] as const;

/** Per credit unit, what the run posted in all: summed from a full report, or as stored for a large one. */
function totalsOf(report: Record<string, unknown>): Totals {
  if (report.totals !== undefined) return report.totals as Totals;
  const sums: Record<string, Record<string, Decimal>> = {};
  for (const customer of Object.values((report.customers ?? {}) as Record<string, Record<string, unknown>>)) {
    for (const field of totalFields) {
      for (const [unit, amount] of Object.entries((customer[field] ?? {}) as Record<string, string>)) {
        const t = (sums[unit] ??= {});
        t[field] = (t[field] ?? money(0)).plus(amount);
      }
    }
  }
  return Object.fromEntries(
    Object.entries(sums).map(([unit, t]) => [
      unit,
      Object.fromEntries(Object.entries(t).map(([k, v]) => [k, formatAmount(v)])),
    ]),
  );
}

export interface UnratedLine {
  customer: string;
  meter: string;
  dimensions: Record<string, string>;
  quantity: string;
  reason: string;
}

function unratedOf(report: Record<string, unknown>): { count: number; lines: UnratedLine[] | null } {
  if (report.customers === undefined) return { count: Number(report.unrated_lines ?? 0), lines: null };
  const lines: UnratedLine[] = [];
  for (const [customer, r] of Object.entries(report.customers as Record<string, { unrated?: unknown[] }>)) {
    for (const u of (r.unrated ?? []) as Omit<UnratedLine, 'customer'>[]) lines.push({ customer, ...u });
  }
  return { count: lines.length, lines };
}

export interface OutstandingLineJson {
  customer: string;
  meter: string;
  dimensions: Record<string, string>;
  quantity: string;
  since: string;
  found_by: string;
  reason: string;
}

/** Unpriced usage still outstanding after the run (settlement/unpriced.ts), as its report recorded it. */
function outstandingOf(report: Record<string, unknown>): { count: number; lines: OutstandingLineJson[] | null } {
  if (report.customers === undefined) return { count: Number(report.unpriced_outstanding_lines ?? 0), lines: null };
  const lines: OutstandingLineJson[] = [];
  for (const [customer, r] of Object.entries(
    report.customers as Record<string, { unpriced_outstanding?: Omit<OutstandingLineJson, 'customer'>[] }>,
  )) {
    // Reports from before unpriced usage was carried have no such field: nothing was outstanding by this rule.
    for (const line of r.unpriced_outstanding ?? []) lines.push({ customer, ...line });
  }
  return { count: lines.length, lines };
}

function summary(run: RunRow): Record<string, unknown> {
  const report = run.report;
  const unrated = report === undefined ? { count: 0, lines: null } : unratedOf(report);
  return {
    run_id: run.runId,
    from: iso(run.fromSec),
    until: iso(run.untilSec),
    // `started` without a completion: still running, or interrupted (the next run finishes it first).
    status: run.completed ? 'completed' : 'started',
    started_at: iso(run.startedAtSec),
    completed_at: run.completed ? iso(run.completedAtSec) : null,
    catalog_revision: (report?.catalog_revision as number | null | undefined) ?? null,
    entries_posted: (report?.entries_posted as number | undefined) ?? 0,
    customer_count:
      report === undefined
        ? 0
        : ((report.customer_count as number | undefined) ?? Object.keys(report.customers ?? {}).length),
    totals: report === undefined ? {} : totalsOf(report),
    unrated_lines: unrated.count,
    unpriced_outstanding_lines: report === undefined ? 0 : outstandingOf(report).count,
  };
}

export interface RunPage {
  runs: Record<string, unknown>[];
  next: string | null;
}

/** Runs newest window first; `after` is the `next` of the previous page (a run id). */
export async function listRuns(store: Store, limit: number, after?: string): Promise<RunPage> {
  let having = '';
  if (after !== undefined) {
    const m = runIdPattern.exec(after);
    if (m === null) throw new DrawdownError('request_invalid', 'after must be the next token of a previous page');
    const untilSec = Number(m[2]);
    having = `HAVING toUnixTimestamp(any(window_until)) < ${sqlUInt(untilSec)}
      OR (toUnixTimestamp(any(window_until)) = ${sqlUInt(untilSec)} AND run_id < ${sqlString(after)})`;
  }
  const rows = (
    await store.query(
      `SELECT ${columns} FROM settlement_runs GROUP BY run_id ${having}
       ORDER BY toUnixTimestamp(any(window_until)) DESC, run_id DESC LIMIT ${sqlUInt(limit + 1)}`,
    )
  ).map(toRow);
  const page = rows.slice(0, limit);
  return { runs: page.map(summary), next: rows.length > limit ? page[page.length - 1]!.runId : null };
}

/** One run: its summary, the unpriced lines, and the report as the run answered it (bounded for large runs). */
export async function getRun(store: Store, runId: string): Promise<Record<string, unknown> | undefined> {
  const rows = await store.query(
    `SELECT ${columns} FROM settlement_runs WHERE run_id = ${sqlString(runId)} GROUP BY run_id`,
  );
  if (rows[0] === undefined) return undefined;
  const run = toRow(rows[0]);
  return {
    ...summary(run),
    unrated: run.report === undefined ? [] : unratedOf(run.report).lines,
    unpriced_outstanding: run.report === undefined ? [] : outstandingOf(run.report).lines,
    report: run.report ?? null,
  };
}
