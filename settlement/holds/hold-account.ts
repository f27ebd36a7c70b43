/**
 * One account's holds — the pure rules, no I/O. The store reads an account's
 * state from KV, runs these transitions on it, and writes the result back
 * with compare-and-set; everything that decides anything is here.
 *
 *   AccountState
 *   ├─ held     Σ remaining of the open holds (kept, so an admission is O(1), and checked on decode)
 *   ├─ holds    open holds, oldest first (≤ openHoldsMax)
 *   ├─ closed   released / expired / closed holds, kept closedRetentionMs after closing
 *   │           (≤ closedHoldsMax, oldest dropped first) so that a retried reserve
 *   │           finds its hold instead of making another, and a late release says so
 *   └─ archivedMs  the newest closedMs of the records moved out to the archive
 *               (the store's second bucket, one key per closed hold): a busy
 *               account keeps only its newest closed records in its own value,
 *               so what every write of it costs stays flat. An id not in the
 *               value is looked up there while archivedMs is within retention
 *               (`Archived`, passed in by the store).
 *
 * A hold is admitted iff base − held + allowance ≥ amount. `base` (settled
 * balance − live cost of unsettled usage) and `allowance` (the unit's allowed
 * negative balance) come from the caller. A hold expires at expiresMs: from
 * then on it counts for nothing, whether or not a write has pruned it yet —
 * every transition prunes first, with the caller's clock.
 *
 * Transitions never mutate: they return a new state, or the same object when
 * nothing changed (the store relies on that identity to skip a write).
 */
import type { Decimal } from 'decimal.js';
import { formatAmount, money } from '../../shared/money.js';

export interface OpenHold {
  /** The hold id's suffix (hold-ids.ts); unique within the account. */
  readonly id: string;
  /** bodyFingerprint(amount, metadata) of the reserve that made it. */
  readonly fp: string;
  readonly amount: string;
  readonly remaining: string;
  readonly createdMs: number;
  readonly expiresMs: number;
  readonly metadata: Readonly<Record<string, string>> | undefined;
  /** Hashes of the usage keys already consumed, newest last (≤ usageKeysMax). */
  readonly usage: readonly string[];
  /**
   * Set when the caller released the hold while usage it sent may still be on its way: the hold keeps counting
   * (less what its usage spent) until expiresMs, moved to the end of the release grace, and is then recorded as
   * released at that instant (closeHold).
   */
  readonly releasedMs?: number;
}

export type ClosedStatus = 'released' | 'expired' | 'closed';

export interface ClosedHold {
  readonly id: string;
  readonly fp: string;
  readonly status: ClosedStatus;
  readonly amount: string;
  /** What was left unconsumed when it closed (returned to the account). */
  readonly remaining: string;
  readonly createdMs: number;
  readonly closedMs: number;
}

export interface AccountState {
  readonly held: string;
  readonly holds: readonly OpenHold[];
  readonly closed: readonly ClosedHold[];
  /** 0: nothing archived. Required, so no transition can drop it. */
  readonly archivedMs: number;
}

/**
 * Closed records of this account found in the archive, by id (suffix): the
 * store looks up the ids a batch names that the value lacks, keeping only
 * records within retention. A record in the value wins over one here.
 */
export interface Archived {
  get(id: string): ClosedHold | undefined;
}

export interface AccountLimits {
  readonly openHoldsMax: number;
  readonly closedHoldsMax: number;
  /** Closed records a value keeps once it has archived (archiveCandidates). */
  readonly closedInValueMax: number;
  readonly closedRetentionMs: number;
  readonly usageKeysMax: number;
}

export interface Transition<O> {
  readonly state: AccountState;
  readonly outcome: O;
}

export const emptyAccount: AccountState = Object.freeze({
  held: '0',
  holds: Object.freeze([]),
  closed: Object.freeze([]),
  archivedMs: 0,
});

function closedRecord(hold: OpenHold, status: ClosedStatus, closedMs: number): ClosedHold {
  return {
    id: hold.id,
    fp: hold.fp,
    status,
    amount: hold.amount,
    remaining: hold.remaining,
    createdMs: hold.createdMs,
    closedMs,
  };
}

/**
 * Adds closed records, keeping the list ordered by closedMs (so the oldest is
 * first: retention and the count both drop from the front) and at most
 * closedHoldsMax long. The usual case — one record closed now, appended at
 * the end — remembers its parent, so the encoder extends the parent's text.
 */
