/**
 * A settlement run over [from, until): read aggregated usage, price it, post
 * one `usage` entry per (customer, unit, meter, dimensions, rate version), and
 * record the run. Entry ids derive from the window and what was priced, so a
 * re-run — after success or after a crash at any point — posts nothing new.
 */
import { dropOldFlushBounds } from '../shared/clickhouse/flush-bounds.js';
import { dropSettledUsage } from './usage-retention.js';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { settledUntil } from '../shared/clickhouse/settlement-runs.js';
import { readWatermarks } from '../shared/clickhouse/usage-minute.js';
import { assertCaughtUp, assertUsageInOrder } from '../shared/clickhouse/replication.js';
import { settings } from '../shared/config.js';
import { DrawdownError } from '../shared/errors.js';
import { crashPoint } from '../shared/fault.js';
import { formatAmount, money } from '../shared/money.js';
import {
  dropExpiredSnapshots,
  entryId,
  entryIdsOfRun,
  writeEntries,
  writeSnapshots,
  type CreditSnapshot,
  type LedgerEntry,
} from './ledger.js';
import { balanceOf, emptyState, encodeState, type Block, type DrawDownPolicy } from './credit/blocks.js';
import { settleWindow, type UsageCharge } from './credit/timeline.js';
import { grantSchedules } from './credit/schedule.js';
import { loadCreditInputs, type CreditInputs } from './credit-inputs.js';
import { accountInvariantProblems } from './credit/invariants.js';
import { postingQuantities } from './credit/quantity-shares.js';
import { manualAccounts } from './adjustments.js';
import { priceOutstanding, priceUsage, type PricedLine, type PricingOutcome } from './price-usage.js';
import { storedReport, type CustomerReport, type SettlementReport } from './report.js';
import { findRun, interruptedRun, lastCompletedRun, previousRun, recordRun, runIdFor, type RunRecord } from './runs.js';
import { closedTerms, runReportTermsMax, statementsOf } from './statement.js';
import { priorUsageFor, readSelectedUsage, type SelectedLine } from './usage-reader.js';
import { foundLines, outstandingForRun, recordUnpriced, type OutstandingLine } from './unpriced.js';

/** A report of a run that has posted nothing yet. */
function emptyReport(runId: string, fromSec: number, untilSec: number, request: SettleRequest): SettlementReport {
  return { runId, fromSec, untilSec, entriesPosted: 0, entriesAlreadyPosted: 0, ...revisionOf(request), customers: {} };
}

function revisionOf(request: SettleRequest): Pick<SettlementReport, 'catalogRevision'> {
  return request.catalogRevision === undefined ? {} : { catalogRevision: request.catalogRevision };
}

export interface SettleRequest {
  untilSec: number;
  /** Defaults to where the previous run ended. */
  fromSec?: number;
  nowSec?: number;
  /** The catalog revision `catalog` is, for the report (`catalog_revision`). */
  catalogRevision?: number;
  /**
   * After the run, credit snapshot months older than its end minus this many days are dropped (default:
   * DRAWDOWN_SNAPSHOT_RETENTION_DAYS's).
   */
  snapshotRetentionDays?: number;
  /**
   * After the run, flush months of minute usage older than its end minus this many months are dropped once
   * settled (default: DRAWDOWN_USAGE_RETENTION_MONTHS's; settlement/usage-retention.ts).
   */
  usageRetentionMonths?: number;
  /** Called as each phase of the run ends (benchmarks and logs). */
  onPhase?: (phase: string) => void;
  /**
   * Called while accounts are settled: about ten times a run, and at least every `progressIntervalMs` (logs,
   * `drawdown settle`).
   */
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
    report.snapshotMonthsDropped = await dropExpiredSnapshots(
      store,
      newest,
      request.snapshotRetentionDays ?? settings.snapshotRetentionDays.default,
    );
    request.onPhase?.('snapshot retention');
    await dropOldFlushBounds(store, newest);
    const usage = await dropSettledUsage(
      store,
      await lastCompletedRun(store),
      request.usageRetentionMonths ?? settings.usageRetentionMonths.default,
    );
    if (usage.dropped.length > 0) report.usageMonthsDropped = usage.dropped;
    request.onPhase?.('usage retention');
  }
  return report;
}

/**
 * A run's inputs are the entries posted before the second it starts in (posted_at is stored in whole seconds).
 * Starting on a fresh second makes everything posted earlier in the current one — a purchase made just before
 * the run, say — an input of this run rather than of the next.
 */
async function nextWholeSecond(): Promise<number> {
  const currentSec = Math.floor(Date.now() / 1000);
  // A timer may fire a moment before Date.now() reaches its deadline: wait until the second has really changed.
  while (Math.floor(Date.now() / 1000) <= currentSec)
    await new Promise((resolve) => setTimeout(resolve, 1_001 - (Date.now() % 1_000)));
  return Math.floor(Date.now() / 1000);
}

