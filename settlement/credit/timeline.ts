/**
 * One customer's credits in one unit over a settlement window, in time order:
 * expiries, capped rollovers, new grant periods, then usage, at each instant.
 * Pure: the state comes in (rebuilt from the ledger), postings come out.
 *
 * At the same instant the order is fixed so a boundary is never ambiguous:
 *   1. blocks whose expiry has come expire,
 *   2. capped grants whose period ends here keep their capped carry,
 *   3. grants whose period starts here are issued,
 *   4. usage at this instant draws down.
 * Windows are half-open, [from, until): an instant equal to `until` belongs
 * to the next window, so consecutive windows never process it twice.
 */
import type { Decimal } from 'decimal.js';
import { money } from '../../shared/money.js';
import {
  applyPosting,
  drawDown,
  openingKind,
  expireDue,
  openBlock,
  repayDebt,
  type BlockSource,
  type CreditState,
  type DrawDownPolicy,
  type Posting,
} from './blocks.js';
import { boundariesIn, periodAt, periodStart, type Frequency } from '../../catalog/periods.js';
import { capAtPeriodEnd, grantExpiry, type Rollover } from './rollover.js';

/** Who granted a block: a plan, an add-on, or a one-time charge (settlement/README.md). */
export type GrantSource = 'grant' | 'add_on' | 'charge';

export interface GrantSchedule {
  /** Stable identity of the grant within its subscription and version, e.g. "sub_1:monthly-credits:v2". */
  key: string;
  quantity: Decimal;
  frequency: Frequency;
  rollover: Rollover;
  /** Periods are counted from here. */
  anchorMs: number;
  /** No period starts before this (subscription start) … */
  activeFromMs: number;
  /** … or at/after this (subscription end, or the next term's version taking over). */
  activeUntilMs: number | undefined;
  /** Default `grant` (a plan's); the block's source, which the ledger and statements show. */
  source?: GrantSource;
  /** The plan, add-on or charge id. */
  origin?: string;
  /**
   * A one-time grant (a charge): one block at `atMs` instead of one per period. Its expiry is `expiresAtMs` if
   * set, else the rollover rule applied at the end of the `frequency` period (the billing term) that holds `atMs`.
   */
  once?: { atMs: number; expiresAtMs: number | undefined };
}

export interface UsageCharge {
  atMs: number;
  cost: Decimal;
  note: string;
  kind: 'usage' | 'adjustment';
  /** Passed through to the postings it causes. */
  ref?: number;
}

/**
 * An entry already in the ledger, posted outside settlement, that takes effect inside the window: a block (a
 * purchase, a credit adjustment) or, with `debit`, a debit adjustment (its id is the entry's; `amount` < 0).
 */
export interface ExistingBlock {
  atMs: number;
  id: string;
  source: BlockSource;
  amount: Decimal;
  expiresAtMs: number | undefined;
  /** A debit adjustment: already posted against the debt; settlement draws it from blocks like usage. */
  debit?: boolean;
}

export interface WindowReport {
  granted: Decimal;
  expired: Decimal;
  carried: Decimal;
  deducted: Decimal;
  intoNegative: Decimal;
  overage: Decimal;
  overLimit: Decimal;
}

export function blockIdFor(grant: GrantSchedule, periodIndex: number): string {
  return `${grant.key}:p${periodIndex}`;
}

function onceBlockId(grant: GrantSchedule): string {
  return `${grant.key}:once`;
}

function grantBlockIds(state: CreditState, grant: GrantSchedule): string[] {
  const prefix = `${grant.key}:p`;
  return [...state.blocks.keys()].filter((id) => id.startsWith(prefix));
}

function activeAt(grant: GrantSchedule, atMs: number): boolean {
  return atMs >= grant.activeFromMs && (grant.activeUntilMs === undefined || atMs < grant.activeUntilMs);
}

function activeDuring(grant: GrantSchedule, fromMs: number, untilMs: number): boolean {
  return grant.activeFromMs < untilMs && (grant.activeUntilMs === undefined || grant.activeUntilMs > fromMs);
}

