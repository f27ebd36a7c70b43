/**
 * What a settlement run starts each account from: its credit state at the
 * window start and the blocks bought inside the window, fixed so that a
 * re-run computes the very same postings.
 */
import type { Store } from '../shared/clickhouse/store.js';
import { entriesOf, entriesOutsideSettlementSince, latestSnapshots, type LedgerEntry } from './ledger.js';
import { applyPosting, decodeState, emptyState, type CreditState } from './credit/blocks.js';
import type { ExistingBlock } from './credit/timeline.js';
import type { RunRecord } from './runs.js';

/** Whether an entry opens a block: grants, purchases and credit adjustments (a `manual` entry with a block). */
function opensBlock(e: LedgerEntry): e is LedgerEntry & { kind: 'grant' | 'purchase' | 'manual' } {
  return (e.kind === 'grant' || e.kind === 'purchase' || e.kind === 'manual') && e.blockId !== '' && e.amount.gt(0);
}

/** Replays one ledger entry onto a credit state. */
function replay(state: CreditState, e: LedgerEntry): void {
  const opening =
    opensBlock(e) && !state.blocks.has(e.blockId)
      ? {
          id: e.blockId,
          // A grant's block keeps who granted it (add-on, charge, plan), as the run that opened it had it.
          source:
            e.kind === 'grant' && e.grantSource !== undefined && e.grantSource !== 'plan' ? e.grantSource : e.kind,
          createdAtMs: e.effectiveAtSec * 1000,
          expiresAtMs: e.expiresAtSec === 0 ? undefined : e.expiresAtSec * 1000,
          ...(e.kind === 'grant' && e.grantOrigin && { origin: e.grantOrigin }),
        }
      : undefined;
  applyPosting(
    state,
    { kind: e.kind, amount: e.amount, blockId: e.blockId, atMs: e.effectiveAtSec * 1000, note: '' },
    opening,
  );
}

/**
 * Block openings first within a second: a debt repayment from a new block shares its second and may sort before it by
 * id.
 */
function replayOrder(a: LedgerEntry, b: LedgerEntry): number {
  const opens = (e: LedgerEntry): number => (opensBlock(e) ? 0 : 1);
  return (
    a.effectiveAtSec - b.effectiveAtSec ||
    opens(a) - opens(b) ||
    (a.entryId < b.entryId ? -1 : a.entryId > b.entryId ? 1 : 0)
  );
}

export interface CreditInputs {
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
export async function loadCreditInputs(
  store: Store,
  accounts: readonly string[],
  run: RunRecord,
): Promise<Map<string, CreditInputs>> {
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
  const outside =
    snapshots.size === 0 ? [] : await entriesOutsideSettlementSince(store, untilSec, sinceAsOf, sincePosted);
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
      if (
        snapshot !== undefined &&
        (e.runId !== '' || (e.effectiveAtSec < snapshot.asOfSec && e.postedAtSec < snapshot.inputsBeforeSec))
      )
        continue;
      if (e.effectiveAtSec < fromSec) replay(state, e);
      else if (opensBlock(e) && e.runId === '') {
        existing.push({
          atMs: e.effectiveAtSec * 1000,
          id: e.blockId,
          source: e.kind,
          amount: e.amount,
          expiresAtMs: e.expiresAtSec === 0 ? undefined : e.expiresAtSec * 1000,
        });
      } else if (e.kind === 'manual' && e.runId === '' && e.blockId === '' && e.amount.isNegative()) {
        // A debit adjustment inside the window: drawn from the blocks live at its instant (timeline.ts).
        existing.push({
          atMs: e.effectiveAtSec * 1000,
          id: e.entryId,
          source: 'manual',
          amount: e.amount,
          expiresAtMs: undefined,
          debit: true,
        });
      }
    }
    out.set(key, { state, existing });
  }
  return out;
}
