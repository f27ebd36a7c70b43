/**
 * The pure rule of balance notices: given what an account's conditions were
 * (its crossing state) and the figures read now, which conditions crossed,
 * and the notices each crossing emits. No I/O: crossing-store.ts applies it
 * under compare-and-set, so every process agrees on each episode.
 *
 *   condition      below when                     crossing down emits       back up emits
 *   low:<T>        available < T                  balance.low               balance.recovered
 *   exhausted      available + allowance ≤ 0      balance.exhausted         balance.recovered
 *   over_limit     available + allowance < 0      balance.over_limit        balance.recovered
 *   top_up:<B>     available < B                  top_up.requested (≤ max_per_day a UTC day)   —
 *
 * Every downward crossing opens an *episode* numbered from the account's
 * own counter (`seq`, never reused while the state lives), so the notice id
 * hash(customer, unit, type, condition, episode) is the same for every
 * process and retry that decides that crossing, and different for the next
 * crossing of the same threshold. An account nobody has evaluated counts as
 * above every threshold: the first figures below one are a crossing.
 */
import type { Decimal } from 'decimal.js';
import { formatAmount } from '../../shared/money.js';
import { noticeId, type Notice } from './notice.js';

export interface AccountFigures {
  /** available after open holds (settled − pending − held). */
  available: Decimal;
  /** The unit's allowed negative balance (≥ 0). */
  allowance: Decimal;
  /** When the figures were read (ms since the epoch): the crossing's time. */
  readAtMs: number;
}

export type TopUpMode = 'confirm' | 'trusted';

export interface TopUpRule {
  below: Decimal;
  package: string;
  maxPerDay: number;
  mode: TopUpMode;
}

export interface AccountRules {
  /** balance.low thresholds, any order. */
  low: readonly Decimal[];
  topUp: TopUpRule | undefined;
}

export interface ConditionState {
  below: boolean;
  /** The episode that went below last (0: never). */
  episode: number;
  sinceMs: number;
}

export interface TopUpRequest {
  /** The top_up.requested notice's id: the Idempotency-Key the app posts the purchase with. */
  id: string;
  package: string;
  requestedMs: number;
  /** pending: awaiting the app's purchase; posted: the purchase is in the ledger. */
  status: 'pending' | 'posted';
  mode: TopUpMode;
}

/** Work a committed state still owes: notices to publish, and (trusted top-up) a purchase to post first. */
export interface OutboxItem {
  notice: Notice;
  purchase?: { package: string; key: string };
}

export interface CrossingState {
  /** The figures the state was last decided on: older figures are not applied over it. */
  asOfMs: number;
  /** The account's episode counter. */
  seq: number;
  conditions: Record<string, ConditionState>;
  topUp: { day: string; requested: number; capped: number; requests: TopUpRequest[] };
  outbox: OutboxItem[];
  /**
   * grant.expiring notices decided (expiring.ts), keyed by notice id — one per (block, expiry instant): kept until a
   * day after the expiry, so no process announces the block again. Absent in states written before it existed.
   */
  expiring?: Record<string, ExpiringMark>;
}

export interface ExpiringMark {
  block: string;
  expiresAtMs: number;
  /** When it was decided (the figures' instant). */
  decidedMs: number;
}

export const topUpRequestsKept = 32;
/** An outbox this long means publishing has been failing: evaluation waits for it to drain first. */
export const outboxItemsMax = 256;

export function emptyCrossingState(): CrossingState {
  return {
    asOfMs: 0,
    seq: 0,
    conditions: {},
    topUp: { day: '', requested: 0, capped: 0, requests: [] },
    outbox: [],
    expiring: {},
  };
}

interface Condition {
  key: string;
  below: boolean;
  kind: 'low' | 'exhausted' | 'over_limit' | 'top_up';
  threshold: Decimal | undefined;
}

