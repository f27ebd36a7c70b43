/**
 * The crossing rule alone (crossings.ts): one notice per crossing, recovered
 * when back above, episodes never reused, stale figures ignored, the top-up
 * cap per UTC day. A property test replays random balance paths against a
 * reference that counts crossings by walking the path.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { money } from '../../shared/money.js';
import {
  belowEveryCondition,
  emptyCrossingState,
  evaluateCrossings,
  markTopUpPosted,
  withoutOutbox,
  type AccountRules,
  type CrossingState,
} from './crossings.js';

const account = { customer: 'acme', unit: 'credits' };
const t0 = Date.parse('2026-11-30T10:00:00Z');

function step(state: CrossingState, available: string, atMs: number, rules: AccountRules, allowance = '0') {
  return evaluateCrossings(
    account,
    state,
    { available: money(available), allowance: money(allowance), readAtMs: atMs },
    rules,
  );
}

const lowRules: AccountRules = { low: [money(100), money(10)], topUp: undefined };

describe('balance crossings', () => {
  it('given thresholds 100 and 10, when available falls 150 → 50 → 5 → 0 → 120, then low 100, low 10, exhausted, then three recoveries', () => {
    let state = emptyCrossingState();
    const types: string[] = [];
    for (const [i, available] of ['150', '50', '5', '0', '120'].entries()) {
      const next = step(state, available, t0 + i * 1000, lowRules);
      types.push(
        ...next.added.map(
          (a) =>
            `${a.notice.type}:${a.notice.type === 'balance.recovered' && a.notice.data.threshold === null ? a.notice.data.recovered_from : a.notice.data.threshold}`,
        ),
      );
      state = next.state;
    }
    expect(types).toEqual([
      'balance.low:100',
      'balance.low:10',
      'balance.exhausted:null',
      'balance.recovered:100',
      'balance.recovered:10',
      'balance.recovered:balance.exhausted',
    ]);
  });

  it('given the names the customer sees for the unit, then every notice carries them', () => {
    const named = { ...account, names: { unit_name: 'AI credits', unit_internal_name: 'ai' } };
    const { added } = evaluateCrossings(
      named,
      emptyCrossingState(),
      { available: money('5'), allowance: money(0), readAtMs: t0 },
      lowRules,
    );
    expect(added.length).toBeGreaterThan(0);
    for (const { notice } of added)
      expect(notice.data).toMatchObject({
        customer: 'acme',
        unit: 'credits',
        unit_name: 'AI credits',
        unit_internal_name: 'ai',
      });
  });

  it('given a crossing decided, when the same or older figures are evaluated again, then nothing changes and the state is the same object', () => {
    const first = step(emptyCrossingState(), '50', t0, lowRules);
    expect(first.added).toHaveLength(1);
    expect(step(first.state, '50', t0 + 1, lowRules).state).toBe(first.state);
    expect(step(first.state, '500', t0 - 1, lowRules).state).toBe(first.state);
  });

  it('given the same state and figures, when two evaluators decide, then they produce the same notice ids (deterministic)', () => {
    const a = step(emptyCrossingState(), '5', t0, lowRules);
    const b = step(emptyCrossingState(), '5', t0, lowRules);
    expect(a.added.map((x) => x.notice.id)).toEqual(b.added.map((x) => x.notice.id));
    expect(new Set(a.added.map((x) => x.notice.id)).size).toBe(a.added.length);
  });

  it('given an allowance of 5, then exhausted at available −5 and over limit below it', () => {
    const rules: AccountRules = { low: [], topUp: undefined };
    const atZero = step(emptyCrossingState(), '0', t0, rules, '5');
    expect(atZero.added).toEqual([]);
    const atMinus5 = step(atZero.state, '-5', t0 + 1, rules, '5');
    expect(atMinus5.added.map((a) => a.notice.type)).toEqual(['balance.exhausted']);
    const below = step(atMinus5.state, '-5.000000001', t0 + 2, rules, '5');
    expect(below.added.map((a) => a.notice.type)).toEqual(['balance.over_limit']);
    expect(below.added[0]!.notice.data).toMatchObject({ available: '-5.000000001', allowance: '5' });
  });

  it('given a top-up rule with max_per_day 2, when available crosses below 20 three times in a day, then two requests, the third capped; a new UTC day asks again', () => {
    const rules: AccountRules = {
      low: [],
      topUp: { below: money(20), package: 'credits-100', maxPerDay: 2, mode: 'confirm' },
    };
    let state = emptyCrossingState();
    const requested: string[] = [];
    const path = ['30', '10', '30', '10', '30', '10'];
    path.forEach((available, i) => {
      const next = step(state, available, t0 + i * 1000, rules);
      requested.push(...next.added.filter((a) => a.notice.type === 'top_up.requested').map((a) => a.notice.id));
      state = next.state;
    });
    expect(requested).toHaveLength(2);
    expect(state.topUp).toMatchObject({ requested: 2, capped: 1 });
    expect(state.topUp.requests.map((r) => r.status)).toEqual(['pending', 'pending']);
    const confirmed = markTopUpPosted(state, requested[0]!);
    expect(confirmed.topUp.requests.map((r) => r.status)).toEqual(['posted', 'pending']);
    const nextDay = t0 + 24 * 3_600_000;
    const up = step(confirmed, '30', nextDay, rules);
    const down = step(up.state, '10', nextDay + 1, rules);
    expect(down.added.map((a) => a.notice.type)).toEqual(['top_up.requested']);
    expect(down.state.topUp).toMatchObject({ requested: 1, capped: 0 });
  });

  it('given a trusted rule, then the request carries the purchase to post under its own id', () => {
    const rules: AccountRules = {
      low: [],
      topUp: { below: money(20), package: 'credits-100', maxPerDay: 1, mode: 'trusted' },
    };
    const next = step(emptyCrossingState(), '10', t0, rules);
    const item = next.added.find((a) => a.notice.type === 'top_up.requested')!;
    expect(item.purchase).toEqual({ package: 'credits-100', key: item.notice.id });
    expect(item.notice.data.request_id).toBe(item.notice.id);
  });

  it('knows when figures are below every condition (usage can then cross nothing), and an account without rules is not', () => {
    const figures = (available: string) => ({ available: money(available), allowance: money(0), readAtMs: t0 });
    expect(belowEveryCondition(figures('-1'), lowRules)).toBe(true);
    expect(belowEveryCondition(figures('0'), lowRules)).toBe(false); // exhausted, but not over the limit
    expect(belowEveryCondition(figures('5'), lowRules)).toBe(false);
  });

  it('given published notices, when they are removed from the outbox, then only those go', () => {
    const next = step(emptyCrossingState(), '5', t0, lowRules);
    const first = next.state.outbox[0]!.notice.id;
    const after = withoutOutbox(next.state, new Set([first]));
    expect(after.outbox.map((o) => o.notice.id)).not.toContain(first);
    expect(after.outbox).toHaveLength(next.state.outbox.length - 1);
    expect(withoutOutbox(after, new Set(['ntc_other']))).toBe(after);
  });

  it('property: for any balance path, each threshold emits exactly one low per downward crossing and one recovered per upward one, with ids never repeated', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: -30, max: 130 }), { minLength: 1, maxLength: 60 }),
        fc.uniqueArray(fc.integer({ min: 0, max: 120 }), { minLength: 1, maxLength: 4 }),
        (path, thresholds) => {
          const rules: AccountRules = { low: thresholds.map((t) => money(t)), topUp: undefined };
          let state = emptyCrossingState();
          const ids = new Set<string>();
          const counted = new Map<string, number>();
          path.forEach((available, i) => {
            const next = step(state, String(available), t0 + i, rules);
            for (const { notice } of next.added) {
              expect(ids.has(notice.id)).toBe(false);
              ids.add(notice.id);
              const key = `${notice.type}:${notice.data.threshold}`;
              counted.set(key, (counted.get(key) ?? 0) + 1);
            }
            state = next.state;
          });
          // Reference: walk the path from "above everything".
          for (const t of thresholds) {
            let below = false;
            let down = 0;
            let up = 0;
            for (const available of path) {
              if (!below && available < t) {
                below = true;
                down++;
              } else if (below && available >= t) {
                below = false;
                up++;
              }
            }
            expect(counted.get(`balance.low:${t}`) ?? 0).toBe(down);
            expect(counted.get(`balance.recovered:${t}`) ?? 0).toBe(up);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