/** The tables a run reads besides usage_minute (whose own check is assertUsageInOrder). */
const settlementTables = [
  'settlement_runs',
  'ledger_entries',
  'credit_snapshots',
  'unpriced_usage',
  'catalog_revisions',
  'catalog_commits',
] as const;

/** The runs of one settle call: an interrupted one first, then the requested window. */
async function settleRuns(store: Store, catalog: Catalog, request: SettleRequest): Promise<SettlementReport> {
  const untilSec = request.untilSec;
  if (untilSec % 60 !== 0)
    throw new DrawdownError('request_invalid', 'until must fall on a whole minute (usage is aggregated per minute)');
  if (request.fromSec !== undefined && request.fromSec % 60 !== 0)
    throw new DrawdownError('request_invalid', 'from must fall on a whole minute');
  // An explicit window must hold time: a zero-length or inverted one is a mistake, never a stored run.
  if (request.fromSec !== undefined && untilSec <= request.fromSec) throw windowProblem('until must be after from');
  const nowSec = request.nowSec ?? (await nextWholeSecond());
  // On a cluster, the run's own records must all be on the replica read: a
  // cursor or ledger missing a part would settle a window twice.
  await assertCaughtUp(store, settlementTables);

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
      throw windowProblem(
        `until ${new Date(untilSec * 1000).toISOString()} is before the settled time (settled until ${new Date(fromSec * 1000).toISOString()}); to re-run a past window give its exact from and until`,
      );
    }
    return resumed ?? emptyReport(runId, fromSec, untilSec, request);
  }
  if (fromSec < cursor) {
    // Re-running a settled window exactly is a no-op (same inputs, same ids);
    // any other overlap with settled time would price usage twice.
    const earlier = await findRun(store, runId);
    if (earlier === undefined) {
      throw new DrawdownError(
        'request_invalid',
        `window overlaps time already settled (settled until ${new Date(cursor * 1000).toISOString()})`,
      );
    }
    return executeRun(store, catalog, earlier, nowSec, request);
  }
  if (fromSec > cursor)
    throw new DrawdownError(
      'request_invalid',
      `from may not leave a gap after the settled time (settled until ${new Date(cursor * 1000).toISOString()})`,
    );
  // The snapshot is taken before the start is recorded, so the recorded run owns exactly it.
  const watermarks = Object.fromEntries([...(await readWatermarks(store))].map(([p, seq]) => [String(p), seq]));
  // Checked after the read: no usage part at or below these watermarks may still be on its way.
  await assertUsageInOrder(store);
  const run: RunRecord = { runId, fromSec, untilSec, startedAtSec: nowSec, watermarks };
  await recordRun(store, run, nowSec, 'started', '');
  return executeRun(store, catalog, run, nowSec, request, true);
}

function windowProblem(message: string): DrawdownError {
  return new DrawdownError('request_invalid', message, { problems: [{ field: 'until', code: 'range', message }] });
}

/**
 * Usage per account (customer × credit unit): each is drawn down from that
 * customer's blocks in that unit. Rated and unrated lines go into the report.
 */
function chargesByAccount(
  priced: readonly PricedLine[],
  unrated: PricingOutcome['unrated'],
  customerReport: (customer: string) => CustomerReport,
): Map<string, PricedLine[]> {
  const byAccount = new Map<string, PricedLine[]>();
  for (const p of priced) {
    const key = `${p.line.customer}\u0000${p.unit}`;
    const list = byAccount.get(key);
    if (list) list.push(p);
    else byAccount.set(key, [p]);
    const r = customerReport(p.line.customer);
    if (p.outstanding !== undefined) {
      (r.unpricedBilled ??= []).push({
        line: p.outstanding,
        rateVersion: p.rateVersion,
        unit: p.unit,
        cost: formatAmount(p.cost),
      });
      continue;
    }
    r.rated.push({
      meter: p.line.meter,
      dimensions: p.line.dimensions,
      rateVersion: p.rateVersion,
      unit: p.unit,
      quantity: formatAmount(p.line.quantity),
      cost: formatAmount(p.cost),
      late: (p.line as SelectedLine).late === true,
    });
  }
  for (const u of unrated) {
    customerReport(u.line.customer).unrated.push({
      meter: u.line.meter,
      dimensions: u.line.dimensions,
      quantity: formatAmount(u.line.quantity),
      reason: u.reason,
    });
  }
  return byAccount;
}

/** What every account of a run is settled with. */
interface AccountContext {
  catalog: Catalog;
  run: RunRecord;
  nowSec: number;
  grantsByAccount: ReturnType<typeof grantSchedules>['grantsByAccount'];
  overageByAccount: ReturnType<typeof grantSchedules>['overageByAccount'];
  isoOf: (sec: number) => string;
  customerReport: (customer: string) => CustomerReport;
}