export function settleWindow(
  state: CreditState,
  window: { fromMs: number; untilMs: number },
  grants: readonly GrantSchedule[],
  usage: readonly UsageCharge[],
  policy: DrawDownPolicy,
  existing: readonly ExistingBlock[] = [],
): { postings: Posting[]; report: WindowReport } {
  const { fromMs, untilMs } = window;
  const report: WindowReport = {
    granted: money(0),
    expired: money(0),
    carried: money(0),
    deducted: money(0),
    intoNegative: money(0),
    overage: money(0),
    overLimit: money(0),
  };
  const postings: Posting[] = [];

  // Every instant in [from, until) at which something happens.
  const instants = new Set<number>();
  const inWindow = (ms: number | undefined): ms is number => ms !== undefined && ms >= fromMs && ms < untilMs;
  for (const grant of grants) {
    if (grant.once !== undefined) {
      if (inWindow(grant.once.atMs)) instants.add(grant.once.atMs);
      const termEndMs = periodAt(grant.anchorMs, grant.frequency, grant.once.atMs).endMs;
      if (grant.rollover.kind === 'capped' && grant.once.expiresAtMs === undefined && inWindow(termEndMs))
        instants.add(termEndMs);
      continue;
    }
    // Only the grant's active time matters (and its end, where a capped rollover
    // happens): a first window from the epoch must not walk every month since 1970.
    const lo = Math.max(fromMs, grant.activeFromMs);
    const hi = Math.min(untilMs - 1, grant.activeUntilMs ?? Number.POSITIVE_INFINITY);
    if (lo > hi) continue;
    const first = periodStart(grant.anchorMs, grant.frequency, periodAt(grant.anchorMs, grant.frequency, lo).index);
    if (first === lo) instants.add(first);
    for (const b of boundariesIn(grant.anchorMs, grant.frequency, lo, hi)) instants.add(b);
  }
  for (const block of state.blocks.values())
    if (block.expiresAtMs !== undefined && block.expiresAtMs >= fromMs && block.expiresAtMs < untilMs)
      instants.add(block.expiresAtMs);
  for (const charge of usage) {
    if (charge.atMs < fromMs || charge.atMs >= untilMs)
      throw new RangeError(`usage at ${new Date(charge.atMs).toISOString()} lies outside the window`);
    instants.add(charge.atMs);
  }
  for (const block of existing) instants.add(block.atMs);
  const sortedUsage = [...usage].sort((a, b) => a.atMs - b.atMs);
  let nextUsage = 0;
  // Blocks posted late (a back-dated credit adjustment) whose expiry passed before this window expire first, as
  // at any instant: expiries, then the rest. Otherwise a no-op: every other block expired in its own window (one
  // expiring exactly at the window start is taken at that instant, below, as before).
  for (const p of expireDue(state, fromMs - 1)) {
    postings.push(p);
    report.expired = report.expired.plus(p.amount.negated());
  }
  // A negative balance left from before the window is repaid first, from whatever is live now.
  postings.push(...repayDebt(state, fromMs));

  // Instants are taken smallest first; a block opened inside the window adds
  // its own expiry, which may fall later in this same window.
  for (let at = Math.min(...instants); instants.size > 0; at = Math.min(...instants)) {
    instants.delete(at);
    // 1. Expiries, including blocks granted earlier in this window.
    for (const p of expireDue(state, at)) {
      postings.push(p);
      report.expired = report.expired.plus(p.amount.negated());
    }
    for (const grant of grants) {
      if (grant.once !== undefined) {
        const opened = settleOnce(state, grant, grant.once, at);
        postings.push(...opened.postings);
        report.granted = report.granted.plus(opened.granted);
        report.expired = report.expired.plus(opened.expired);
        report.carried = report.carried.plus(opened.carried);
        if (inWindow(opened.expiresAtMs) && opened.expiresAtMs > at) instants.add(opened.expiresAtMs);
        continue;
      }
      const period = periodAt(grant.anchorMs, grant.frequency, at);
      if (period.startMs !== at) continue;
      // 2. The previous period of a capped grant ends here — if the grant was
      // active in it (a grant whose terms changed is capped once, by the terms that granted it).
      if (
        grant.rollover.kind === 'capped' &&
        activeDuring(grant, periodStart(grant.anchorMs, grant.frequency, period.index - 1), at)
      ) {
        const capped = capAtPeriodEnd(state, grantBlockIds(state, grant), grant.rollover, at);
        postings.push(...capped.postings);
        report.expired = report.expired.plus(capped.expired);
        report.carried = report.carried.plus(capped.carried);
      }
      // 3. A new period starts.
      if (activeAt(grant, at)) {
        const opened = openBlock(state, {
          id: blockIdFor(grant, period.index),
          source: grant.source ?? 'grant',
          amount: grant.quantity,
          atMs: at,
          expiresAtMs: grantExpiry(grant.rollover, period.endMs),
          note: `${grant.frequency} ${sourceLabel[grant.source ?? 'grant']} ${grant.key}, period from ${new Date(period.startMs).toISOString()}`,
          ...(grant.origin !== undefined && { origin: grant.origin }),
        });
        if (opened.length > 0) report.granted = report.granted.plus(grant.quantity);
        const expiresAt = state.blocks.get(blockIdFor(grant, period.index))?.expiresAtMs;
        if (inWindow(expiresAt) && expiresAt > at) instants.add(expiresAt);
        postings.push(...opened);
      }
    }
    // Blocks posted outside settlement (purchases) join the state when they take effect.
    for (const block of existing) {
      if (block.atMs !== at) continue;
      if (block.debit === true) {
        // A debit adjustment is in the ledger already, against the debt (blockId ''); moving it onto the blocks
        // live now, in burn order, is the repayment below: adjustment pairs that leave the balance unchanged.
        applyPosting(state, { kind: 'manual', amount: block.amount, blockId: '', atMs: at, note: '' });
        postings.push(...repayDebt(state, at));
        continue;
      }
      if (state.blocks.has(block.id)) continue;
      applyPosting(
        state,
        { kind: openingKind(block.source), amount: block.amount, blockId: block.id, atMs: at, note: '' },
        { id: block.id, source: block.source, createdAtMs: at, expiresAtMs: block.expiresAtMs },
      );
      if (inWindow(block.expiresAtMs) && block.expiresAtMs > at) instants.add(block.expiresAtMs);
      postings.push(...repayDebt(state, at));
    }
    // 4. Usage at this instant.
    while (nextUsage < sortedUsage.length && sortedUsage[nextUsage]!.atMs === at) {
      const charge = sortedUsage[nextUsage++]!;
      const result = drawDown(state, charge.cost, at, policy, charge.kind, charge.note);
      for (const p of result.postings) if (charge.ref !== undefined) p.ref = charge.ref;
      postings.push(...result.postings);
      report.deducted = report.deducted.plus(charge.cost);
      report.intoNegative = report.intoNegative.plus(result.intoNegative);
      report.overage = report.overage.plus(result.overage);
      report.overLimit = report.overLimit.plus(result.overLimit);
    }
  }
  return { postings, report };
}