function conditionsOf(figures: AccountFigures, rules: AccountRules): Condition[] {
  const { available, allowance } = figures;
  const spendable = available.plus(allowance);
  const out: Condition[] = [];
  const seen = new Set<string>();
  for (const threshold of rules.low) {
    const key = `low:${formatAmount(threshold)}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ key, kind: 'low', threshold, below: available.lessThan(threshold) });
  }
  out.push({ key: 'exhausted', kind: 'exhausted', threshold: undefined, below: spendable.lessThanOrEqualTo(0) });
  out.push({ key: 'over_limit', kind: 'over_limit', threshold: undefined, below: spendable.isNegative() });
  if (rules.topUp !== undefined) {
    const below = rules.topUp.below;
    out.push({
      key: `top_up:${formatAmount(below)}`,
      kind: 'top_up',
      threshold: below,
      below: available.lessThan(below),
    });
  }
  return out;
}

/** Whether these figures are below every condition the rules define (usage can then cross nothing). */
export function belowEveryCondition(figures: AccountFigures, rules: AccountRules): boolean {
  return conditionsOf(figures, rules).every((c) => c.below);
}

const downType = { low: 'balance.low', exhausted: 'balance.exhausted', over_limit: 'balance.over_limit' } as const;

export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * The state after `figures`, and the notices it adds to the outbox (in the
 * order they crossed: lower thresholds last). Returns `state` itself when
 * nothing changed, so a caller writes only real changes.
 */
export function evaluateCrossings(
  account: {
    customer: string;
    unit: string;
    /** The unit's names as the customer's subscription shows them (evaluator.ts noticeUnitNames). */
    names?: { unit_name: string | null; unit_internal_name: string | null };
  },
  state: CrossingState,
  figures: AccountFigures,
  rules: AccountRules,
): { state: CrossingState; added: OutboxItem[] } {
  if (figures.readAtMs < state.asOfMs) return { state, added: [] };
  const { customer, unit } = account;
  const timestamp = new Date(figures.readAtMs).toISOString();
  const figuresData = {
    customer,
    unit,
    ...account.names,
    available: formatAmount(figures.available),
    allowance: formatAmount(figures.allowance),
  };
  let seq = state.seq;
  let topUp = state.topUp;
  const conditions: Record<string, ConditionState> = {};
  const added: OutboxItem[] = [];
  let changed = false;
  const current = conditionsOf(figures, rules);
  for (const condition of current) {
    const before = state.conditions[condition.key] ?? { below: false, episode: 0, sinceMs: 0 };
    if (before.below === condition.below) {
      conditions[condition.key] = before;
      continue;
    }
    changed = true;
    const threshold = condition.threshold === undefined ? null : formatAmount(condition.threshold);
    if (condition.below) {
      seq += 1;
      conditions[condition.key] = { below: true, episode: seq, sinceMs: figures.readAtMs };
      if (condition.kind !== 'top_up') {
        const type = downType[condition.kind];
        added.push({
          notice: {
            id: noticeId([customer, unit, type, condition.key, seq]),
            type,
            timestamp,
            data: { ...figuresData, threshold, episode: seq },
          },
        });
        continue;
      }
      const rule = rules.topUp!;
      const day = utcDay(figures.readAtMs);
      if (topUp.day !== day) topUp = { day, requested: 0, capped: 0, requests: topUp.requests };
      if (topUp.requested >= rule.maxPerDay) {
        // The cap holds: the crossing is recorded (no request again until the balance recovers), nothing is asked.
        topUp = { ...topUp, capped: topUp.capped + 1 };
        continue;
      }
      const id = noticeId([customer, unit, 'top_up.requested', condition.key, seq]);
      topUp = {
        ...topUp,
        requested: topUp.requested + 1,
        requests: [
          ...topUp.requests,
          { id, package: rule.package, requestedMs: figures.readAtMs, status: 'pending' as const, mode: rule.mode },
        ].slice(-topUpRequestsKept),
      };
      added.push({
        notice: {
          id,
          type: 'top_up.requested',
          timestamp,
          data: {
            ...figuresData,
            below: threshold,
            package: rule.package,
            request_id: id,
            mode: rule.mode,
            requested_today: topUp.requested,
            max_per_day: rule.maxPerDay,
            episode: seq,
          },
        },
        ...(rule.mode === 'trusted' ? { purchase: { package: rule.package, key: id } } : {}),
      });
    } else {
      conditions[condition.key] = { below: false, episode: before.episode, sinceMs: figures.readAtMs };
      if (condition.kind === 'top_up') continue;
      added.push({
        notice: {
          id: noticeId([customer, unit, 'balance.recovered', condition.key, before.episode]),
          type: 'balance.recovered',
          timestamp,
          data: { ...figuresData, threshold, recovered_from: downType[condition.kind], episode: before.episode },
        },
      });
    }
  }
  // Thresholds no longer configured are forgotten (the state stays bounded by the rules).
  if (Object.keys(state.conditions).some((key) => !(key in conditions))) changed = true;
  if (!changed) return { state, added: [] };
  return {
    // The rest of the state (grant.expiring marks) is not the crossing rule's: carried as it is.
    state: { ...state, asOfMs: figures.readAtMs, seq, conditions, topUp, outbox: [...state.outbox, ...added] },
    added,
  };
}

/** Marks a top-up request posted (its purchase is in the ledger); `state` itself when nothing changes. */
export function markTopUpPosted(state: CrossingState, requestId: string): CrossingState {
  const index = state.topUp.requests.findIndex((r) => r.id === requestId && r.status === 'pending');
  if (index < 0) return state;
  const requests = state.topUp.requests.map((r, i) => (i === index ? { ...r, status: 'posted' as const } : r));
  return { ...state, topUp: { ...state.topUp, requests } };
}

/** Removes published outbox items by notice id; `state` itself when none is there. */
export function withoutOutbox(state: CrossingState, ids: ReadonlySet<string>): CrossingState {
  const outbox = state.outbox.filter((item) => !ids.has(item.notice.id));
  return outbox.length === state.outbox.length ? state : { ...state, outbox };
}

/** Adds items for notices that are not tied to a crossing (purchase.posted, grant.expiring). */
export function withOutbox(state: CrossingState, items: readonly OutboxItem[]): CrossingState {
  const fresh = items.filter((item) => !state.outbox.some((o) => o.notice.id === item.notice.id));
  return fresh.length === 0 ? state : { ...state, outbox: [...state.outbox, ...fresh] };
}

export function parseCrossingState(bytes: Uint8Array): CrossingState {
  const value = JSON.parse(Buffer.from(bytes).toString('utf8')) as CrossingState;
  if (typeof value.seq !== 'number' || typeof value.conditions !== 'object' || !Array.isArray(value.outbox))
    throw new Error('notice crossing state is not in the expected form');
  return value;
}

export function encodeCrossingState(state: CrossingState): Uint8Array {
  return Buffer.from(JSON.stringify(state), 'utf8');
}
