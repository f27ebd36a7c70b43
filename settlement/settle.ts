/**
 * A settlement run over [from, until): read aggregated usage, price it, post
 * one `usage` entry per (customer, unit, meter, dimensions, rate version), and
 * record the run. Entry ids derive from the window and what was priced, so a
 * re-run — after success or after a crash at any point — posts nothing new.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog, RateCardVersion, RateRow } from '../shared/catalog.js';
import type { Store } from '../shared/clickhouse/store.js';
import { settlementRunColumns } from '../shared/clickhouse/schema.js';
import { settings } from '../shared/config.js';
import { DrawdownError } from '../shared/errors.js';
import { crashPoint } from '../shared/fault.js';
import { formatAmount, money } from '../shared/money.js';
import { sqlString, sqlUInt } from '../shared/sql.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { dropExpiredSnapshots, entriesOf, entriesOutsideSettlementSince, entryId, entryIdsOfRun, latestSnapshots, writeEntries, writeSnapshots, type CreditSnapshot, type LedgerEntry } from './ledger.js';
import { applyPosting, balanceOf, decodeState, emptyState, encodeState, type CreditState, type DrawDownPolicy } from './credit/blocks.js';
import { settleWindow, type ExistingBlock, type UsageCharge } from './credit/timeline.js';
import { grantSchedules } from './credit/schedule.js';
import { costOf, matchRow, rowSignature, tierPeriodStartSec, versionAt } from './pricing.js';
import { readPriorUsage, readSelectedUsage, type SelectedLine, type UsageLine, type Watermarks } from './usage-reader.js';
import { readWatermarks } from '../rater/watermark.js';
import { closedTerms, runReportTermsMax, statementJson, statementsOf, type Statement } from './statement.js';

export interface SettlementReport {
  runId: string;
  fromSec: number;
  untilSec: number;
  entriesPosted: number;
  entriesAlreadyPosted: number;
  /** True when this report is of an interrupted run that this call finished. */
  resumed?: boolean;
  /** The catalog revision the run priced with (absent when the catalog came from a file, not the store). */
  catalogRevision?: number;
  /** Months of credit snapshots dropped after the run (retention). */
  snapshotMonthsDropped?: number;
  customers: Record<string, CustomerReport>;
}

export interface CustomerReport {
  rated: { meter: string; dimensions: string; rateVersion: string; unit: string; quantity: string; cost: string; late: boolean }[];
  deducted: Record<string, string>;
  unrated: { meter: string; dimensions: string; quantity: string; reason: string }[];
  /** Credits used past the allowed negative balance, per unit: posted, and the customer is over limit. */
  overLimit: Record<string, string>;
  granted?: Record<string, string>;
  expired?: Record<string, string>;
  carried?: Record<string, string>;
  /** Credits billed as overage, per unit. */
  overage?: Record<string, string>;
  /** Billing terms whose end lies in the run's window: closed by this run (settlement/statement.ts). */
  closedTerms?: Statement[];
}

/**
 * What settlement_runs keeps of a report: all of it up to
 * `storedReportCustomersMax` customers, else totals per unit — a run over
 * 100,000 customers would otherwise store one ~50 MB row. The ledger holds
 * every detail either way.
 */
export const storedReportCustomersMax = 1_000;

export function storedReport(report: SettlementReport): Record<string, unknown> {
  const customers = Object.values(report.customers);
  if (customers.length <= storedReportCustomersMax) return reportJson(report);
  const totals: Record<string, Record<string, Decimal>> = {};
  for (const r of customers) {
    for (const [field, byUnit] of [['deducted', r.deducted], ['over_limit', r.overLimit], ['granted', r.granted], ['expired', r.expired], ['carried', r.carried], ['overage', r.overage]] as const) {
      for (const [unit, amount] of Object.entries(byUnit ?? {})) {
        const t = (totals[unit] ??= {});
        t[field] = (t[field] ?? money(0)).plus(amount);
      }
    }
  }
  return {
    ...reportHeader(report),
    customer_count: customers.length,
    unrated_lines: customers.reduce((n, r) => n + r.unrated.length, 0),
    closed_terms: customers.reduce((n, r) => n + (r.closedTerms?.length ?? 0), 0),
    totals: Object.fromEntries(Object.entries(totals).map(([unit, t]) => [unit, Object.fromEntries(Object.entries(t).map(([k, v]) => [k, formatAmount(v)]))])),
  };
}