/**
 * One account (customer × credit unit) over the run's window: its usage
 * drawn down, grants and expiries applied, the money-path invariants
 * checked, and the ledger entries and snapshot that record it. Writes
 * nothing: the run writes every account's entries at once.
 */
function settleAccount(
  context: AccountContext,
  key: string,
  charges: readonly PricedLine[],
  inputs: CreditInputs,
): { entries: LedgerEntry[]; snapshot: CreditSnapshot } {
  const { catalog, run, nowSec, grantsByAccount, overageByAccount, isoOf, customerReport } = context;
  const { runId, fromSec, untilSec, startedAtSec } = run;
  const fromMs = fromSec * 1000;
  const untilMs = untilSec * 1000;
  const [customer, unit] = key.split('\u0000') as [string, string];
  const { state, existing } = inputs;
  const creditUnit = catalog.creditUnits.get(unit);
  // A line is drawn down at its first minute of usage: blocks opened later in
  // the window (a purchase mid-window) do not cover it, blocks that expire
  // later do. Windows are short (hourly), so this minute-level approximation
  // of a line's usage is documented, not hidden.
  // Late usage (minutes settled before, committed after that run) is an
  // adjustment drawn at the start of this window.
  const usage: UsageCharge[] = charges.map((p, i) => {
    // Usage an earlier run could not price, priced now: an adjustment at the start of this window, like late usage.
    if (p.outstanding !== undefined)
      return {
        atMs: fromMs,
        cost: p.cost,
        kind: 'adjustment',
        note: `unpriced usage since ${isoOf(p.outstanding.sinceSec)} (found by ${p.outstanding.foundBy}), priced at rate card ${p.rateVersion} by this run`,
        ref: i,
      };
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
  const policy: DrawDownPolicy = {
    allowedNegative: creditUnit?.allowedNegativeBalance,
    overage: overageByAccount.get(key),
  };
  const balanceBefore = balanceOf(state);
  const blocksBefore = new Set(state.blocks.keys());
  const { postings, report: window } = settleWindow(
    state,
    { fromMs, untilMs },
    grantsByAccount.get(key) ?? [],
    usage,
    policy,
    existing,
  );
  let joined = money(0);
  for (const block of existing)
    if (block.debit === true || (!blocksBefore.has(block.id) && state.blocks.has(block.id)))
      joined = joined.plus(block.amount);
  // Checked before anything is written: a violation aborts the run with nothing posted.
  const violations = accountInvariantProblems({
    account: `${customer}/${unit}`,
    balanceBefore,
    state,
    postings,
    joined,
  });
  if (violations.length > 0)
    throw new DrawdownError('internal', `settlement run ${runId} stopped before writing: ${violations.join('; ')}`);
  const r = customerReport(customer);
  if (charges.length > 0) r.deducted[unit] = formatAmount(window.deducted);
  if (window.overLimit.gt(0)) r.overLimit[unit] = formatAmount(window.overLimit);
  for (const [field, amount] of [
    ['granted', window.granted],
    ['expired', window.expired],
    ['carried', window.carried],
    ['overage', window.overage],
  ] as const) {
    if (amount.gt(0)) (r[field] ??= {})[unit] = formatAmount(amount);
  }
  // Only the entries that draw the line's cost share its quantity; an overage entry (credits bought back for
  // money) refers to the line too but pays for none of it.
  const quantities = postingQuantities(
    postings.map((p) => ({ amount: p.amount, ref: p.kind === 'usage' || p.kind === 'adjustment' ? p.ref : undefined })),
    (ref) => charges[ref]!.line.quantity,
  );
  const entries: LedgerEntry[] = postings.map((posting, index) => {
    const charge = posting.ref === undefined ? undefined : charges[posting.ref];
    const block = state.blocks.get(posting.blockId);
    return {
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
      // The share of the line this entry paid for: a line drawn from two blocks is two entries whose quantities sum
      // to the line.
      quantity: quantities.get(index) ?? money(0),
      rateVersion: charge?.rateVersion ?? '',
      source: posting.note,
      blockId: posting.blockId,
      // A grant's block keeps its expiry in the ledger, so replaying the ledger rebuilds it; every other entry
      // drawn from a block carries the block's expiry too, so burn order can be audited from the ledger alone
      // (replay reads it only from the entry that opens the block).
      expiresAtSec: Math.floor((block?.expiresAtMs ?? 0) / 1000),
      ...grantOf(block),
    };
  });
  const snapshot: CreditSnapshot = {
    customer,
    unit,
    asOfSec: untilSec,
    runId,
    inputsBeforeSec: startedAtSec,
    balance: balanceOf(state),
    state: encodeState(state),
  };
  return { entries, snapshot };
}

/**
 * `newRun`: this call recorded the run's start just now, so it has posted
 * nothing yet and the scan for its ids (a column scan of the whole ledger)
 * is skipped; resumed runs and re-runs look.
 */
async function executeRun(
  store: Store,
  catalog: Catalog,
  run: RunRecord,
  nowSec: number,
  request: SettleRequest,
  newRun = false,
): Promise<SettlementReport> {
  const { runId, fromSec, untilSec } = run;
  const onPhase = request.onPhase ?? (() => {});
  const report = emptyReport(runId, fromSec, untilSec, request);
  const previous = await previousRun(store, fromSec);
  const excluding = previous && { untilSec: previous.untilSec, watermarks: previous.watermarks };
  const lines = await readSelectedUsage(store, catalog, {
    untilSec,
    watermarks: run.watermarks,
    excluding,
    lateBeforeSec: fromSec,
  });
  onPhase('read usage');
  const prior = await priorUsageFor(store, catalog, lines, excluding);
  onPhase('read prior usage');
  const { priced, unrated } = priceUsage(catalog, lines, prior);
  // Usage earlier runs could not price: what the catalog prices now is billed by this run, the rest stays outstanding.
  const { billed, still } = priceOutstanding(catalog, await outstandingForRun(store, run), untilSec);
  const found = foundLines(runId, unrated);
  const outstanding: OutstandingLine[] = [...still, ...found];
  onPhase('price');
  const customerReport = (customer: string): CustomerReport =>
    (report.customers[customer] ??= { rated: [], deducted: {}, unrated: [], overLimit: {} });

  const byAccount = chargesByAccount([...priced, ...billed], unrated, customerReport);
  for (const line of outstanding) (customerReport(line.customer).unpricedOutstanding ??= []).push(line);

  // Subscriptions active in the window bring their grants (and overage) even without usage.
  const fromMs = fromSec * 1000;
  const untilMs = untilSec * 1000;
  const { grantsByAccount, overageByAccount } = grantSchedules(catalog, fromMs, untilMs);
  for (const key of grantsByAccount.keys()) if (!byAccount.has(key)) byAccount.set(key, []);
  // Accounts with manual adjustments too: a credit adjustment's block may expire, and a debit must be drawn from
  // the blocks, in a window without usage (adjustments are rare: a short, indexed scan).
  for (const key of await manualAccounts(store)) if (!byAccount.has(key)) byAccount.set(key, []);

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
  const context: AccountContext = { catalog, run, nowSec, grantsByAccount, overageByAccount, isoOf, customerReport };
  onPhase('load credit state');
  const entries: LedgerEntry[] = [];
  const snapshots: CreditSnapshot[] = [];
  const onProgress = request.onProgress;
  const progressStep = Math.max(progressAccountsMin, Math.ceil(accounts.length / 10));
  let accountsDone = 0;
  let progressAtMs = Date.now();
  for (const key of accounts) {
    const { entries: accountEntries, snapshot } = settleAccount(
      context,
      key,
      byAccount.get(key)!,
      inputs.get(key) ?? { state: emptyState(), existing: [] },
    );
    for (const e of accountEntries) entries.push(e);
    snapshots.push(snapshot);
    accountsDone++;
    if (
      onProgress !== undefined &&
      (accountsDone % progressStep === 0 ||
        accountsDone === accounts.length ||
        ((accountsDone & 255) === 0 && Date.now() - progressAtMs >= progressIntervalMs))
    ) {
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
  // Before completion, like the entries: a resumed run writes the same rows (same ids) and reads the same outstanding.
  await recordUnpriced(
    store,
    run,
    nowSec,
    found,
    billed.map((p) => ({ line: p.outstanding!, rateVersion: p.rateVersion })),
  );
  crashPoint('settle-after-unpriced');
  onPhase('record unpriced usage');
  // Before completion: a crash here re-runs the window, which writes the same snapshots again.
  await writeSnapshots(store, snapshots);
  onPhase('write snapshots');
  // Terms whose end this window contains are closed now: their statements, from the ledger just written.
  const terms = closedTerms(catalog, fromMs, untilMs, runReportTermsMax).sort((a, b) => a.endSec - b.endSec);
  if (terms.length > 0) {
    for (const statement of await statementsOf(store, catalog, terms, untilSec, outstanding))
      (customerReport(statement.customer).closedTerms ??= []).push(statement);
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

/** Who granted the block an entry moves, for the ledger and statements; nothing for purchases and adjustments. */
function grantOf(block: Block | undefined): Pick<LedgerEntry, 'grantSource' | 'grantOrigin'> {
  if (block === undefined || block.source === 'purchase' || block.source === 'manual') return {};
  return { grantSource: block.source === 'grant' ? 'plan' : block.source, grantOrigin: block.origin ?? '' };
}
