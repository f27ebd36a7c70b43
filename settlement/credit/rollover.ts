/**
 * What happens to a grant's unused credits at the end of its period (SPEC §4):
 *
 * | rollover      | at the period end                                          |
 * |---------------|------------------------------------------------------------|
 * | none          | the block expires (its expiry is the period end)           |
 * | unlimited     | nothing: the block never expires                           |
 * | time-limited  | nothing yet: the block expires `duration` after the end    |
 * | capped        | keep min(percent × unused, maximum); expire the rest now   |
 *
 * None and time-limited are plain block expiries (`expireDue`); capped needs
 * the grant's unused total, so it runs here, at each boundary of the grant.
 */
import { Decimal } from 'decimal.js';
import { money } from '../../shared/money.js';
import type { Rollover } from '../../catalog/plans.js';
import { addDuration } from '../../catalog/periods.js';
import { applyPosting, compareBlocks, type CreditState, type Posting } from './blocks.js';

export type { Rollover };

/** When a block granted for a period ending at `periodEndMs` expires by time; undefined = not by time. */
export function grantExpiry(rollover: Rollover, periodEndMs: number): number | undefined {
  switch (rollover.kind) {
    case 'none':
      return periodEndMs;
    case 'time_limited':
      return addDuration(periodEndMs, rollover.duration);
    case 'unlimited':
    case 'capped':
      return undefined;
  }
}

/**
 * Capped rollover at a period end: of the grant's unused credits U (over all
 * its blocks, carried ones included), min(percent × U, maximum) stay and the
 * rest expires, taken from the blocks in burn order so the carried credits
 * sit in the newest block. The carry is rounded down to the ledger's 9
 * places: a cap never rounds up.
 */
export function capAtPeriodEnd(
  state: CreditState,
  grantBlockIds: readonly string[],
  rollover: Extract<Rollover, { kind: 'capped' }>,
  periodEndMs: number,
): { postings: Posting[]; unused: Decimal; carried: Decimal; expired: Decimal } {
  const blocks = grantBlockIds
    .map((id) => state.blocks.get(id))
    .filter((b) => b !== undefined && b.remaining.gt(0))
    .sort((a, b) => compareBlocks(a!, b!));
  const unused = blocks.reduce((sum, b) => sum.plus(b!.remaining), money(0));
  const byPercent = unused.times(rollover.percent).dividedBy(100).toDecimalPlaces(9, Decimal.ROUND_DOWN);
  const carried = byPercent.lessThan(rollover.maximum) ? byPercent : rollover.maximum;
  let toExpire = unused.minus(carried);
  const postings: Posting[] = [];
  for (const block of blocks) {
    if (!toExpire.gt(0)) break;
    const take = block!.remaining.lessThan(toExpire) ? block!.remaining : toExpire;
    const posting: Posting = {
      kind: 'expiry',
      amount: take.negated(),
      blockId: block!.id,
      atMs: periodEndMs,
      note: `capped rollover: ${rollover.percent.toString()}% of unused, at most ${rollover.maximum.toString()}`,
    };
    applyPosting(state, posting);
    postings.push(posting);
    toExpire = toExpire.minus(take);
  }
  return { postings, unused, carried, expired: unused.minus(carried) };
}