function addClosed(
  closed: readonly ClosedHold[],
  records: readonly ClosedHold[],
  limits: AccountLimits,
): readonly ClosedHold[] {
  let next: ClosedHold[];
  const last = closed[closed.length - 1];
  if (records.length === 1 && (last === undefined || last.closedMs <= records[0]!.closedMs)) {
    next = [...closed, records[0]!];
    if (next.length <= limits.closedHoldsMax) {
      if (next.length > encodedAfreshMax) closedParents.set(next, closed);
      return next;
    }
  } else {
    // Expired holds close at their deadlines, and clocks differ between processes: insert in order.
    next = closed.slice();
    for (const record of records) {
      let at = next.length;
      while (at > 0 && next[at - 1]!.closedMs > record.closedMs) at--;
      next.splice(at, 0, record);
    }
  }
  return next.length > limits.closedHoldsMax ? next.slice(next.length - limits.closedHoldsMax) : next;
}

/** Expires the holds due at nowMs and forgets closed holds past their retention or beyond the count. */
export function prune(state: AccountState, nowMs: number, limits: AccountLimits): AccountState {
  const floorMs = nowMs - limits.closedRetentionMs;
  let due = false;
  for (const hold of state.holds) if (hold.expiresMs <= nowMs) due = true;
  // Ordered by closedMs, so the first record is the oldest.
  const stale =
    state.closed.length > limits.closedHoldsMax || (state.closed.length > 0 && state.closed[0]!.closedMs <= floorMs);
  if (!due && !stale) return state;

  let held = money(state.held);
  const holds: OpenHold[] = [];
  const expired: ClosedHold[] = [];
  for (const hold of state.holds) {
    if (hold.expiresMs > nowMs) {
      holds.push(hold);
      continue;
    }
    held = held.minus(hold.remaining);
    // Ended at its deadline, not when noticed: every process records the same instant. A hold released with a
    // grace ends as released, at the grace's end.
    if (hold.expiresMs > floorMs)
      expired.push(closedRecord(hold, hold.releasedMs === undefined ? 'expired' : 'released', hold.expiresMs));
  }
  let kept = 0;
  while (kept < state.closed.length && state.closed[kept]!.closedMs <= floorMs) kept++;
  const closed = addClosed(state.closed.slice(kept), expired, limits);
  return { held: formatAmount(held), holds, closed, archivedMs: state.archivedMs };
}

/** May an id missing from this value have a record in the archive? (Else no lookup is needed.) */
export function archiveMayHold(state: AccountState, nowMs: number, limits: AccountLimits): boolean {
  return state.archivedMs > nowMs - limits.closedRetentionMs;
}

/**
 * The closed records to move to the archive: none until the value holds
 * more than twice closedInValueMax, then the oldest down to closedInValueMax
 * (so archiving runs once per closedInValueMax closings, in one round of puts).
 */
export function archiveCandidates(state: AccountState, limits: AccountLimits): readonly ClosedHold[] {
  if (state.closed.length <= 2 * limits.closedInValueMax) return [];
  return state.closed.slice(0, state.closed.length - limits.closedInValueMax);
}

/**
 * Drops the closed records whose stored form (closedRecordText) is in
 * `archived` — records the archive is known to hold — and raises archivedMs
 * to the newest of them. Returns `state` itself when none is present.
 */
export function dropArchived(state: AccountState, archived: ReadonlySet<string>): AccountState {
  let archivedMs = state.archivedMs;
  const closed = state.closed.filter((record) => {
    if (!archived.has(closedRecordText(record))) return true;
    if (record.closedMs > archivedMs) archivedMs = record.closedMs;
    return false;
  });
  if (closed.length === state.closed.length) return state;
  return { held: state.held, holds: state.holds, closed, archivedMs };
}

/**
 * What of each open hold the usage naming it already spent, by hold id (suffix): the live cost of that usage as
 * of the same read as `base`, which subtracts it already. Such usage is taken off its hold, never below zero, so
 * the hold and the usage it covers are never both subtracted (docs/holds.md).
 */
export type Covered = ReadonlyMap<string, Decimal>;

const zero = money(0);