/** What every form of a report starts with: the run, its window and its catalog revision. */
function reportHeader(report: SettlementReport): Record<string, unknown> {
  return {
    run_id: report.runId,
    from: new Date(report.fromSec * 1000).toISOString(),
    until: new Date(report.untilSec * 1000).toISOString(),
    entries_posted: report.entriesPosted,
    entries_already_posted: report.entriesAlreadyPosted,
    resumed: report.resumed === true,
    catalog_revision: report.catalogRevision ?? null,
  };
}

/** The report as the HTTP API and the CLI show it: snake_case, instants as ISO-8601. */
export function reportJson(report: SettlementReport): Record<string, unknown> {
  return {
    ...reportHeader(report),
    customers: Object.fromEntries(
      Object.entries(report.customers).map(([customer, r]) => [
        customer,
        {
          rated: r.rated.map((x) => ({ meter: x.meter, dimensions: JSON.parse(x.dimensions), rate_version: x.rateVersion, unit: x.unit, quantity: x.quantity, cost: x.cost, late: x.late })),
          deducted: r.deducted,
          unrated: r.unrated.map((x) => ({ meter: x.meter, dimensions: JSON.parse(x.dimensions), quantity: x.quantity, reason: x.reason })),
          over_limit: r.overLimit,
          granted: r.granted ?? {},
          expired: r.expired ?? {},
          carried: r.carried ?? {},
          overage: r.overage ?? {},
          closed_terms: (r.closedTerms ?? []).map(statementJson),
        },
      ]),
    ),
  };
}

export interface PricedLine {
  line: UsageLine;
  unit: string;
  rateVersion: string;
  cost: Decimal;
}

export interface PricingOutcome {
  priced: PricedLine[];
  unrated: { line: UsageLine; reason: string }[];
}

/**
 * Quantities taken by earlier runs, for graduated tiers: per
 * `priorUsageKey(customer, meter, month start)`, each dimension set's total.
 */
export type PriorUsage = ReadonlyMap<string, readonly { dimensions: string; quantity: Decimal }[]>;

export function priorUsageKey(customer: string, meter: string, monthStartSec: number): string {
  return `${customer}\u0000${meter}\u0000${monthStartSec}`;
}

/**
 * Prices usage lines; what no version or row covers is returned as unrated,
 * never as free. A graduated row prices a line by where it falls in the
 * month's cumulative usage of that row: everything taken before (`prior`,
 * from earlier runs) plus this run's earlier lines, in time order, that the
 * same version's same row prices.
 */
