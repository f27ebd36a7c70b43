/**
 * Manual adjustments an operator posts (POST /v1/customers/{id}/adjustments),
 * one `manual` ledger entry each, under the customer's Idempotency-Key:
 *
 * - a credit (amount > 0) is a block of its own, with its own expiry, that
 *   burns in the normal order (soonest expiry first; free credit, like a
 *   grant, before purchased credit on a tie), and expires unused like one;
 * - a debit (amount < 0) is posted against the balance at once and drawn
 *   from the blocks live at its effective time, in burn order, by the next
 *   settlement run, exactly as usage is (adjustment pairs that move it onto
 *   the blocks without changing the balance).
 *
 * Either way balance = Σ ledger amounts holds from the moment it is posted.
 */
import type { Decimal } from 'decimal.js';
import type { Store } from '../shared/clickhouse/store.js';
import { DrawdownError } from '../shared/errors.js';
import { formatAmount, money } from '../shared/money.js';
import { entryExists, entryId, writeEntries, type LedgerEntry } from './ledger.js';

export const adjustmentReasonLengthMax = 500;

export interface AdjustmentRequest {
  customer: string;
  unit: string;
  /** Credits: positive adds a block, negative draws down like usage. Never zero. */
  amount: Decimal;
  reason: string;
  idempotencyKey: string;
  nowSec: number;
  /** When it takes effect; at most now (default now). */
  effectiveAtSec: number;
  /** A credit's block expiry (after effectiveAtSec); undefined: it never expires. Debits have none. */
  expiresAtSec: number | undefined;
}

export interface AdjustmentResult {
  entry: LedgerEntry;
  created: boolean;
}

const sourcePrefix = (amount: Decimal): string => (amount.isNegative() ? 'manual debit: ' : 'manual credit: ');

/** Whether `entry` records what `request` asks for: a retry under the same key must ask for the same thing. */
function sameRequest(entry: LedgerEntry, request: AdjustmentRequest): boolean {
  return (
    entry.unit === request.unit &&
    entry.amount.equals(request.amount) &&
    entry.effectiveAtSec === request.effectiveAtSec &&
    entry.expiresAtSec === (request.expiresAtSec ?? 0) &&
    entry.source === `${sourcePrefix(request.amount)}${request.reason}`
  );
}

/** Adjustments being written by this process, by entry id, per store (as for purchases: one write per key). */
const inFlight = new WeakMap<Store, Map<string, Promise<AdjustmentResult>>>();

export async function postAdjustment(store: Store, request: AdjustmentRequest): Promise<AdjustmentResult> {
  const id = entryId('manual', [request.customer, request.idempotencyKey]);
  let pending = inFlight.get(store);
  if (pending === undefined) inFlight.set(store, (pending = new Map()));
  const answer = (result: AdjustmentResult, created: boolean): AdjustmentResult => {
    if (!sameRequest(result.entry, request))
      throw new DrawdownError(
        'idempotency_key_reused',
        `Idempotency-Key ${JSON.stringify(request.idempotencyKey)} already posted ${result.entry.source} (${formatAmount(result.entry.amount)} ${result.entry.unit}); use a new key for a different adjustment`,
      );
    return { entry: result.entry, created };
  };
  for (let first = pending.get(id); first !== undefined; first = pending.get(id)) {
    const result = await first.catch(() => undefined);
    if (result !== undefined) return answer(result, false);
  }
  const write = async (): Promise<AdjustmentResult> => {
    const existing = await entryExists(store, request.customer, id);
    if (existing) return { entry: existing, created: false };
    const credit = request.amount.isPositive();
    const entry: LedgerEntry = {
      entryId: id,
      customer: request.customer,
      unit: request.unit,
      kind: 'manual',
      amount: request.amount,
      effectiveAtSec: request.effectiveAtSec,
      postedAtSec: request.nowSec,
      runId: '',
      meter: '',
      dimensions: '',
      quantity: money(0),
      rateVersion: '',
      // A credit is a block of its own; a debit is posted against the debt until settlement draws it from blocks.
      blockId: credit ? id : '',
      expiresAtSec: credit ? (request.expiresAtSec ?? 0) : 0,
      source: `${sourcePrefix(request.amount)}${request.reason}`,
    };
    await writeEntries(store, [entry]);
    return { entry, created: true };
  };
  const attempt: Promise<AdjustmentResult> = write().finally(() => {
    if (pending.get(id) === attempt) pending.delete(id);
  });
  pending.set(id, attempt);
  const result = await attempt;
  return answer(result, result.created);
}

/**
 * Accounts (`customer\0unit`) with manual adjustments, which every run
 * settles: a credit's block may expire, and a debit must be drawn from the
 * blocks, in windows without usage. A scan of one column of the ledger.
 */
export async function manualAccounts(store: Store): Promise<string[]> {
  const rows = await store.query(`SELECT DISTINCT customer, unit FROM ledger_entries WHERE kind = 'manual'`);
  return rows.map(([customer, unit]) => `${customer}\u0000${unit}`);
}