/** Σ over open holds of min(remaining, covered): what `held` counts twice with `base`. Expects a pruned state. */
export function coveredOf(state: AccountState, covered: Covered | undefined): Decimal {
  let total = zero;
  if (covered === undefined || covered.size === 0) return total;
  for (const hold of state.holds) {
    const spent = covered.get(hold.id);
    if (spent === undefined || !spent.isPositive()) continue;
    total = total.plus(spent.lessThan(hold.remaining) ? spent : money(hold.remaining));
  }
  return total;
}

/** What an open hold still reserves: its remaining less the usage it covers, never below zero. */
export function reservedOf(hold: OpenHold, covered: Covered | undefined): Decimal {
  const spent = covered?.get(hold.id);
  const remaining = money(hold.remaining);
  if (spent === undefined || !spent.isPositive()) return remaining;
  return spent.lessThan(remaining) ? remaining.minus(spent) : money(0);
}

/**
 * base − (held − covered): what is left for new holds before the allowance. Expects a pruned state.
 * `covered` as in coveredOf; without it every open hold counts whole.
 */
export function availableOf(state: AccountState, base: Decimal, covered?: Covered): Decimal {
  const available = base.minus(state.held);
  return covered === undefined || covered.size === 0 ? available : available.plus(coveredOf(state, covered));
}

function findClosed(state: AccountState, id: string, archived: Archived | undefined): ClosedHold | undefined {
  // Newest first: a key reused after its record was pruned and re-created closes again later.
  for (let i = state.closed.length - 1; i >= 0; i--) if (state.closed[i]!.id === id) return state.closed[i];
  return archived?.get(id);
}

export function findHold(state: AccountState, id: string, archived?: Archived): OpenHold | ClosedHold | undefined {
  return state.holds.find((hold) => hold.id === id) ?? findClosed(state, id, archived);
}

export function isOpen(hold: OpenHold | ClosedHold): hold is OpenHold {
  return !('status' in hold);
}

export interface AdmitRequest {
  readonly id: string;
  readonly fp: string;
  /** Positive; validated by the caller. */
  readonly amount: Decimal;
  readonly ttlMs: number;
  readonly metadata: Readonly<Record<string, string>> | undefined;
}

export interface AdmitContext {
  readonly nowMs: number;
  readonly base: Decimal;
  /** ≥ 0: how far below zero `available` may go. */
  readonly allowance: Decimal;
  readonly limits: AccountLimits;
  /** The usage each open hold already covers, read with `base` (see Covered). */
  readonly covered?: Covered;
  readonly archived?: Archived;
}

export type AdmitOutcome =
  | { readonly kind: 'created'; readonly hold: OpenHold; readonly available: Decimal }
  /** The same key and body reserved before: its hold, open or closed. Nothing changes. */
  | { readonly kind: 'existing'; readonly hold: OpenHold | ClosedHold; readonly available: Decimal }
  | { readonly kind: 'key_reused'; readonly hold: OpenHold | ClosedHold }
  | { readonly kind: 'too_many_open' }
  | { readonly kind: 'insufficient'; readonly available: Decimal };

export function admit(before: AccountState, request: AdmitRequest, context: AdmitContext): Transition<AdmitOutcome> {
  const state = prune(before, context.nowMs, context.limits);
  const available = availableOf(state, context.base, context.covered);
  const prior = findHold(state, request.id, context.archived);
  if (prior !== undefined) {
    return {
      state,
      outcome:
        prior.fp === request.fp ? { kind: 'existing', hold: prior, available } : { kind: 'key_reused', hold: prior },
    };
  }
  if (state.holds.length >= context.limits.openHoldsMax) return { state, outcome: { kind: 'too_many_open' } };
  if (available.plus(context.allowance).lessThan(request.amount))
    return { state, outcome: { kind: 'insufficient', available } };
  const amount = formatAmount(request.amount);
  const hold: OpenHold = {
    id: request.id,
    fp: request.fp,
    amount,
    remaining: amount,
    createdMs: context.nowMs,
    expiresMs: context.nowMs + request.ttlMs,
    metadata: request.metadata,
    usage: [],
  };
  return {
    state: {
      held: formatAmount(money(state.held).plus(request.amount)),
      holds: [...state.holds, hold],
      closed: state.closed,
      archivedMs: state.archivedMs,
    },
    outcome: { kind: 'created', hold, available: available.minus(request.amount) },
  };
}

