/**
 * The hold rules on plain values: a reference model replays random histories
 * of reserves, releases, closes, consumes and clock moves, and the rules must
 * agree with it at every step — never admitting past base + allowance, one
 * hold per key, expiry at the deadline, remaining never below zero.
 */
import fc from 'fast-check';
import type { Decimal } from 'decimal.js';
import { describe, expect, it } from 'vitest';
import { money } from '../../shared/money.js';
import {
  AccountStateCorruptError,
  admit,
  archiveCandidates,
  archiveMayHold,
  availableOf,
  closeHold,
  closedRecordText,
  consumeHold,
  decodeAccount,
  decodeClosedRecord,
  dropArchived,
  emptyAccount,
  encodeAccount,
  findHold,
  prune,
  type AccountLimits,
  type AccountState,
  type Archived,
  type ClosedHold,
  type ClosedStatus,
} from './hold-account.js';

const t0 = Date.parse('2026-03-01T00:00:00Z');
const roomy: AccountLimits = {
  openHoldsMax: 1_000,
  closedHoldsMax: 100_000,
  closedInValueMax: 100_000,
  closedRetentionMs: 1e12,
  usageKeysMax: 1_000,
};

function request(id: string, amount: string, ttlMs = 60_000, fp = `fp-${amount}`) {
  return { id, fp, amount: money(amount), ttlMs, metadata: undefined };
}

function ctx(nowMs: number, base: string, allowance = '0', limits = roomy) {
  return { nowMs, base: money(base), allowance: money(allowance), limits };
}

function openSum(state: AccountState): Decimal {
  return state.holds.reduce((sum, hold) => sum.plus(hold.remaining), money(0));
}

describe('admit', () => {
  it('given base 100 and allowance 5, admits holds of 1 until 105 are held, then refuses with the available figure', () => {
    let state = emptyAccount;
    const created: string[] = [];
    for (let i = 0; i < 110; i++) {
      const step = admit(state, request(`h${i}`, '1'), ctx(t0, '100', '5'));
      state = step.state;
      if (step.outcome.kind === 'created') created.push(`h${i}`);
      else expect(step.outcome).toMatchObject({ kind: 'insufficient' });
    }
    expect(created).toHaveLength(105);
    const refused = admit(state, request('h-last', '1'), ctx(t0, '100', '5')).outcome;
    expect(refused.kind === 'insufficient' && refused.available.toFixed()).toBe('-5');
    expect(state.held).toBe('105');
  });

  it('admits exactly up to available + allowance, not a fraction more', () => {
    const state = admit(emptyAccount, request('a', '10.5'), ctx(t0, '12', '0.5')).state;
    expect(admit(state, request('b', '2.000000001'), ctx(t0, '12', '0.5')).outcome.kind).toBe('insufficient');
    expect(admit(state, request('b', '2'), ctx(t0, '12', '0.5')).outcome.kind).toBe('created');
  });

  it('given a negative base within the allowance, a hold still fits the allowance', () => {
    expect(admit(emptyAccount, request('a', '3'), ctx(t0, '-2', '5')).outcome.kind).toBe('created');
    expect(admit(emptyAccount, request('a', '3.01'), ctx(t0, '-2', '5')).outcome.kind).toBe('insufficient');
  });

  it('the same key and body answers with the same hold and changes nothing', () => {
    const first = admit(emptyAccount, request('k', '4'), ctx(t0, '10'));
    const again = admit(first.state, request('k', '4'), ctx(t0 + 1_000, '10'));
    expect(again.state).toBe(first.state);
    expect(again.outcome).toMatchObject({
      kind: 'existing',
      hold: first.outcome.kind === 'created' ? first.outcome.hold : undefined,
    });
  });

  it('the same key with another body is refused, even when the funds would allow it', () => {
    const first = admit(emptyAccount, request('k', '4'), ctx(t0, '10'));
    const other = admit(first.state, request('k', '5'), ctx(t0, '1000'));
    expect(other.outcome.kind).toBe('key_reused');
    expect(other.state).toBe(first.state);
  });

  it('a retry after the hold was released finds the released hold, not a new one', () => {
    const first = admit(emptyAccount, request('k', '4'), ctx(t0, '10'));
    const released = closeHold(first.state, 'k', 'released', t0 + 10, roomy);
    const retry = admit(released.state, request('k', '4'), ctx(t0 + 20, '10'));
    expect(retry.outcome).toMatchObject({ kind: 'existing', hold: { status: 'released' } });
    expect(retry.state.holds).toHaveLength(0);
  });

  it('refuses past openHoldsMax, and admits again once one closes', () => {
    const limits = { ...roomy, openHoldsMax: 3 };
    let state = emptyAccount;
    for (const id of ['a', 'b', 'c']) state = admit(state, request(id, '1'), ctx(t0, '100', '0', limits)).state;
    expect(admit(state, request('d', '1'), ctx(t0, '100', '0', limits)).outcome.kind).toBe('too_many_open');
    state = closeHold(state, 'b', 'closed', t0, limits).state;
    expect(admit(state, request('d', '1'), ctx(t0, '100', '0', limits)).outcome.kind).toBe('created');
  });
});

