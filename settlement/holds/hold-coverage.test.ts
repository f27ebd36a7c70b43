/**
 * Holds and the usage that names them (docs/holds.md): random interleavings
 * of reserves, releases, usage (naming an open hold, a closed one, or none)
 * and settlement runs, decided from live figures that may lag — never admit
 * past what those figures allow, and a hold and the usage it covers are
 * never both subtracted, nor neither.
 */
import fc from 'fast-check';
import { Decimal } from 'decimal.js';
import { describe, expect, it } from 'vitest';
import { money } from '../../shared/money.js';
import {
  admit,
  availableOf,
  closeHold,
  coveredOf,
  emptyAccount,
  reservedOf,
  type AccountLimits,
  type AccountState,
} from './hold-account.js';

const t0 = Date.parse('2026-03-01T00:00:00Z');
const limits: AccountLimits = {
  openHoldsMax: 1_000,
  closedHoldsMax: 100_000,
  closedInValueMax: 100_000,
  closedRetentionMs: 1e12,
  usageKeysMax: 16,
};

/** One committed piece of usage: its live cost and the hold it names ('' for none). */
interface Usage {
  hold: string;
  cost: Decimal;
}

/** What a live read at some point saw: base (balance − all usage committed so far) and each hold's usage cost. */
function snapshot(balance: Decimal, usage: readonly Usage[]): { base: Decimal; covered: Map<string, Decimal> } {
  let base = balance;
  const covered = new Map<string, Decimal>();
  for (const u of usage) {
    base = base.minus(u.cost);
    if (u.hold !== '') covered.set(u.hold, (covered.get(u.hold) ?? money(0)).plus(u.cost));
  }
  return { base, covered };
}

type Step =
  | { op: 'reserve'; amount: number; lag: number }
  | { op: 'release'; pick: number }
  | { op: 'usage'; pick: number; cost: number; named: 'open' | 'closed' | 'none' }
  | { op: 'settle' };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant('reserve' as const), amount: fc.integer({ min: 1, max: 40 }), lag: fc.nat({ max: 3 }) }),
  fc.record({ op: fc.constant('release' as const), pick: fc.nat() }),
  fc.record({
    op: fc.constant('usage' as const),
    pick: fc.nat(),
    cost: fc.integer({ min: 0, max: 30 }),
    named: fc.constantFrom('open' as const, 'closed' as const, 'none' as const),
  }),
  fc.record({ op: fc.constant('settle' as const) }),
);

describe('holds and the usage naming them (property)', () => {
  it('every admission fits the figures it read, and available counts each hold or its usage exactly once', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 80 }), fc.integer({ min: 0, max: 100 }), (steps, balanceUnits) => {
        const balance = money(balanceUnits);
        const allowance = money(5);
        let state: AccountState = emptyAccount;
        const usage: Usage[] = [];
        // Usage committed before each step: a decision may read figures up to `lag` steps old.
        const history: number[] = [];
        const closed: string[] = [];
        let settled = money(0);
        let next = 0;
        for (const s of steps) {
          history.push(usage.length);
          if (s.op === 'reserve') {
            const seen = usage.slice(0, history[Math.max(0, history.length - 1 - s.lag)]);
            const { base, covered } = snapshot(balance, seen);
            const id = `h${next++}`;
            const result = admit(
              state,
              { id, fp: 'fp', amount: money(s.amount), ttlMs: 1e9, metadata: undefined },
              { nowMs: t0, base, allowance, limits, covered },
            );
            state = result.state;
            if (result.outcome.kind === 'created') {
              // The figures this decision read: their spend plus every open hold's reserve fits balance + allowance.
              let reserved = money(0);
              for (const hold of state.holds) reserved = reserved.plus(reservedOf(hold, covered));
              expect(balance.minus(base).plus(reserved).lessThanOrEqualTo(balance.plus(allowance))).toBe(true);
            } else expect(result.outcome.kind).toBe('insufficient');
          } else if (s.op === 'release' && state.holds.length > 0) {
            const hold = state.holds[s.pick % state.holds.length]!;
            state = closeHold(state, hold.id, 'released', t0, limits).state;
            closed.push(hold.id);
          } else if (s.op === 'usage') {
            const pool = s.named === 'open' ? state.holds.map((h) => h.id) : s.named === 'closed' ? closed : [];
            usage.push({ hold: pool.length === 0 ? '' : pool[s.pick % pool.length]!, cost: money(s.cost) });
          } else if (s.op === 'settle') {
            // A run moves pending into settled: available does not move, coverage (all of a hold's usage) neither.
            settled = usage.reduce((sum, u) => sum.plus(u.cost), money(0));
          }

          // Exactly once, from current figures: each open hold counts max(amount − its usage, 0), each usage its cost.
          const { base, covered } = snapshot(balance, usage);
          let expected = balance;
          for (const u of usage) expected = expected.minus(u.cost);
          for (const hold of state.holds) {
            const spent = covered.get(hold.id) ?? money(0);
            expected = expected.minus(Decimal.max(money(hold.amount).minus(spent), 0));
          }
          expect(availableOf(state, base, covered).toFixed()).toBe(expected.toFixed());
          expect(coveredOf(state, covered).lessThanOrEqualTo(state.held)).toBe(true);
          expect(settled.lessThanOrEqualTo(balance.minus(base))).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});
