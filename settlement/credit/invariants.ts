/**
 * Checks on the money path before anything is written (TigerBeetle's habit:
 * assert what must hold, and stop on a programmer error rather than post a
 * wrong ledger). For each account a run settles:
 *
 *   balance after − balance before = Σ postings + Σ purchases that joined in the window
 *   every block's remaining ≥ 0, debt ≥ 0 (going below zero is the debt's job, not a block's)
 *
 * The first says the postings are exactly the movement the rules made: a
 * ledger replay rebuilds the same state. The second says no block was drawn
 * past what it held.
 */
import type { Decimal } from 'decimal.js';
import { formatAmount, money } from '../../shared/money.js';
import { balanceOf, type CreditState, type Posting } from './blocks.js';

export interface AccountMovement {
  /** `customer/unit`, for the message. */
  account: string;
  balanceBefore: Decimal;
  state: CreditState;
  postings: readonly Posting[];
  /**
   * Blocks posted outside the run (purchases) that joined the state in its window: in the balance, not in its
   * postings.
   */
  joined: Decimal;
}

/** Every way the movement breaks the invariants, in words; empty when it holds. */
export function accountInvariantProblems(m: AccountMovement): string[] {
  const problems: string[] = [];
  let posted = money(0);
  for (const p of m.postings) posted = posted.plus(p.amount);
  const after = balanceOf(m.state);
  const change = after.minus(m.balanceBefore);
  if (!change.equals(posted.plus(m.joined))) {
    problems.push(
      `${m.account}: balance moved by ${formatAmount(change)}, but its postings sum to ${formatAmount(posted)} and purchases joined ${formatAmount(m.joined)}`,
    );
  }
  for (const block of m.state.blocks.values()) {
    if (block.remaining.isNegative())
      problems.push(`${m.account}: block ${block.id} is below zero (${formatAmount(block.remaining)})`);
  }
  if (m.state.debt.isNegative()) problems.push(`${m.account}: debt is below zero (${formatAmount(m.state.debt)})`);
  return problems;
}