export type CloseOutcome =
  | { readonly kind: 'closed'; readonly hold: ClosedHold }
  /** Released with a grace: still open, counting until hold.expiresMs (the grace's end). */
  | { readonly kind: 'releasing'; readonly hold: OpenHold }
  /** Released with a grace before: nothing changes. */
  | { readonly kind: 'already_releasing'; readonly hold: OpenHold }
  /** Already released, expired or closed: nothing changes (a retried release is not an error). */
  | { readonly kind: 'already_closed'; readonly hold: ClosedHold }
  | { readonly kind: 'not_found' };

/**
 * Ends an open hold: 'released' by the caller (work not done), 'closed' once its usage is in. Its remaining returns
 * to the account.
 */
export function closeHold(
  before: AccountState,
  id: string,
  status: 'released' | 'closed',
  nowMs: number,
  limits: AccountLimits,
  graceMs = 0,
  archived?: Archived,
): Transition<CloseOutcome> {
  const state = prune(before, nowMs, limits);
  const index = state.holds.findIndex((hold) => hold.id === id);
  if (index < 0) {
    const closed = findClosed(state, id, archived);
    return { state, outcome: closed === undefined ? { kind: 'not_found' } : { kind: 'already_closed', hold: closed } };
  }
  const hold = state.holds[index]!;
  if (hold.releasedMs !== undefined) {
    // Releasing already: another release with a grace waits for the same one; one without, or a close, ends it now.
    if (status === 'released' && graceMs > 0) return { state, outcome: { kind: 'already_releasing', hold } };
  } else if (status === 'released' && graceMs > 0) {
    const releasing: OpenHold = { ...hold, releasedMs: nowMs, expiresMs: Math.min(hold.expiresMs, nowMs + graceMs) };
    const holds = state.holds.slice();
    holds[index] = releasing;
    return {
      state: { held: state.held, holds, closed: state.closed, archivedMs: state.archivedMs },
      outcome: { kind: 'releasing', hold: releasing },
    };
  }
  const record = closedRecord(hold, status, nowMs);
  return {
    state: {
      // held is the sum of the open holds' remaining (decodeAccount checks it): with none left, it is 0.
      held: state.holds.length === 1 ? '0' : formatAmount(money(state.held).minus(hold.remaining)),
      holds: state.holds.filter((_, i) => i !== index),
      closed: addClosed(state.closed, [record], limits),
      archivedMs: state.archivedMs,
    },
    outcome: { kind: 'closed', hold: record },
  };
}

export type ConsumeOutcome =
  /** consumed = min(cost, remaining before); excess = cost − consumed (usage beyond the hold). */
  | { readonly kind: 'consumed'; readonly hold: OpenHold; readonly consumed: Decimal; readonly excess: Decimal }
  /** This usage key was consumed before: nothing changes. */
  | { readonly kind: 'duplicate'; readonly hold: OpenHold }
  | { readonly kind: 'closed'; readonly hold: ClosedHold }
  | { readonly kind: 'not_found' };

/**
 * Moves `cost` of usage from the hold to the usage itself: the hold's
 * remaining shrinks by it, never below zero. The hold stays open (more usage
 * may follow) until closed, released or expired.
 */
export function consumeHold(
  before: AccountState,
  id: string,
  cost: Decimal,
  usageHash: string | undefined,
  nowMs: number,
  limits: AccountLimits,
  archived?: Archived,
): Transition<ConsumeOutcome> {
  const state = prune(before, nowMs, limits);
  const index = state.holds.findIndex((hold) => hold.id === id);
  if (index < 0) {
    const closed = findClosed(state, id, archived);
    return { state, outcome: closed === undefined ? { kind: 'not_found' } : { kind: 'closed', hold: closed } };
  }
  const hold = state.holds[index]!;
  if (usageHash !== undefined && hold.usage.includes(usageHash)) return { state, outcome: { kind: 'duplicate', hold } };
  const remaining = money(hold.remaining);
  const consumed = cost.lessThan(remaining) ? money(cost) : remaining;
  const excess = money(cost).minus(consumed);
  if (consumed.isZero() && usageHash === undefined)
    return { state, outcome: { kind: 'consumed', hold, consumed, excess } };
  const usage = usageHash === undefined ? hold.usage : [...hold.usage, usageHash].slice(-limits.usageKeysMax);
  const updated: OpenHold = { ...hold, remaining: formatAmount(remaining.minus(consumed)), usage };
  const holds = state.holds.slice();
  holds[index] = updated;
  return {
    state: {
      held: formatAmount(money(state.held).minus(consumed)),
      holds,
      closed: state.closed,
      archivedMs: state.archivedMs,
    },
    outcome: { kind: 'consumed', hold: updated, consumed, excess },
  };
}