describe('expiry', () => {
  it('a hold counts until its deadline and not from it; it is recorded as expired at the deadline', () => {
    const { state } = admit(emptyAccount, request('a', '7', 1_000), ctx(t0, '10'));
    expect(admit(state, request('b', '4'), ctx(t0 + 999, '10')).outcome.kind).toBe('insufficient');
    const after = admit(state, request('b', '4'), ctx(t0 + 1_000, '10'));
    expect(after.outcome.kind).toBe('created');
    expect(after.state.closed).toEqual([
      expect.objectContaining({ id: 'a', status: 'expired', closedMs: t0 + 1_000, remaining: '7' }),
    ]);
    expect(after.state.held).toBe('4');
  });

  it('releasing an expired hold changes nothing and reports it expired; consuming it is refused as closed', () => {
    const { state } = admit(emptyAccount, request('a', '7', 1_000), ctx(t0, '10'));
    expect(closeHold(state, 'a', 'released', t0 + 5_000, roomy).outcome).toMatchObject({
      kind: 'already_closed',
      hold: { status: 'expired' },
    });
    expect(consumeHold(state, 'a', money(1), undefined, t0 + 5_000, roomy).outcome).toMatchObject({
      kind: 'closed',
      hold: { status: 'expired' },
    });
  });

  it('closed holds are forgotten after their retention, and then a retried key reserves anew', () => {
    const limits = { ...roomy, closedRetentionMs: 60_000 };
    let state = admit(emptyAccount, request('k', '1'), ctx(t0, '10', '0', limits)).state;
    state = closeHold(state, 'k', 'released', t0 + 1_000, limits).state;
    expect(prune(state, t0 + 60_999, limits).closed).toHaveLength(1);
    expect(prune(state, t0 + 61_000, limits).closed).toHaveLength(0);
    expect(admit(state, request('k', '1'), ctx(t0 + 61_000, '10', '0', limits)).outcome.kind).toBe('created');
  });

  it('keeps at most closedHoldsMax closed holds, forgetting the oldest', () => {
    const limits = { ...roomy, closedHoldsMax: 5 };
    let state = emptyAccount;
    for (let i = 0; i < 12; i++) {
      state = admit(state, request(`h${i}`, '1'), ctx(t0 + i, '100', '0', limits)).state;
      state = closeHold(state, `h${i}`, 'closed', t0 + i, limits).state;
    }
    expect(state.closed.map((c) => c.id)).toEqual(['h7', 'h8', 'h9', 'h10', 'h11']);
  });

  it('pruning with nothing due returns the same state object (no write needed)', () => {
    const { state } = admit(emptyAccount, request('a', '1'), ctx(t0, '10'));
    expect(prune(state, t0 + 1, roomy)).toBe(state);
  });
});

