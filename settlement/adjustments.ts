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
import { KeyedWrites } from './keyed-writes.js';

export const adjustmentReasonLengthMax = 500;

export interface AdjustmentRequest {
  customer: string;
  unit: string;
  /** Credits: positive adds a block, negative draws down like usage. Never zero. */
  amount: Decimal;
  reason: string;
  idempotencyKey: string;
  nowSec: number;
  /** When it takes effect, at most now; undefined: now (and a retry that leaves it out is the same adjustment). */
  effectiveAtSec: number | undefined;
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
    (request.effectiveAtSec === undefined || entry.effectiveAtSec === request.effectiveAtSec) &&
    entry.expiresAtSec === (request.expiresAtSec ?? 0) &&
    entry.source === `${sourcePrefix(request.amount)}${request.reason}`
  );
}

/** Adjustments being written by this process (keyed-writes.ts). */
const writes = new KeyedWrites<AdjustmentResult>();

export async function postAdjustment(store: Store, request: AdjustmentRequest): Promise<AdjustmentResult> {
  const id = entryId('manual', [request.customer, request.idempotencyKey]);
  const answer = (result: AdjustmentResult, created: boolean): AdjustmentResult => {
    if (!sameRequest(result.entry, request))
      throw new DrawdownError(
        'idempotency_key_reused',
        `Idempotency-Key ${JSON.stringify(request.idempotencyKey)} already posted ${result.entry.source} (${formatAmount(result.entry.amount)} ${result.entry.unit}); use a new key for a different adjustment`,
      );
    return { entry: result.entry, created };
  };
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
      effectiveAtSec: request.effectiveAtSec ?? request.nowSec,
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
  const { result, waited } = await writes.run(store, id, write);
  return answer(result, !waited && result.created);
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