// ---------------------------------------------------------------------------
// Stored form: JSON, amounts as decimal strings.
//   {"v":1,"held":"3","holds":[{"i","f","a","r","c","e","m"?,"u"?}…],"closed":[[i,f,s,a,r,c,x]…],"a"?:archivedMs}
// An archived record is the same tuple, alone (closedRecordText).
// Closed records are tuples (s: "r" released, "e" expired, "c" closed): they are
// the many small entries, so their keys would be most of the bytes.

const statusCodes: Record<ClosedStatus, string> = { released: 'r', expired: 'e', closed: 'c' };
const statusByCode: Record<string, ClosedStatus> = { r: 'released', e: 'expired', c: 'closed' };

// The closed list is most of an account's bytes and usually grows by one
// record per write, so its text is kept per (immutable) array and a child's
// text is its parent's plus the new record, not a re-encoding of every record.
// Open holds are few per write and short-lived: encoded afresh.
// A short list (the log engine's every write: only the records its batch closed) is encoded afresh, its records
// uncached: a cache entry would cost more than the encoding, and the log engine keeps a million records alive.
const closedSections = new WeakMap<readonly ClosedHold[], string>();
const closedParents = new WeakMap<readonly ClosedHold[], readonly ClosedHold[]>();
const encodedAfreshMax = 8;

function encodeOpen(hold: OpenHold): string {
  const stored: Record<string, unknown> = {
    i: hold.id,
    f: hold.fp,
    a: hold.amount,
    r: hold.remaining,
    c: hold.createdMs,
    e: hold.expiresMs,
  };
  if (hold.metadata !== undefined) stored.m = hold.metadata;
  if (hold.usage.length > 0) stored.u = hold.usage;
  if (hold.releasedMs !== undefined) stored.x = hold.releasedMs;
  return JSON.stringify(stored);
}

/** A closed record's stored form: also its identity (records never change once closed) and its archive value. */
export function closedRecordText(record: ClosedHold): string {
  return encodeClosed(record);
}

// Records are immutable and shared by every state that keeps them: each is encoded once (the archive compares
// them by this text on every write of a busy account).
const closedTexts = new WeakMap<ClosedHold, string>();

function encodeClosed(record: ClosedHold): string {
  let text = closedTexts.get(record);
  if (text === undefined) {
    text = closedTuple(record);
    closedTexts.set(record, text);
  }
  return text;
}

function closedTuple(record: ClosedHold): string {
  return JSON.stringify([
    record.id,
    record.fp,
    statusCodes[record.status],
    record.amount,
    record.remaining,
    record.createdMs,
    record.closedMs,
  ]);
}

function closedSection(closed: readonly ClosedHold[]): string {
  if (closed.length <= encodedAfreshMax) return closed.map(closedTuple).join(',');
  let text = closedSections.get(closed);
  if (text !== undefined) return text;
  const parent = closedParents.get(closed);
  const parentText = parent === undefined ? undefined : closedSections.get(parent);
  if (parent !== undefined && parentText !== undefined) {
    const added = closed.slice(parent.length).map(encodeClosed).join(',');
    text = parentText.length === 0 ? added : `${parentText},${added}`;
  } else {
    text = closed.map(encodeClosed).join(',');
  }
  closedSections.set(closed, text);
  return text;
}

export function encodeAccount(state: AccountState): string {
  const archived = state.archivedMs > 0 ? `,"a":${state.archivedMs}` : '';
  return `{"v":1,"held":${JSON.stringify(state.held)},"holds":[${state.holds.map(encodeOpen).join(',')}],"closed":[${closedSection(state.closed)}]${archived}}`;
}

/** The stored form, as UTF-8 bytes (what the KV value holds). */
export function encodeAccountBytes(state: AccountState): Buffer {
  return Buffer.from(encodeAccount(state));
}