export function priceUsage(catalog: Catalog, lines: readonly UsageLine[], prior: PriorUsage = new Map()): PricingOutcome {
  const out: PricingOutcome = { priced: [], unrated: [] };
  const parsed = new Map<string, Record<string, string>>();
  const dimensionsOf = (text: string): Record<string, string> => {
    let value = parsed.get(text);
    if (value === undefined) parsed.set(text, (value = JSON.parse(text) as Record<string, string>));
    return value;
  };
  const graduated: { priced: PricedLine; version: RateCardVersion; row: RateRow }[] = [];
  // Lines repeat a handful of (version, meter, dimensions): match each once.
  const rows = new Map<RateCardVersion, Map<string, RateRow | undefined>>();
  const rowFor = (version: RateCardVersion, meter: string, dimensions: string): RateRow | undefined => {
    let byLine = rows.get(version);
    if (byLine === undefined) rows.set(version, (byLine = new Map()));
    const key = `${meter}\u0000${dimensions}`;
    if (!byLine.has(key)) byLine.set(key, matchRow(version, meter, dimensionsOf(dimensions)));
    return byLine.get(key);
  };
  for (const line of lines) {
    const version = versionAt(catalog.rateCard, line.fromSec * 1000);
    if (version === undefined) {
      out.unrated.push({ line, reason: 'no rate card version in force' });
      continue;
    }
    const row = rowFor(version, line.meter, line.dimensions);
    if (row === undefined) {
      out.unrated.push({ line, reason: `rate card ${version.version} has no row for this meter and dimensions` });
      continue;
    }
    const priced: PricedLine = { line, unit: row.unit, rateVersion: version.version, cost: money(0) };
    if (row.price.model === 'graduated') graduated.push({ priced, version, row });
    else priced.cost = costOf(row.price, line.quantity);
    out.priced.push(priced);
  }
  if (graduated.length === 0) return out;

  // This run's lines of each (customer, meter, month), in time order, to count what came before a line.
  const monthOf = (line: UsageLine): number => tierPeriodStartSec(line.firstMinuteSec);
  const inTimeOrder = (a: UsageLine, b: UsageLine): number =>
    a.fromSec - b.fromSec || Number((b as SelectedLine).late === true) - Number((a as SelectedLine).late === true) || a.firstMinuteSec - b.firstMinuteSec || (a.dimensions < b.dimensions ? -1 : a.dimensions > b.dimensions ? 1 : 0);
  const groups = new Map<string, UsageLine[]>();
  for (const { priced } of graduated) groups.set(priorUsageKey(priced.line.customer, priced.line.meter, monthOf(priced.line)), []);
  for (const line of lines) groups.get(priorUsageKey(line.customer, line.meter, monthOf(line)))?.push(line);
  for (const group of groups.values()) group.sort(inTimeOrder);

  for (const { priced, version, row } of graduated) {
    const { line } = priced;
    const key = priorUsageKey(line.customer, line.meter, monthOf(line));
    const signature = rowSignature(row);
    const sameRow = (dimensions: string): boolean => {
      const r = rowFor(version, line.meter, dimensions);
      return r !== undefined && rowSignature(r) === signature;
    };
    let before = money(0);
    for (const p of prior.get(key) ?? []) if (sameRow(p.dimensions)) before = before.plus(p.quantity);
    for (const other of groups.get(key)!) {
      if (other === line) break;
      if (sameRow(other.dimensions)) before = before.plus(other.quantity);
    }
    priced.cost = costOf(row.price, line.quantity, before);
  }
  return out;
}

/** What earlier runs took in the months of these lines, for the meters some version prices by graduated tiers. */
export async function priorUsageFor(
  store: Store,
  catalog: Catalog,
  lines: readonly UsageLine[],
  excluding: { untilSec: number; watermarks: Watermarks } | undefined,
  customer?: string,
): Promise<PriorUsage> {
  const meters = new Set<string>();
  for (const version of catalog.rateCard) for (const row of version.rows) if (row.price.model === 'graduated') meters.add(row.meter);
  const months = new Set<number>();
  for (const line of lines) if (meters.has(line.meter)) months.add(tierPeriodStartSec(line.firstMinuteSec));
  return readPriorUsage(store, { excluding, meters: [...meters].sort(), monthStartsSec: [...months].sort((a, b) => a - b), customer });
}

function revisionOf(request: SettleRequest): Pick<SettlementReport, 'catalogRevision'> {
  return request.catalogRevision === undefined ? {} : { catalogRevision: request.catalogRevision };
}

export function runIdFor(fromSec: number, untilSec: number): string {
  return `run:${fromSec}:${untilSec}`;
}

/** The end of the last completed run, epoch s; 0 before the first. */
export async function settledUntil(store: Store): Promise<number> {
  const rows = await store.query("SELECT max(toUnixTimestamp(window_until)) FROM settlement_runs WHERE status = 'completed'");
  return Number(rows[0]?.[0] ?? 0);
}

interface RunRecord {
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
  return { runId: row[0]!, fromSec: Number(row[1]), untilSec: Number(row[2]), startedAtSec: Number(row[3]), watermarks: JSON.parse(row[4] || '{}') as Watermarks };
}