const sourceLabel: Record<GrantSource, string> = { grant: 'grant', add_on: 'add-on grant', charge: 'one-time grant' };

/**
 * A one-time grant at instant `at`: its block opens at its own instant (not a period start), and a capped
 * rollover keeps min(percent × unused, maximum) of it at the end of the term it was granted in, once; the carry
 * then never expires (a one-time block has no later periods to cap it again).
 */
function settleOnce(
  state: CreditState,
  grant: GrantSchedule,
  once: NonNullable<GrantSchedule['once']>,
  at: number,
): { postings: Posting[]; granted: Decimal; expired: Decimal; carried: Decimal; expiresAtMs: number | undefined } {
  const out = { postings: [] as Posting[], granted: money(0), expired: money(0), carried: money(0) };
  const id = onceBlockId(grant);
  const term = periodAt(grant.anchorMs, grant.frequency, once.atMs);
  if (grant.rollover.kind === 'capped' && once.expiresAtMs === undefined && at === term.endMs) {
    const capped = capAtPeriodEnd(state, [id], grant.rollover, at);
    out.postings.push(...capped.postings);
    out.expired = capped.expired;
    out.carried = capped.carried;
  }
  if (at !== once.atMs) return { ...out, expiresAtMs: undefined };
  const expiresAtMs = once.expiresAtMs ?? grantExpiry(grant.rollover, term.endMs);
  const opened = openBlock(state, {
    id,
    source: grant.source ?? 'charge',
    amount: grant.quantity,
    atMs: at,
    expiresAtMs,
    note: `${sourceLabel[grant.source ?? 'charge']} ${grant.key}`,
    ...(grant.origin !== undefined && { origin: grant.origin }),
  });
  if (opened.length > 0) out.granted = grant.quantity;
  out.postings.push(...opened);
  return { ...out, expiresAtMs };
}