export class AccountStateCorruptError extends Error {
  constructor(detail: string) {
    super(`stored hold account is not valid: ${detail}`);
    this.name = 'AccountStateCorruptError';
  }
}

const storedAmount = /^\d+(\.\d+)?$/;

function text(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 200)
    throw new AccountStateCorruptError(`${what} is not a string`);
  return value;
}

function amount(value: unknown, what: string): string {
  if (!storedAmount.test(text(value, what)))
    throw new AccountStateCorruptError(`${what} is not a non-negative decimal`);
  return value as string;
}

function instant(value: unknown, what: string): number {
  if (!Number.isSafeInteger(value)) throw new AccountStateCorruptError(`${what} is not an integer`);
  return value as number;
}

function decodeMetadata(value: unknown): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new AccountStateCorruptError('metadata is not an object');
  const out: Record<string, string> = Object.create(null);
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') throw new AccountStateCorruptError(`metadata.${key} is not a string`);
    out[key] = entry;
  }
  return out;
}

/** Parses and checks a stored state; `held` must equal the sum it caches. */
export function decodeAccount(json: string): AccountState {
  const raw = parsed(json, 'not JSON');
  const stored = raw as { v?: unknown; held?: unknown; holds?: unknown; closed?: unknown; a?: unknown };
  if (typeof raw !== 'object' || raw === null || stored.v !== 1)
    throw new AccountStateCorruptError('not a version 1 account');
  if (!Array.isArray(stored.holds) || !Array.isArray(stored.closed))
    throw new AccountStateCorruptError('holds or closed is not an array');
  const holds = stored.holds.map((h: Record<string, unknown>, i): OpenHold => {
    if (typeof h !== 'object' || h === null) throw new AccountStateCorruptError(`holds[${i}] is not an object`);
    const usage = h.u === undefined ? [] : h.u;
    if (!Array.isArray(usage)) throw new AccountStateCorruptError(`holds[${i}].u is not an array`);
    return {
      id: text(h.i, `holds[${i}].i`),
      fp: text(h.f, `holds[${i}].f`),
      amount: amount(h.a, `holds[${i}].a`),
      remaining: amount(h.r, `holds[${i}].r`),
      createdMs: instant(h.c, `holds[${i}].c`),
      expiresMs: instant(h.e, `holds[${i}].e`),
      metadata: decodeMetadata(h.m),
      usage: usage.map((u, j) => text(u, `holds[${i}].u[${j}]`)),
      ...(h.x === undefined ? {} : { releasedMs: instant(h.x, `holds[${i}].x`) }),
    };
  });
  const closed = stored.closed.map((c: unknown, i) => closedFromTuple(c, `closed[${i}]`));
  // Kept ordered by closedMs (prune relies on it); a value written otherwise is put in order.
  closed.sort((a, b) => a.closedMs - b.closedMs);
  const held = amount(stored.held, 'held');
  const sum = holds.reduce((total, hold) => total.plus(hold.remaining), money(0));
  if (!sum.equals(held))
    throw new AccountStateCorruptError(
      `held ${held} is not the sum of the open holds' remaining amounts (${formatAmount(sum)})`,
    );
  const archivedMs = stored.a === undefined ? 0 : instant(stored.a, 'a');
  return { held, holds, closed, archivedMs };
}

function closedFromTuple(c: unknown, what: string): ClosedHold {
  if (!Array.isArray(c) || c.length !== 7) throw new AccountStateCorruptError(`${what} is not a 7-tuple`);
  const status = statusByCode[text(c[2], `${what}.status`)];
  if (status === undefined) throw new AccountStateCorruptError(`${what} has an unknown status`);
  return {
    id: text(c[0], `${what}.id`),
    fp: text(c[1], `${what}.fp`),
    status,
    amount: amount(c[3], `${what}.amount`),
    remaining: amount(c[4], `${what}.remaining`),
    createdMs: instant(c[5], `${what}.created`),
    closedMs: instant(c[6], `${what}.closed`),
  };
}

/** Parses and checks an archived record (closedRecordText's output). */
export function decodeClosedRecord(json: string): ClosedHold {
  return closedFromTuple(parsed(json, 'archived record is not JSON'), 'archived record');
}

function parsed(json: string, failure: string): unknown {
  try {
    return JSON.parse(json);
  } catch {
    throw new AccountStateCorruptError(failure);
  }
}
