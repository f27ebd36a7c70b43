/**
 * grant.expiring — the pure rule: which of an account's credit blocks are
 * expiring, and the notices that announces. No I/O: the evaluator applies it
 * under compare-and-set on the account's crossing state (crossing-store.ts),
 * as the balance crossings are, so each (block, expiry instant) is decided
 * once by whichever process gets there first.
 *
 *   a block is expiring at `now`  ⇔  remaining > 0  and  now < expires_at ≤ now + lead
 *
 * `remaining` is the ledger's (what settlement left in the block) less what
 * is drawn but not yet settled — pending usage and open holds — taken from
 * the blocks in burn order (credit/blocks.ts compareBlocks: soonest expiry
 * first), which is how the next run will take it. So a block whose credits
 * will be gone before its lead time starts is never announced, and one that
 * still holds credits at `expires_at − lead` is announced once, from then
 * until it expires. Blocks that never expire (purchases, unlimited or capped
 * rollover) never are. A block carried by time-limited rollover keeps its
 * own expiry (its period end + the duration), and is announced by that.
 *
 * The notice id is hash(customer, unit, 'grant.expiring', block, expires_at):
 * the same in every process and retry; a block whose expiry changed (it
 * cannot today: expiries are fixed when a block opens) would be a new one.
 */
import type { Decimal } from 'decimal.js';
import { compareBlocks, type Block } from '../credit/blocks.js';
import { formatAmount, money } from '../../shared/money.js';
import type { CrossingState, ExpiringMark, OutboxItem } from './crossings.js';
import { noticeId } from './notice.js';

/** A block with credits left, as the ledger has it (ledger.ts blocksExpiringBetween). */
export type HeldBlock = Pick<Block, 'id' | 'source' | 'remaining' | 'createdAtMs' | 'expiresAtMs' | 'origin'>;

export interface ExpiringBlock {
  block: HeldBlock;
  /** Credits left after the unsettled draw (> 0). */
  remaining: Decimal;
}

/** Marks are kept this long after the expiry they announced: processes whose clocks lag still see them. */
export const expiringMarkKeepMs = 86_400_000;
/** Marks per account; past it no new block is announced for the account until old ones are pruned (counted). */
export const expiringMarksMax = 1_000;
/** Notices one decision adds, soonest expiry first; the rest wait for the next check. */
export const expiringPerDecisionMax = 64;

/**
 * The blocks expiring at `nowMs` within `leadMs`, soonest first, each with what is left of it after `draw`
 * (pending usage and open holds, ≥ 0) is taken from the live blocks in burn order. `blocks` should hold every live
 * block of the account that expires no later than `nowMs + leadMs`: a block left out would leave its share of the
 * draw to later blocks, which then show less than they hold (never more).
 */
export function expiringBlocks(
  blocks: readonly HeldBlock[],
  draw: Decimal,
  nowMs: number,
  leadMs: number,
): ExpiringBlock[] {
  const live = blocks
    .filter((b) => b.remaining.gt(0) && (b.expiresAtMs === undefined || b.expiresAtMs > nowMs))
    .sort((a, b) => compareBlocks({ ...a, amount: a.remaining }, { ...b, amount: b.remaining }));
  let left = draw.isNegative() ? money(0) : draw;
  const out: ExpiringBlock[] = [];
  for (const block of live) {
    const take = block.remaining.lessThan(left) ? block.remaining : left;
    left = left.minus(take);
    const remaining = block.remaining.minus(take);
    if (block.expiresAtMs === undefined || block.expiresAtMs > nowMs + leadMs) break;
    if (remaining.gt(0)) out.push({ block, remaining });
  }
  return out;
}

/** `grant_source` as notices and the ledger name it: a plan's grant is `plan`. */
export function grantSourceOf(block: HeldBlock): string {
  return block.source === 'grant' ? 'plan' : block.source;
}

export function expiringNoticeId(customer: string, unit: string, block: string, expiresAtMs: number): string {
  return noticeId([customer, unit, 'grant.expiring', block, expiresAtMs]);
}

/**
 * The state after announcing `expiring` (expiringBlocks' answer) at `nowMs`: each block not announced before gets a
 * mark and a grant.expiring notice in the outbox, in the same state. Marks older than a day past their expiry are
 * dropped. Returns `state` itself when nothing changes, so a caller writes only real changes.
 */
export function decideExpiring(
  account: {
    customer: string;
    unit: string;
    names?: { unit_name: string | null; unit_internal_name: string | null };
  },
  state: CrossingState,
  expiring: readonly ExpiringBlock[],
  nowMs: number,
  lead: { text: string },
): { state: CrossingState; added: OutboxItem[]; deferred: number } {
  const { customer, unit } = account;
  const marks: Record<string, ExpiringMark> = {};
  let pruned = false;
  for (const [id, mark] of Object.entries(state.expiring ?? {})) {
    if (mark.expiresAtMs + expiringMarkKeepMs < nowMs) pruned = true;
    else marks[id] = mark;
  }
  const added: OutboxItem[] = [];
  let deferred = 0;
  for (const { block, remaining } of expiring) {
    const expiresAtMs = block.expiresAtMs!;
    const id = expiringNoticeId(customer, unit, block.id, expiresAtMs);
    if (id in marks) continue;
    if (Object.keys(marks).length >= expiringMarksMax || added.length >= expiringPerDecisionMax) {
      deferred++;
      continue;
    }
    marks[id] = { block: block.id, expiresAtMs, decidedMs: nowMs };
    added.push({
      notice: {
        id,
        type: 'grant.expiring',
        timestamp: new Date(nowMs).toISOString(),
        data: {
          customer,
          unit,
          ...account.names,
          block: block.id,
          grant_source: grantSourceOf(block),
          grant_origin: block.origin ?? null,
          remaining: formatAmount(remaining),
          expires_at: new Date(expiresAtMs).toISOString(),
          expiring_within: lead.text,
        },
      },
    });
  }
  if (added.length === 0 && !pruned) return { state, added, deferred };
  return { state: { ...state, expiring: marks, outbox: [...state.outbox, ...added] }, added, deferred };
}
