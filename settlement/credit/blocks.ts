/**
 * Credit blocks and how usage draws them down — pure rules, no I/O.
 *
 * Every grant and every purchase is a block with its own expiry. A customer's
 * state for one credit unit is its blocks plus its debt (credits used beyond
 * all blocks, within the allowed negative balance or past it):
 *
 *   balance = Σ block.remaining − debt  = Σ ledger amounts
 *
 * Each operation returns the ledger postings that move the state, so the
 * state can always be rebuilt by replaying the ledger (see `applyPosting`).
 */
import type { Decimal } from 'decimal.js';
import type { EntryKind } from '../ledger.js';
import { formatAmount, money } from '../../shared/money.js';

/**
 * `grant`: a plan's grant; `add_on`, `charge`: a grant an add-on or a one-time charge carries (ledger kind `grant`
 * all three); `manual`: a credit adjustment (settlement/adjustments.ts), free credit like a grant.
 */
export type BlockSource = 'grant' | 'add_on' | 'charge' | 'purchase' | 'manual';

/** Free credits (grants of any source, credit adjustments) burn before paid ones when their expiries tie. */
const sourceRank: Record<BlockSource, number> = { grant: 0, add_on: 0, charge: 0, manual: 0, purchase: 1 };

/** The ledger entry kind that opens a block of this source. */
export function openingKind(source: BlockSource): 'grant' | 'purchase' | 'manual' {
  return source === 'purchase' || source === 'manual' ? source : 'grant';
}

/** How snapshots (encodeState) write a source; append only, stored snapshots keep their numbers. */
const sourceCodes: readonly BlockSource[] = ['grant', 'purchase', 'manual', 'add_on', 'charge'];

export interface Block {
  id: string;
  source: BlockSource;
  /** Credits the block started with. */
  amount: Decimal;
  remaining: Decimal;
  createdAtMs: number;
  /** undefined: never expires by time (unlimited rollover, purchases, capped grants). */
  expiresAtMs: number | undefined;
  /** For a grant: the plan, add-on or charge that granted it (statements and the ledger name it). */
  origin?: string;
}

export interface CreditState {
  blocks: Map<string, Block>;
  debt: Decimal;
}

/** One ledger movement; `blockId` '' means the debt rather than a block. */
export interface Posting {
  kind: EntryKind;
  amount: Decimal;
  blockId: string;
  atMs: number;
  note: string;
  /** Which usage charge caused it, for the caller's bookkeeping. */
  ref?: number;
}

export function emptyState(): CreditState {
  return { blocks: new Map(), debt: money(0) };
}

export function balanceOf(state: CreditState): Decimal {
  let total = money(0).minus(state.debt);
  for (const block of state.blocks.values()) total = total.plus(block.remaining);
  return total;
}

/**
 * Burn order (SPEC §5): soonest-expiring first (never-expiring last); ties:
 * granted before purchased, then oldest first; the id makes it total, so the
 * same state always burns the same way.
 */
