import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { money } from '../../shared/money.js';
import { applyPosting, balanceOf, emptyState, type CreditState, type Posting } from './blocks.js';
import { accountInvariantProblems } from './invariants.js';
import { settleWindow, type ExistingBlock, type UsageCharge } from './timeline.js';

const start = Date.parse('2026-03-01T00:00:00Z');
const day = 86_400_000;

function stateWithBlock(amount: string): CreditState {
  const state = emptyState();
  applyPosting(
    state,
    { kind: 'purchase', amount: money(amount), blockId: 'b1', atMs: start - day, note: '' },
    { id: 'b1', source: 'purchase', createdAtMs: start - day, expiresAtMs: undefined },
  );
  return state;
}

describe('money-path invariants checked before a run writes', () => {
  it('hold for whatever the rules post: random usage, purchases joining mid-window, allowances and overage', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 500 }),
        fc.array(fc.record({ at: fc.integer({ min: 0, max: day - 1 }), cents: fc.integer({ min: 0, max: 50_000 }) }), {
          maxLength: 20,
        }),
        fc.array(fc.record({ at: fc.integer({ min: 0, max: day - 1 }), credits: fc.integer({ min: 1, max: 300 }) }), {
          maxLength: 3,
        }),
        fc.option(fc.integer({ min: 0, max: 100 }), { nil: undefined }),
        fc.boolean(),
        (opening, usage, purchases, allowance, overage) => {
          const state = opening === 0 ? emptyState() : stateWithBlock(String(opening));
          const before = balanceOf(state);
          const charges: UsageCharge[] = usage.map((u) => ({
            atMs: start + u.at,
            cost: money(u.cents).dividedBy(100),
            note: 'u',
            kind: 'usage',
          }));
          const existing: ExistingBlock[] = purchases.map((p, i) => ({
            atMs: start + p.at,
            id: `p${i}`,
            source: 'purchase',
            amount: money(p.credits),
            expiresAtMs: undefined,
          }));
          const policy = {
            allowedNegative: allowance === undefined ? undefined : money(allowance),
            overage: overage ? { pricePerCredit: money('0.5'), currency: 'USD' } : undefined,
          };
          const { postings } = settleWindow(
            state,
            { fromMs: start, untilMs: start + day },
            [],
            charges,
            policy,
            existing,
          );
          const joined = purchases.reduce((t, p) => t.plus(p.credits), money(0));
          expect(
            accountInvariantProblems({ account: 'c/credits', balanceBefore: before, state, postings, joined }),
          ).toEqual([]);
        },
      ),
      { numRuns: 300, seed: 20261130 },
    );
  });

  it('find postings that do not add up to the balance change (a posting lost, or its amount altered)', () => {
    const state = stateWithBlock('100');
    const before = balanceOf(state);
    const { postings } = settleWindow(
      state,
      { fromMs: start, untilMs: start + day },
      [],
      [{ atMs: start + 10, cost: money('12'), note: 'u', kind: 'usage' }],
      { allowedNegative: undefined, overage: undefined },
    );
    expect(
      accountInvariantProblems({ account: 'acme/credits', balanceBefore: before, state, postings, joined: money(0) }),
    ).toEqual([]);
    const altered: Posting[] = postings.map((p) => ({ ...p, amount: p.amount.plus('0.000000001') }));
    expect(
      accountInvariantProblems({
        account: 'acme/credits',
        balanceBefore: before,
        state,
        postings: altered,
        joined: money(0),
      }),
    ).toEqual(['acme/credits: balance moved by -12, but its postings sum to -11.999999999 and purchases joined 0']);
    expect(
      accountInvariantProblems({
        account: 'acme/credits',
        balanceBefore: before,
        state,
        postings: [],
        joined: money(0),
      })[0],
    ).toMatch(/postings sum to 0/);
    // A purchase that joined but is not counted as joined is a mismatch too.
    expect(
      accountInvariantProblems({ account: 'acme/credits', balanceBefore: before, state, postings, joined: money(5) }),
    ).toHaveLength(1);
  });

  it('find a block drawn below zero and a negative debt', () => {
    const state = stateWithBlock('10');
    state.blocks.get('b1')!.remaining = money('-0.5');
    state.debt = money('-1');
    const problems = accountInvariantProblems({
      account: 'acme/credits',
      balanceBefore: money('0.5'),
      state,
      postings: [],
      joined: money(0),
    });
    expect(problems).toEqual(['acme/credits: block b1 is below zero (-0.5)', 'acme/credits: debt is below zero (-1)']);
  });
});
