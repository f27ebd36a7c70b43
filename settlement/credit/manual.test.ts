/**
 * Manual adjustments in the credit rules: a credit adjustment is a block that
 * burns with grants (free credit before paid on a tie), a debit adjustment is
 * drawn from the live blocks in burn order at its instant, and the money-path
 * invariants hold for any mix of them with usage.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { money } from '../../shared/money.js';
import { balanceOf, compareBlocks, decodeState, emptyState, encodeState, openBlock, type Block } from './blocks.js';
import { accountInvariantProblems } from './invariants.js';
import { settleWindow, type ExistingBlock, type UsageCharge } from './timeline.js';

const minute = 60_000;
const t0 = Date.parse('2026-03-01T00:00:00Z');
const noAllowance = { allowedNegative: undefined, overage: undefined };

function block(id: string, source: Block['source'], expiresAtMs: number | undefined, createdAtMs = t0): Block {
  return { id, source, amount: money(10), remaining: money(10), createdAtMs, expiresAtMs };
}

describe('manual adjustments in the credit rules', () => {
  it('burns a credit adjustment with grants: before purchases on an expiry tie, by age among free credit', () => {
    expect(compareBlocks(block('m', 'manual', undefined), block('p', 'purchase', undefined))).toBeLessThan(0);
    expect(compareBlocks(block('g', 'grant', 5, t0), block('m', 'manual', 5, t0 + 1))).toBeLessThan(0);
    expect(compareBlocks(block('p', 'purchase', 4), block('m', 'manual', 5))).toBeLessThan(0);
  });

  it('keeps a credit adjustment block through a snapshot', () => {
    const state = emptyState();
    openBlock(state, { id: 'm', source: 'manual', amount: money('20'), atMs: t0, expiresAtMs: t0 + 9, note: '' });
    expect(decodeState(encodeState(state)).blocks.get('m')).toMatchObject({ source: 'manual', expiresAtMs: t0 + 9 });
  });

  it('draws a debit from the live blocks in burn order at its instant, leaving the balance where the ledger has it', () => {
    const state = emptyState();
    openBlock(state, {
      id: 'buy',
      source: 'purchase',
      amount: money('100'),
      atMs: t0,
      expiresAtMs: undefined,
      note: '',
    });
    const existing: ExistingBlock[] = [
      { atMs: t0 + minute, id: 'bonus', source: 'manual', amount: money('20'), expiresAtMs: t0 + 25 * minute },
      {
        atMs: t0 + 10 * minute,
        id: 'chargeback',
        source: 'manual',
        amount: money('-30'),
        expiresAtMs: undefined,
        debit: true,
      },
    ];
    const usage: UsageCharge[] = [{ atMs: t0 + 5 * minute, cost: money('10'), kind: 'usage', note: 'u', ref: 0 }];
    const { postings, report } = settleWindow(
      state,
      { fromMs: t0, untilMs: t0 + 30 * minute },
      [],
      usage,
      noAllowance,
      existing,
    );
    expect(state.blocks.get('bonus')!.remaining.toFixed()).toBe('0');
    expect(state.blocks.get('buy')!.remaining.toFixed()).toBe('80');
    expect(state.debt.toFixed()).toBe('0');
    expect(report.expired.toFixed()).toBe('0');
    // The run's own postings move the debit onto blocks without changing the balance; the usage costs 10.
    expect(postings.reduce((s, p) => s.plus(p.amount), money(0)).toFixed()).toBe('-10');
    expect(balanceOf(state).toFixed()).toBe('80');
  });

  it('keeps every money-path invariant for any mix of credits, debits and usage', () => {
    const event = fc.record({
      minute: fc.integer({ min: 0, max: 59 }),
      cents: fc.integer({ min: 1, max: 5_000 }),
      kind: fc.constantFrom('credit', 'debit', 'usage'),
      expiresIn: fc.option(fc.integer({ min: 1, max: 90 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(event, { maxLength: 12 }), fc.integer({ min: 0, max: 10_000 }), (events, bought) => {
        const state = emptyState();
        openBlock(state, {
          id: 'buy',
          source: 'purchase',
          amount: money(bought).dividedBy(100),
          atMs: t0 - minute,
          expiresAtMs: undefined,
          note: '',
        });
        const before = balanceOf(state);
        const existing: ExistingBlock[] = [];
        const usage: UsageCharge[] = [];
        let joined = money(0);
        events.forEach((e, i) => {
          const atMs = t0 + e.minute * minute;
          const amount = money(e.cents).dividedBy(100);
          if (e.kind === 'usage') usage.push({ atMs, cost: amount, kind: 'usage', note: '', ref: i });
          else if (e.kind === 'credit') {
            existing.push({
              atMs,
              id: `c${i}`,
              source: 'manual',
              amount,
              expiresAtMs: e.expiresIn === undefined ? undefined : atMs + e.expiresIn * minute,
            });
            joined = joined.plus(amount);
          } else {
            existing.push({
              atMs,
              id: `d${i}`,
              source: 'manual',
              amount: amount.negated(),
              expiresAtMs: undefined,
              debit: true,
            });
            joined = joined.minus(amount);
          }
        });
        const { postings } = settleWindow(
          state,
          { fromMs: t0, untilMs: t0 + 60 * minute },
          [],
          usage,
          { allowedNegative: money(1_000_000), overage: undefined },
          existing,
        );
        expect(
          accountInvariantProblems({ account: 'a/credits', balanceBefore: before, state, postings, joined }),
        ).toEqual([]);
        // No block holds credits while the customer owes credits.
        const live = [...state.blocks.values()].filter(
          (b) => b.remaining.gt(0) && (b.expiresAtMs === undefined || b.expiresAtMs > t0 + 60 * minute),
        );
        expect(state.debt.gt(0) && live.length > 0).toBe(false);
      }),
    );
  });
});