/** The completed run that ended where this one starts, whose usage this one must not take again. */
async function previousRun(store: Store, fromSec: number): Promise<RunRecord | undefined> {
  if (fromSec === 0) return undefined;
  const rows = await store.query(
    `SELECT ${runColumns} FROM settlement_runs GROUP BY run_id HAVING max(status = 'completed') = 1 AND toUnixTimestamp(any(window_until)) = ${sqlUInt(fromSec)} ORDER BY run_id LIMIT 1`,
  );
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

/** The last completed run, for what counts as settled in balances. */
export async function lastCompletedRun(store: Store): Promise<{ untilSec: number; watermarks: Watermarks } | undefined> {
  const rows = await store.query(`SELECT ${runColumns} FROM settlement_runs GROUP BY run_id HAVING max(status = 'completed') = 1 ORDER BY toUnixTimestamp(any(window_until)) DESC, run_id LIMIT 1`);
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

/** A run that recorded its intent but not its completion: it crashed, or is still running. */
async function interruptedRun(store: Store): Promise<RunRecord | undefined> {
  const rows = await store.query(`SELECT ${runColumns} FROM settlement_runs GROUP BY run_id HAVING max(status = 'completed') = 0 ORDER BY run_id LIMIT 1`);
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

async function findRun(store: Store, runId: string): Promise<RunRecord | undefined> {
  const rows = await store.query(`SELECT ${runColumns} FROM settlement_runs WHERE run_id = ${sqlString(runId)} GROUP BY run_id`);
  return rows[0] === undefined ? undefined : toRun(rows[0]);
}

async function recordRun(store: Store, run: RunRecord, nowSec: number, status: 'started' | 'completed', report: string): Promise<void> {
  await store.insert('settlement_runs', settlementRunColumns, encodeTsv([[run.runId, tsvDateTime(run.fromSec), tsvDateTime(run.untilSec), tsvDateTime(nowSec), report, status, JSON.stringify(run.watermarks)]]));
}

export interface SettleRequest {
  untilSec: number;
  /** Defaults to where the previous run ended. */
  fromSec?: number;
  nowSec?: number;
  /** The catalog revision `catalog` is, for the report (`catalog_revision`). */
  catalogRevision?: number;
  /** After the run, credit snapshot months older than its end minus this many days are dropped (default: DRAWDOWN_SNAPSHOT_RETENTION_DAYS's). */
  snapshotRetentionDays?: number;
  /** Called as each phase of the run ends (benchmarks and logs). */
  onPhase?: (phase: string) => void;
  /** Called while accounts are settled: about ten times a run, and at least every `progressIntervalMs` (logs, `drawdown settle`). */
  onProgress?: (progress: SettleProgress) => void;
}

/** How far a run has come through its accounts (customer × credit unit). */
export interface SettleProgress {
  runId: string;
  accountsDone: number;
  accountsTotal: number;
  /** Ledger entries computed so far (posted when the run writes the ledger). */
  entries: number;
}

/** Progress is reported every tenth of the accounts, but no more often than every this many accounts … */
const progressAccountsMin = 100;
/** … and, on a slow run, at least this often (the clock is read every 256 accounts only: the loop is hot). */
const progressIntervalMs = 5_000;

/**
 * Settles up to `untilSec`. A run first records its window ("started"), then
 * posts, then records completion. If an earlier run was interrupted, its
 * exact window is finished first — the same window gives the same entry ids,
 * so nothing it had posted is posted again — and only then does the cursor move.
 */
export async function settle(store: Store, catalog: Catalog, request: SettleRequest): Promise<SettlementReport> {
  const report = await settleRuns(store, catalog, request);
  // Retention runs after completion, against the newest completed run (this one, or a later one re-run here).
  const newest = await settledUntil(store);
  if (newest > 0) {
    report.snapshotMonthsDropped = await dropExpiredSnapshots(store, newest, request.snapshotRetentionDays ?? settings.snapshotRetentionDays.default);
    request.onPhase?.('snapshot retention');
  }
  return report;
}

/** The runs of one settle call: an interrupted one first, then the requested window. */
async function settleRuns(store: Store, catalog: Catalog, request: SettleRequest): Promise<SettlementReport> {
  const untilSec = request.untilSec;
  if (untilSec % 60 !== 0) throw new DrawdownError('request_invalid', 'until must fall on a whole minute (usage is aggregated per minute)');
  if (request.fromSec !== undefined && request.fromSec % 60 !== 0) throw new DrawdownError('request_invalid', 'from must fall on a whole minute');
  // An explicit window must hold time: a zero-length or inverted one is a mistake, never a stored run.
  if (request.fromSec !== undefined && untilSec <= request.fromSec) throw windowProblem('until must be after from');
  const nowSec = request.nowSec ?? Math.floor(Date.now() / 1000);

  let resumed: SettlementReport | undefined;
  const interrupted = await interruptedRun(store);
  if (interrupted !== undefined) {
    resumed = await executeRun(store, catalog, interrupted, nowSec, request);
    resumed.resumed = true;
  }

  const cursor = await settledUntil(store);
  const fromSec = request.fromSec ?? cursor;
  const runId = runIdFor(fromSec, untilSec);
  if (resumed !== undefined && resumed.runId === runId) return resumed;
  if (untilSec <= fromSec) {
    // Only without `from` (checked above), so fromSec is the settled time.
    // `until` = the settled time is a retry of the call that settled there
    // (or a schedule firing twice in a minute): a no-op that stores nothing.
    // Earlier is refused: nothing is settled twice, and a report "settling"
    // an inverted window would read as if this call had settled it.
    if (untilSec < fromSec && resumed === undefined) {
      throw windowProblem(`until ${new Date(untilSec * 1000).toISOString()} is before the settled time (settled until ${new Date(fromSec * 1000).toISOString()}); to re-run a past window give its exact from and until`);
    }
    return resumed ?? { runId, fromSec, untilSec, entriesPosted: 0, entriesAlreadyPosted: 0, ...revisionOf(request), customers: {} };
  }
  if (fromSec < cursor) {
    // Re-running a settled window exactly is a no-op (same inputs, same ids);
    // any other overlap with settled time would price usage twice.
    const earlier = await findRun(store, runId);
    if (earlier === undefined) {
      throw new DrawdownError('request_invalid', `window overlaps time already settled (settled until ${new Date(cursor * 1000).toISOString()})`);
    }
    return executeRun(store, catalog, earlier, nowSec, request);
  }
  if (fromSec > cursor) throw new DrawdownError('request_invalid', `from may not leave a gap after the settled time (settled until ${new Date(cursor * 1000).toISOString()})`);
  // The snapshot is taken before the start is recorded, so the recorded run owns exactly it.
  const watermarks = Object.fromEntries([...(await readWatermarks(store))].map(([p, seq]) => [String(p), seq]));
  const run: RunRecord = { runId, fromSec, untilSec, startedAtSec: nowSec, watermarks };
  await recordRun(store, run, nowSec, 'started', '');
  return executeRun(store, catalog, run, nowSec, request, true);
}

function windowProblem(message: string): DrawdownError {
  return new DrawdownError('request_invalid', message, { problems: [{ field: 'until', code: 'range', message }] });
}

/** Replays one ledger entry onto a credit state. */
function replay(state: CreditState, e: LedgerEntry): void {
  const opening =
    (e.kind === 'grant' || e.kind === 'purchase') && e.blockId !== '' && !state.blocks.has(e.blockId)
      ? { id: e.blockId, source: e.kind, createdAtMs: e.effectiveAtSec * 1000, expiresAtMs: e.expiresAtSec === 0 ? undefined : e.expiresAtSec * 1000 }
      : undefined;
  applyPosting(state, { kind: e.kind, amount: e.amount, blockId: e.blockId, atMs: e.effectiveAtSec * 1000, note: '' }, opening);
}

/** Block openings first within a second: a debt repayment from a new block shares its second and may sort before it by id. */
function replayOrder(a: LedgerEntry, b: LedgerEntry): number {
  const opens = (e: LedgerEntry): number => (e.kind === 'grant' || e.kind === 'purchase' ? 0 : 1);
  return a.effectiveAtSec - b.effectiveAtSec || opens(a) - opens(b) || (a.entryId < b.entryId ? -1 : a.entryId > b.entryId ? 1 : 0);
}

interface CreditInputs {
  state: CreditState;
  existing: ExistingBlock[];
}

/**
 * Each account's credit state at the window start, and the blocks posted
 * outside settlement (purchases) that take effect inside the window. Inputs
 * are fixed so that a re-run computes the very same postings: entries
 * effective before the window plus purchases effective inside it — only
 * those posted before the run started (strictly: entries posted in the run's
 * own first second may or may not have been visible to it).
 *
 * The state starts from the account's latest snapshot as of the window start
 * (written by the last run that settled it), plus the purchases that
 * snapshot's run did not see. An account without a snapshot (a ledger
 * written before snapshots existed, or one never settled) is rebuilt by
 * replaying its whole ledger. So a run reads O(accounts) rows, not the
 * ledger's history.
 */
async function loadCreditInputs(store: Store, accounts: readonly string[], run: RunRecord): Promise<Map<string, CreditInputs>> {
  const { fromSec, untilSec, startedAtSec } = run;
  const snapshots = await latestSnapshots(store, accounts, fromSec);
  const replayAll = new Set(accounts.filter((k) => !snapshots.has(k)).map((k) => k.slice(0, k.indexOf('\u0000'))));
  // Purchases the snapshots may lack (a short scan), and every entry of customers that need a full replay.
  let sinceAsOf = fromSec;
  let sincePosted = startedAtSec;
  for (const s of snapshots.values()) {
    if (s.asOfSec < sinceAsOf) sinceAsOf = s.asOfSec;
    if (s.inputsBeforeSec < sincePosted) sincePosted = s.inputsBeforeSec;
  }
  const outside = snapshots.size === 0 ? [] : await entriesOutsideSettlementSince(store, untilSec, sinceAsOf, sincePosted);
  const everything = replayAll.size === 0 ? [] : await entriesOf(store, [...replayAll], untilSec);
  const byAccount = new Map<string, LedgerEntry[]>();
  for (const e of [...outside.filter((e) => !replayAll.has(e.customer)), ...everything]) {
    const key = `${e.customer}\u0000${e.unit}`;
    const list = byAccount.get(key);
    if (list) list.push(e);
    else byAccount.set(key, [e]);
  }
  const out = new Map<string, CreditInputs>();
  for (const key of accounts) {
    const snapshot = snapshots.get(key);
    const state = snapshot === undefined ? emptyState() : decodeState(snapshot.state);
    const existing: ExistingBlock[] = [];
    const list = (byAccount.get(key) ?? []).sort(replayOrder);
    for (const e of list) {
      if (e.postedAtSec >= startedAtSec) continue;
      // Already in the snapshot: seen by its run (posted before it started) and effective before its window ended.
      if (snapshot !== undefined && (e.runId !== '' || (e.effectiveAtSec < snapshot.asOfSec && e.postedAtSec < snapshot.inputsBeforeSec))) continue;
      if (e.effectiveAtSec < fromSec) replay(state, e);
      else if ((e.kind === 'purchase' || e.kind === 'grant') && e.runId === '' && e.blockId !== '') {
        existing.push({ atMs: e.effectiveAtSec * 1000, id: e.blockId, source: e.kind, amount: e.amount, expiresAtMs: e.expiresAtSec === 0 ? undefined : e.expiresAtSec * 1000 });
      }
    }
    out.set(key, { state, existing });
  }
  return out;
}

/**
 * `newRun`: this call recorded the run's start just now, so it has posted
 * nothing yet and the scan for its ids (a column scan of the whole ledger)
 * is skipped; resumed runs and re-runs look.
 */
async function executeRun(store: Store, catalog: Catalog, run: RunRecord, nowSec: number, request: SettleRequest, newRun = false): Promise<SettlementReport> {
  const { runId, fromSec, untilSec, startedAtSec } = run;
  const onPhase = request.onPhase ?? (() => {});
  const report: SettlementReport = { runId, fromSec, untilSec, entriesPosted: 0, entriesAlreadyPosted: 0, ...revisionOf(request), customers: {} };
  const previous = await previousRun(store, fromSec);
  const excluding = previous && { untilSec: previous.untilSec, watermarks: previous.watermarks };
  const lines = await readSelectedUsage(store, catalog, { untilSec, watermarks: run.watermarks, excluding, lateBeforeSec: fromSec });
  onPhase('read usage');
  const prior = await priorUsageFor(store, catalog, lines, excluding);
  onPhase('read prior usage');
  const { priced, unrated } = priceUsage(catalog, lines, prior);
  onPhase('price');
  const customerReport = (customer: string): CustomerReport => (report.customers[customer] ??= { rated: [], deducted: {}, unrated: [], overLimit: {} });

  // Usage per (customer, credit unit): each is drawn down from that customer's blocks in that unit.
  const byAccount = new Map<string, PricedLine[]>();
  for (const p of priced) {
    const key = `${p.line.customer}\u0000${p.unit}`;
    const list = byAccount.get(key);
    if (list) list.push(p);
    else byAccount.set(key, [p]);
    const r = customerReport(p.line.customer);
    r.rated.push({ meter: p.line.meter, dimensions: p.line.dimensions, rateVersion: p.rateVersion, unit: p.unit, quantity: formatAmount(p.line.quantity), cost: formatAmount(p.cost), late: (p.line as SelectedLine).late === true });
  }
  for (const u of unrated) {
    customerReport(u.line.customer).unrated.push({ meter: u.line.meter, dimensions: u.line.dimensions, quantity: formatAmount(u.line.quantity), reason: u.reason });
  }

  // Subscriptions active in the window bring their grants (and overage) even without usage.
  const fromMs = fromSec * 1000;
  const untilMs = untilSec * 1000;
  const { grantsByAccount, overageByAccount } = grantSchedules(catalog, fromMs, untilMs);
  for (const key of grantsByAccount.keys()) if (!byAccount.has(key)) byAccount.set(key, []);

  // Inputs are fixed so that a re-run computes the very same postings: entries
  // effective before the window, plus blocks posted outside settlement
  // (purchases) effective inside it — only those posted before the run started.
  // Notes name a handful of instants hundreds of thousands of times: format each once.
  const isos = new Map<number, string>();
  const isoOf = (sec: number): string => {
    let iso = isos.get(sec);
    if (iso === undefined) isos.set(sec, (iso = new Date(sec * 1000).toISOString()));
    return iso;
  };
  const accounts = [...byAccount.keys()].sort();
  const inputs = await loadCreditInputs(store, accounts, run);
  onPhase('load credit state');
  const entries: LedgerEntry[] = [];
  const snapshots: CreditSnapshot[] = [];
  const onProgress = request.onProgress;
  const progressStep = Math.max(progressAccountsMin, Math.ceil(accounts.length / 10));
  let accountsDone = 0;
  let progressAtMs = Date.now();
  for (const key of accounts) {
    const charges = byAccount.get(key)!;
    const [customer, unit] = key.split('\u0000') as [string, string];
    const { state, existing } = inputs.get(key) ?? { state: emptyState(), existing: [] };
    const creditUnit = catalog.creditUnits.get(unit);
    // A line is drawn down at its first minute of usage: blocks opened later in
    // the window (a purchase mid-window) do not cover it, blocks that expire
    // later do. Windows are short (hourly), so this minute-level approximation
    // of a line's usage is documented, not hidden.
    // Late usage (minutes settled before, committed after that run) is an
    // adjustment drawn at the start of this window.
    const usage: UsageCharge[] = charges.map((p, i) => {
      const late = (p.line as SelectedLine).late === true;
      return {
        atMs: late ? fromMs : Math.max(p.line.firstMinuteSec, p.line.fromSec, fromSec) * 1000,
        cost: p.cost,
        kind: late ? 'adjustment' : 'usage',
        note: late
          ? `late usage from ${isoOf(p.line.firstMinuteSec)}, settled in this run`
          : `usage ${isoOf(Math.max(p.line.fromSec, fromSec))}..${isoOf(untilSec)}`,
        ref: i,
      };
    });
    const policy: DrawDownPolicy = { allowedNegative: creditUnit?.allowedNegativeBalance, overage: overageByAccount.get(key) };
    const { postings, report: window } = settleWindow(state, { fromMs, untilMs }, grantsByAccount.get(key) ?? [], usage, policy, existing);
    const r = customerReport(customer);
    if (charges.length > 0) r.deducted[unit] = formatAmount(window.deducted);
    if (window.overLimit.gt(0)) r.overLimit[unit] = formatAmount(window.overLimit);
    for (const [field, amount] of [['granted', window.granted], ['expired', window.expired], ['carried', window.carried], ['overage', window.overage]] as const) {
      if (amount.gt(0)) (r[field] ??= {})[unit] = formatAmount(amount);
    }
    postings.forEach((posting, index) => {
      const charge = posting.ref === undefined ? undefined : charges[posting.ref];
      entries.push({
        entryId: entryId(posting.kind, [customer, unit, runId, index]),
        customer,
        unit,
        kind: posting.kind,
        amount: posting.amount,
        effectiveAtSec: Math.floor(posting.atMs / 1000),
        postedAtSec: nowSec,
        runId,
        meter: charge?.line.meter ?? '',
        dimensions: charge?.line.dimensions ?? '',
        quantity: charge?.line.quantity ?? money(0),
        rateVersion: charge?.rateVersion ?? '',
        source: posting.note,
        blockId: posting.blockId,
        // A grant's block keeps its expiry in the ledger, so replaying the ledger rebuilds it.
        expiresAtSec: posting.kind === 'grant' ? Math.floor((state.blocks.get(posting.blockId)?.expiresAtMs ?? 0) / 1000) : 0,
      });
    });
    snapshots.push({ customer, unit, asOfSec: untilSec, runId, inputsBeforeSec: startedAtSec, balance: balanceOf(state), state: encodeState(state) });
    accountsDone++;
    if (onProgress !== undefined && (accountsDone % progressStep === 0 || accountsDone === accounts.length || ((accountsDone & 255) === 0 && Date.now() - progressAtMs >= progressIntervalMs))) {
      progressAtMs = Date.now();
      onProgress({ runId, accountsDone, accountsTotal: accounts.length, entries: entries.length });
    }
  }

  onPhase('settle accounts');
  const already = newRun ? new Set<string>() : await entryIdsOfRun(store, runId);
  const fresh = already.size === 0 ? entries : entries.filter((e) => !already.has(e.entryId));
  await writeEntries(store, fresh);
  crashPoint('settle-after-ledger');
  onPhase('write ledger');
  // Before completion: a crash here re-runs the window, which writes the same snapshots again.
  await writeSnapshots(store, snapshots);
  onPhase('write snapshots');
  // Terms whose end this window contains are closed now: their statements, from the ledger just written.
  const terms = closedTerms(catalog, fromMs, untilMs, runReportTermsMax).sort((a, b) => a.endSec - b.endSec);
  if (terms.length > 0) {
    for (const statement of await statementsOf(store, catalog, terms, untilSec)) (customerReport(statement.customer).closedTerms ??= []).push(statement);
    onPhase('close terms');
  }
  report.entriesPosted = fresh.length;
  report.entriesAlreadyPosted = entries.length - fresh.length;
  // Recorded last: until this row exists the run counts as interrupted and
  // the next call finishes exactly this window.
  await recordRun(store, run, nowSec, 'completed', JSON.stringify(storedReport(report)));
  onPhase('record run');
  return report;
}