export function compareBlocks(a: Block, b: Block): number {
  const ea = a.expiresAtMs ?? Number.POSITIVE_INFINITY;
  const eb = b.expiresAtMs ?? Number.POSITIVE_INFINITY;
  if (ea !== eb) return ea < eb ? -1 : 1;
  if (sourceRank[a.source] !== sourceRank[b.source]) return sourceRank[a.source] - sourceRank[b.source];
  if (a.createdAtMs !== b.createdAtMs) return a.createdAtMs - b.createdAtMs;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Replays one posting onto the state — the only place state changes. */
export function applyPosting(
  state: CreditState,
  posting: Posting,
  opening?: Omit<Block, 'remaining' | 'amount'>,
): void {
  if (posting.blockId === '') {
    state.debt = state.debt.minus(posting.amount);
    return;
  }
  const existing = state.blocks.get(posting.blockId);
  if (existing === undefined) {
    if (opening === undefined || posting.amount.isNegative())
      throw new Error(`posting to unknown block ${posting.blockId}`);
    state.blocks.set(posting.blockId, { ...opening, amount: posting.amount, remaining: posting.amount });
    return;
  }
  existing.remaining = existing.remaining.plus(posting.amount);
  // A block below zero would mean we spent credits that were never there.
  if (existing.remaining.isNegative()) throw new Error(`block ${posting.blockId} would go below zero`);
}

export interface OpenBlock {
  id: string;
  source: BlockSource;
  amount: Decimal;
  atMs: number;
  expiresAtMs: number | undefined;
  note: string;
  origin?: string;
}

/**
 * Adds a grant or purchase. Outstanding debt is repaid from the new block at
 * once (an adjustment pair that leaves the balance unchanged), so no block
 * holds credits while the customer owes credits.
 */
export function openBlock(state: CreditState, block: OpenBlock): Posting[] {
  if (state.blocks.has(block.id)) return [];
  const posting: Posting = {
    kind: openingKind(block.source),
    amount: block.amount,
    blockId: block.id,
    atMs: block.atMs,
    note: block.note,
  };
  applyPosting(state, posting, {
    id: block.id,
    source: block.source,
    createdAtMs: block.atMs,
    expiresAtMs: block.expiresAtMs,
    ...(block.origin !== undefined && { origin: block.origin }),
  });
  return [posting, ...repayDebt(state, block.atMs)];
}

/**
 * Repays the negative balance from live blocks, in burn order, as adjustment
 * pairs that leave the balance unchanged — so no block holds credits while
 * the customer owes credits.
 */
export function repayDebt(state: CreditState, atMs: number): Posting[] {
  const postings: Posting[] = [];
  const live = [...state.blocks.values()]
    .filter((b) => b.remaining.gt(0) && (b.expiresAtMs === undefined || b.expiresAtMs > atMs))
    .sort(compareBlocks);
  for (const block of live) {
    if (!state.debt.gt(0)) break;
    const repay = minOf(state.debt, block.remaining);
    const pair: Posting[] = [
      { kind: 'adjustment', amount: repay, blockId: '', atMs, note: `negative balance repaid from ${block.id}` },
      { kind: 'adjustment', amount: repay.negated(), blockId: block.id, atMs, note: 'repays negative balance' },
    ];
    for (const p of pair) applyPosting(state, p);
    postings.push(...pair);
  }
  return postings;
}

function minOf(a: Decimal, b: Decimal): Decimal {
  return a.lessThan(b) ? a : b;
}

/** Expires what is left of every block whose time has come (expiresAt ≤ atMs). */
export function expireDue(state: CreditState, atMs: number): Posting[] {
  const due = [...state.blocks.values()]
    .filter((b) => b.expiresAtMs !== undefined && b.expiresAtMs <= atMs && b.remaining.gt(0))
    .sort(compareBlocks);
  return due.map((block) => {
    const posting: Posting = {
      kind: 'expiry',
      amount: block.remaining.negated(),
      blockId: block.id,
      atMs: block.expiresAtMs!,
      note: 'unused credits expired',
    };
    applyPosting(state, posting);
    return posting;
  });
}

export interface DrawDownPolicy {
  /** How far below zero the balance may go; undefined = not at all. */
  allowedNegative: Decimal | undefined;
  /** Overage price per credit, if the plan bills overage for this unit. */
  overage: { pricePerCredit: Decimal; currency: string } | undefined;
}

export interface DrawDownResult {
  postings: Posting[];
  fromBlocks: Decimal;
  intoNegative: Decimal;
  overage: Decimal;
  /** Credits used past the allowance with no overage to bill: posted, and the customer is over limit. */
  overLimit: Decimal;
}

/**
 * Deducts `cost` credits at `atMs`: from live blocks in burn order, then into
 * the allowed negative balance, then as overage (a usage posting to the debt
 * offset by an overage posting billed at the plan's price), else as usage
 * past the limit. Usage is never refused here: it already happened.
 */
export function drawDown(
  state: CreditState,
  cost: Decimal,
  atMs: number,
  policy: DrawDownPolicy,
  kind: 'usage' | 'adjustment',
  note: string,
): DrawDownResult {
  if (cost.isNegative()) throw new RangeError('cost must be ≥ 0');
  const result: DrawDownResult = {
    postings: [],
    fromBlocks: money(0),
    intoNegative: money(0),
    overage: money(0),
    overLimit: money(0),
  };
  const post = (posting: Posting): void => {
    applyPosting(state, posting);
    result.postings.push(posting);
  };
  let left = cost;
  const live = [...state.blocks.values()]
    .filter((b) => b.remaining.gt(0) && (b.expiresAtMs === undefined || b.expiresAtMs > atMs))
    .sort(compareBlocks);
  for (const block of live) {
    if (!left.gt(0)) break;
    const take = minOf(block.remaining, left);
    post({ kind, amount: take.negated(), blockId: block.id, atMs, note });
    result.fromBlocks = result.fromBlocks.plus(take);
    left = left.minus(take);
  }
  if (!left.gt(0)) return result;

  const headroom = policy.allowedNegative === undefined ? money(0) : policy.allowedNegative.minus(state.debt);
  if (headroom.gt(0)) {
    const take = minOf(headroom, left);
    post({ kind, amount: take.negated(), blockId: '', atMs, note: `${note}; into the allowed negative balance` });
    result.intoNegative = take;
    left = left.minus(take);
  }
  if (!left.gt(0)) return result;

  post({ kind, amount: left.negated(), blockId: '', atMs, note: `${note}; past the allowed balance` });
  if (policy.overage) {
    const billed = policy.overage.pricePerCredit.times(left);
    post({
      kind: 'overage',
      amount: left,
      blockId: '',
      atMs,
      note: `overage: ${formatAmount(left)} credits at ${formatAmount(policy.overage.pricePerCredit)} ${policy.overage.currency} = ${formatAmount(billed)} ${policy.overage.currency}`,
    });
    result.overage = left;
  } else {
    result.overLimit = left;
  }
  return result;
}

/**
 * A state as text, for the snapshot settlement writes with every run
 * (settlement/README.md): debt and the blocks that still hold credits.
 * Blocks used up or expired are left out — nothing can post to them again,
 * and a grant period is issued only inside the window that contains its start.
 */
export function encodeState(state: CreditState): string {
  const blocks: (string | number | null)[][] = [];
  for (const b of state.blocks.values()) {
    if (b.remaining.gt(0)) {
      const row = [
        b.id,
        sourceCodes.indexOf(b.source),
        formatAmount(b.amount),
        formatAmount(b.remaining),
        b.createdAtMs,
        b.expiresAtMs ?? null,
      ];
      // Only grants name an origin; other rows stay as they were written before origins existed.
      if (b.origin !== undefined) row.push(b.origin);
      blocks.push(row);
    }
  }
  return JSON.stringify([formatAmount(state.debt), blocks]);
}

export function decodeState(text: string): CreditState {
  const [debt, blocks] = JSON.parse(text) as [
    string,
    [string, number, string, string, number, number | null, string?][],
  ];
  const state: CreditState = { blocks: new Map(), debt: money(debt) };
  for (const [id, source, amount, remaining, createdAtMs, expiresAtMs, origin] of blocks) {
    const known = sourceCodes[source];
    if (known === undefined) throw new Error(`credit snapshot names an unknown block source ${source}`);
    state.blocks.set(id, {
      id,
      source: known,
      amount: money(amount),
      remaining: money(remaining),
      createdAtMs,
      expiresAtMs: expiresAtMs ?? undefined,
      ...(origin !== undefined && { origin }),
    });
  }
  return state;
}