describe('consume', () => {
  it('moves usage onto the hold, never below zero, and reports the excess', () => {
    let state = admit(emptyAccount, request('a', '5'), ctx(t0, '10')).state;
    let step = consumeHold(state, 'a', money('3.25'), undefined, t0, roomy);
    expect(step.outcome).toMatchObject({ kind: 'consumed', hold: { remaining: '1.75' } });
    state = step.state;
    step = consumeHold(state, 'a', money('4'), undefined, t0, roomy);
    expect(
      step.outcome.kind === 'consumed' && [
        step.outcome.consumed.toFixed(),
        step.outcome.excess.toFixed(),
        step.outcome.hold.remaining,
      ],
    ).toEqual(['1.75', '2.25', '0']);
    expect(step.state.held).toBe('0');
    // An empty hold stays open until closed: more usage may name it.
    expect(step.state.holds).toHaveLength(1);
  });

  it('a usage key consumes once', () => {
    const state = admit(emptyAccount, request('a', '5'), ctx(t0, '10')).state;
    const once = consumeHold(state, 'a', money(2), 'event-1', t0, roomy);
    const twice = consumeHold(once.state, 'a', money(2), 'event-1', t0, roomy);
    expect(twice.outcome.kind).toBe('duplicate');
    expect(twice.state).toBe(once.state);
    expect(twice.state.held).toBe('3');
  });

  it('remembers at most usageKeysMax usage keys per hold', () => {
    const limits = { ...roomy, usageKeysMax: 2 };
    let state = admit(emptyAccount, request('a', '100'), ctx(t0, '100', '0', limits)).state;
    for (const key of ['u1', 'u2', 'u3']) state = consumeHold(state, 'a', money(1), key, t0, limits).state;
    expect(state.holds[0]!.usage).toEqual(['u2', 'u3']);
  });

  it('closing after consuming returns only what is left', () => {
    let state = admit(emptyAccount, request('a', '5'), ctx(t0, '5')).state;
    state = consumeHold(state, 'a', money(2), undefined, t0, roomy).state;
    const closed = closeHold(state, 'a', 'closed', t0 + 1, roomy);
    expect(closed.outcome).toMatchObject({ kind: 'closed', hold: { status: 'closed', remaining: '3', amount: '5' } });
    expect(availableOf(closed.state, money(5)).toFixed()).toBe('5');
  });

  it('an unknown hold is not found', () => {
    expect(consumeHold(emptyAccount, 'x', money(1), undefined, t0, roomy).outcome.kind).toBe('not_found');
    expect(closeHold(emptyAccount, 'x', 'released', t0, roomy).outcome.kind).toBe('not_found');
  });
});

// ---------------------------------------------------------------------------
// Random histories against a reference model.

type Op =
  | { op: 'reserve'; key: number; amount: string; ttlMs: number; body: number; base: string; allowance: string }
  | { op: 'release' | 'close'; key: number }
  | { op: 'consume'; key: number; cost: string; usage: number | undefined }
  | { op: 'tick'; ms: number };

const cents = (max: number) => fc.integer({ min: 1, max }).map((n) => (n / 100).toFixed(2));
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('reserve' as const),
      key: fc.integer({ min: 0, max: 15 }),
      amount: cents(4_000),
      ttlMs: fc.integer({ min: 1, max: 5_000 }),
      body: fc.integer({ min: 0, max: 1 }),
      base: fc.constantFrom('0', '50', '100', '-10'),
      allowance: fc.constantFrom('0', '5', '20'),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constantFrom('release' as const, 'close' as const),
      key: fc.integer({ min: 0, max: 15 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('consume' as const),
      key: fc.integer({ min: 0, max: 15 }),
      cost: fc.integer({ min: 0, max: 3_000 }).map((n) => (n / 1000).toFixed(3)),
      usage: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 2_000 }) }) },
);

interface ModelHold {
  fp: string;
  amount: Decimal;
  remaining: Decimal;
  expiresMs: number;
  status: 'open' | ClosedStatus;
  usage: Set<string>;
}

describe('random histories agree with a reference model', () => {
  it("outcomes, held and the open holds match the model at every step, closed records archived or not; held never passes an admission's base + allowance", () => {
    fc.assert(
      fc.property(
        // size 'max': lengths spread up to the maximum (the default keeps arrays to ~10 operations).
        fc.array(opArbitrary, { maxLength: 120, size: 'max' }),
        fc.integer({ min: 1, max: 8 }),
        // undefined: nothing archived; else the value keeps that many closed records once it archives.
        fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }),
        (ops, openHoldsMax, closedInValueMax) => {
          const limits = { ...roomy, openHoldsMax, closedInValueMax: closedInValueMax ?? roomy.closedInValueMax };
          const model = new Map<string, ModelHold>();
          // The archive bucket, as the store keeps it: one record per hold id, moved out of the value.
          const archive = new Map<string, ClosedHold>();
          let state = emptyAccount;
          let now = t0;
          for (const op of ops) {
            if (op.op === 'tick') {
              now += op.ms;
              continue;
            }
            for (const hold of model.values())
              if (hold.status === 'open' && hold.expiresMs <= now) hold.status = 'expired';
            const id = `k${op.key}`;
            const known = model.get(id);
            // What the store looks up: the id's archived record when the value lacks it and says it archived.
            const found =
              findHold(state, id) === undefined && archiveMayHold(state, now, limits) ? archive.get(id) : undefined;
            const archived: Archived | undefined = found === undefined ? undefined : new Map([[id, found]]);
            const openRemaining = [...model.values()]
              .filter((h) => h.status === 'open')
              .reduce((s, h) => s.plus(h.remaining), money(0));
            if (op.op === 'reserve') {
              const fp = `body-${op.body}-${op.amount}`;
              const step = admit(
                state,
                { id, fp, amount: money(op.amount), ttlMs: op.ttlMs, metadata: undefined },
                { ...ctx(now, op.base, op.allowance, limits), ...(archived === undefined ? {} : { archived }) },
              );
              const openCount = [...model.values()].filter((h) => h.status === 'open').length;
              const want = known
                ? known.fp === fp
                  ? 'existing'
                  : 'key_reused'
                : openCount >= openHoldsMax
                  ? 'too_many_open'
                  : money(op.base).minus(openRemaining).plus(op.allowance).lessThan(op.amount)
                    ? 'insufficient'
                    : 'created';
              expect(step.outcome.kind).toBe(want);
              if (want === 'created') {
                model.set(id, {
                  fp,
                  amount: money(op.amount),
                  remaining: money(op.amount),
                  expiresMs: now + op.ttlMs,
                  status: 'open',
                  usage: new Set(),
                });
                // Never admit beyond this admission's base + allowance.
                expect(money(step.state.held).lessThanOrEqualTo(money(op.base).plus(op.allowance))).toBe(true);
              } else if (want !== 'existing' && want !== 'key_reused') {
                expect(encodeAccount(step.state)).toBe(encodeAccount(prune(state, now, limits)));
              }
              state = step.state;
            } else if (op.op === 'consume') {
              const usageKey = op.usage === undefined ? undefined : `u${op.usage}`;
              const step = consumeHold(state, id, money(op.cost), usageKey, now, limits, archived);
              if (!known) expect(step.outcome.kind).toBe('not_found');
              else if (known.status !== 'open')
                expect(step.outcome).toMatchObject({ kind: 'closed', hold: { status: known.status } });
              else if (usageKey !== undefined && known.usage.has(usageKey)) expect(step.outcome.kind).toBe('duplicate');
              else {
                const consumed = money(op.cost).lessThan(known.remaining) ? money(op.cost) : known.remaining;
                expect(
                  step.outcome.kind === 'consumed' && [step.outcome.consumed.toFixed(), step.outcome.excess.toFixed()],
                ).toEqual([consumed.toFixed(), money(op.cost).minus(consumed).toFixed()]);
                known.remaining = known.remaining.minus(consumed);
                if (usageKey !== undefined) known.usage.add(usageKey);
              }
              state = step.state;
            } else {
              const step = closeHold(state, id, op.op === 'release' ? 'released' : 'closed', now, limits, 0, archived);
              if (!known) expect(step.outcome.kind).toBe('not_found');
              else if (known.status !== 'open')
                expect(step.outcome).toMatchObject({ kind: 'already_closed', hold: { status: known.status } });
              else {
                expect(step.outcome.kind).toBe('closed');
                known.status = op.op === 'release' ? 'released' : 'closed';
              }
              state = step.state;
            }
            // Archiving lags now and then, as puts do: the value may hold more than its share for a while.
            if (closedInValueMax !== undefined && op.key % 2 === 0) {
              const due = archiveCandidates(state, limits);
              for (const record of due) archive.set(record.id, record);
              state = dropArchived(state, new Set(due.map(closedRecordText)));
              expect(state.closed.length).toBeLessThanOrEqual(due.length > 0 ? closedInValueMax : 2 * closedInValueMax);
            }

            // The state agrees with the model, and its cached sum with its holds.
            const open = [...model.entries()].filter(([, h]) => h.status === 'open');
            expect(state.holds.map((h) => h.id).sort()).toEqual(open.map(([k]) => k).sort());
            expect(money(state.held).equals(openSum(state))).toBe(true);
            for (const [k, h] of open)
              expect(state.holds.find((s) => s.id === k)!.remaining).toBe(h.remaining.toFixed());
            for (const hold of state.holds) {
              expect(money(hold.remaining).isNegative()).toBe(false);
              expect(money(hold.remaining).lessThanOrEqualTo(hold.amount)).toBe(true);
              expect(hold.expiresMs).toBeGreaterThan(now);
            }
            // Closed holds stay ordered by when they closed (retention drops from the front).
            expect(state.closed.every((c, i) => i === 0 || state.closed[i - 1]!.closedMs <= c.closedMs)).toBe(true);
            // One record per key: open or closed, never both, never twice.
            const ids = [...state.holds.map((h) => h.id), ...state.closed.map((c) => c.id)];
            expect(new Set(ids).size).toBe(ids.length);
            // And it survives storage unchanged; the incrementally built text equals a fresh encoding.
            const text = encodeAccount(state);
            expect(decodeAccount(text)).toEqual(JSON.parse(JSON.stringify(state)));
            expect(encodeAccount(decodeAccount(text))).toBe(text);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('with one fixed base, the open holds never sum past base + allowance, whatever the history', () => {
    fc.assert(
      fc.property(fc.array(opArbitrary, { maxLength: 150 }), (ops) => {
        let state = emptyAccount;
        let now = t0;
        for (const op of ops) {
          if (op.op === 'tick') now += op.ms;
          else if (op.op === 'reserve')
            state = admit(
              state,
              {
                id: `k${op.key}`,
                fp: `b${op.body}-${op.amount}`,
                amount: money(op.amount),
                ttlMs: op.ttlMs,
                metadata: undefined,
              },
              ctx(now, '40', '2.5'),
            ).state;
          else if (op.op === 'consume')
            state = consumeHold(state, `k${op.key}`, money(op.cost), undefined, now, roomy).state;
          else state = closeHold(state, `k${op.key}`, 'released', now, roomy).state;
          expect(money(prune(state, now, roomy).held).lessThanOrEqualTo(42.5)).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('with tight retention and count, closed holds stay ordered, bounded, recent, and true to what closed them', () => {
    fc.assert(
      fc.property(
        fc.array(opArbitrary, { maxLength: 150 }),
        fc.integer({ min: 0, max: 4 }),
        fc.integer({ min: 0, max: 3_000 }),
        (ops, closedHoldsMax, closedRetentionMs) => {
          const limits = { ...roomy, closedHoldsMax, closedRetentionMs };
          const closedAs = new Map<string, ClosedStatus>();
          let state = emptyAccount;
          let now = t0;
          for (const op of ops) {
            const id = `k${op.op === 'tick' ? 0 : op.key}`;
            if (op.op === 'tick') now += op.ms;
            else if (op.op === 'reserve') {
              const step = admit(
                state,
                { id, fp: `b${op.body}-${op.amount}`, amount: money(op.amount), ttlMs: op.ttlMs, metadata: undefined },
                ctx(now, '40', '2.5', limits),
              );
              // A key forgotten by count and reserved again in the same instant is a new hold: what closed the old
              // one says nothing about it.
              if (step.outcome.kind === 'created') closedAs.delete(`${id}@${step.outcome.hold.createdMs}`);
              state = step.state;
            } else if (op.op === 'consume')
              state = consumeHold(state, id, money(op.cost), undefined, now, limits).state;
            else {
              const step = closeHold(state, id, op.op === 'release' ? 'released' : 'closed', now, limits);
              if (step.outcome.kind === 'closed')
                closedAs.set(`${id}@${step.outcome.hold.createdMs}`, step.outcome.hold.status);
              state = step.state;
            }
            const pruned = prune(state, now, limits);
            expect(pruned.closed.length).toBeLessThanOrEqual(closedHoldsMax);
            expect(
              pruned.closed.every(
                (c, i) =>
                  c.closedMs > now - closedRetentionMs && (i === 0 || pruned.closed[i - 1]!.closedMs <= c.closedMs),
              ),
            ).toBe(true);
            for (const c of pruned.closed) expect(c.status).toBe(closedAs.get(`${c.id}@${c.createdMs}`) ?? 'expired');
            expect(encodeAccount(decodeAccount(encodeAccount(state)))).toBe(encodeAccount(state));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('N reserves under one key create exactly one hold, in any order with other keys', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 60 }), (keys) => {
        let state = emptyAccount;
        const created = new Map<string, number>();
        for (const key of keys) {
          const step = admit(state, request(`k${key}`, '1'), ctx(t0, '1000'));
          state = step.state;
          if (step.outcome.kind === 'created') created.set(`k${key}`, (created.get(`k${key}`) ?? 0) + 1);
        }
        expect([...created.values()].every((n) => n === 1)).toBe(true);
        expect(state.holds).toHaveLength(new Set(keys).size);
      }),
    );
  });
});

describe('stored form', () => {
  it('archives the oldest closed records past twice the value share, keeps archivedMs through storage, and reads an archived record back', () => {
    const limits = { ...roomy, closedInValueMax: 2 };
    let state = emptyAccount;
    for (let i = 0; i < 5; i++) {
      state = admit(state, request(`k${i}`, '1'), ctx(t0 + i, '10', '0', limits)).state;
      state = closeHold(state, `k${i}`, 'released', t0 + i, limits).state;
    }
    // 5 closed > 2 × 2: the oldest 3 go, the newest 2 stay.
    const due = archiveCandidates(state, limits);
    expect(due.map((r) => r.id)).toEqual(['k0', 'k1', 'k2']);
    // Only what the archive acknowledged leaves the value.
    const partly = dropArchived(state, new Set(due.slice(0, 2).map(closedRecordText)));
    expect([partly.closed.map((r) => r.id), partly.archivedMs]).toEqual([['k2', 'k3', 'k4'], t0 + 1]);
    const dropped = dropArchived(partly, new Set(due.map(closedRecordText)));
    expect([dropped.closed.map((r) => r.id), dropped.archivedMs]).toEqual([['k3', 'k4'], t0 + 2]);
    expect(dropArchived(dropped, new Set(due.map(closedRecordText)))).toBe(dropped);
    expect(archiveCandidates(dropped, limits)).toEqual([]);
    expect(decodeAccount(encodeAccount(dropped)).archivedMs).toBe(t0 + 2);
    // Within retention the value sends lookups to the archive; after it, no record there can count.
    expect(archiveMayHold(dropped, t0 + 1_000, { ...limits, closedRetentionMs: 60_000 })).toBe(true);
    expect(archiveMayHold(dropped, t0 + 2 + 60_000, { ...limits, closedRetentionMs: 60_000 })).toBe(false);
    expect(decodeClosedRecord(closedRecordText(due[0]!))).toEqual(due[0]);
    expect(() => decodeClosedRecord('["k0","fp","z","1","1",1,2]')).toThrow(AccountStateCorruptError);
    expect(() => decodeClosedRecord('{')).toThrow(AccountStateCorruptError);
    // The archived hold answers as it did in the value.
    const archived = new Map([[due[0]!.id, due[0]!]]);
    expect(admit(dropped, request('k0', '1'), { ...ctx(t0 + 10, '10', '0', limits), archived }).outcome.kind).toBe(
      'existing',
    );
    expect(admit(dropped, request('k0', '1'), ctx(t0 + 10, '10', '0', limits)).outcome.kind).toBe('created');
  });

  it('round-trips metadata and usage keys', () => {
    let state = admit(
      emptyAccount,
      { ...request('a', '2.5'), metadata: { job: 'j-1', 'model.name': 'x' } },
      ctx(t0, '10'),
    ).state;
    state = consumeHold(state, 'a', money('0.000000000000000001'), 'e1', t0, roomy).state;
    state = closeHold(admit(state, request('b', '1'), ctx(t0, '10')).state, 'b', 'released', t0 + 5, roomy).state;
    const decoded = decodeAccount(encodeAccount(state));
    expect(decoded.holds[0]).toMatchObject({
      remaining: '2.499999999999999999',
      metadata: { job: 'j-1', 'model.name': 'x' },
      usage: ['e1'],
    });
    expect(decoded.closed[0]).toMatchObject({ id: 'b', status: 'released', closedMs: t0 + 5 });
  });

  it('refuses a value whose held is not the sum of its holds', () => {
    const state = admit(emptyAccount, request('a', '2'), ctx(t0, '10')).state;
    const text = encodeAccount(state).replace('"held":"2"', '"held":"3"');
    expect(() => decodeAccount(text)).toThrow(AccountStateCorruptError);
  });

  it('refuses malformed values', () => {
    for (const text of [
      '',
      '{}',
      '{"v":2,"held":"0","holds":[],"closed":[]}',
      '{"v":1,"held":"-1","holds":[],"closed":[]}',
      '{"v":1,"held":"0","holds":[],"closed":[["a","f","z","1","1",1,1]]}',
    ]) {
      expect(() => decodeAccount(text)).toThrow(AccountStateCorruptError);
    }
  });
});

describe('release with a grace', () => {
  it('keeps the hold counting until the grace ends, then records it released at that instant', () => {
    const { state } = admit(emptyAccount, request('a', '7', 60_000), ctx(t0, '10'));
    const releasing = closeHold(state, 'a', 'released', t0 + 100, roomy, 2_000);
    expect(releasing.outcome).toMatchObject({
      kind: 'releasing',
      hold: { releasedMs: t0 + 100, expiresMs: t0 + 2_100 },
    });
    expect(releasing.state.held).toBe('7');
    expect(availableOf(prune(releasing.state, t0 + 2_099, roomy), money(10)).toFixed()).toBe('3');
    const after = prune(releasing.state, t0 + 2_100, roomy);
    expect(after.holds).toEqual([]);
    expect(after.closed).toEqual([expect.objectContaining({ id: 'a', status: 'released', closedMs: t0 + 2_100 })]);
    expect(availableOf(after, money(10)).toFixed()).toBe('10');
  });

  it('a second release with a grace changes nothing; one without, or a close, ends it now', () => {
    const { state } = admit(emptyAccount, request('a', '7'), ctx(t0, '10'));
    const releasing = closeHold(state, 'a', 'released', t0, roomy, 2_000).state;
    const again = closeHold(releasing, 'a', 'released', t0 + 10, roomy, 2_000);
    expect(again.outcome.kind).toBe('already_releasing');
    expect(again.state).toBe(releasing);
    expect(closeHold(releasing, 'a', 'released', t0 + 10, roomy, 0).outcome).toMatchObject({
      kind: 'closed',
      hold: { status: 'released', closedMs: t0 + 10 },
    });
    expect(closeHold(releasing, 'a', 'closed', t0 + 10, roomy).outcome).toMatchObject({ kind: 'closed' });
  });

  it('never extends a hold: a grace past its expiry ends it at its expiry', () => {
    const { state } = admit(emptyAccount, request('a', '7', 1_000), ctx(t0, '10'));
    const releasing = closeHold(state, 'a', 'released', t0 + 500, roomy, 2_000);
    expect(releasing.outcome).toMatchObject({ kind: 'releasing', hold: { expiresMs: t0 + 1_000 } });
  });

  it('the stored form keeps the release instant', () => {
    const { state } = admit(emptyAccount, request('a', '7'), ctx(t0, '10'));
    const releasing = closeHold(state, 'a', 'released', t0 + 5, roomy, 2_000).state;
    expect(decodeAccount(encodeAccount(releasing))).toEqual(releasing);
  });
});
