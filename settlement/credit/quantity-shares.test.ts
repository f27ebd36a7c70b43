import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { money } from '../../shared/money.js';
import { postingQuantities, quantityShares } from './quantity-shares.js';

const decimal = (max: number) =>
  fc.bigInt({ min: 0n, max: BigInt(max) * 1_000_000_000n }).map((n) => money(n.toString()).dividedBy(1e9));

describe('quantityShares', () => {
  it('splits a line drawn from two blocks by what each paid: 10 credits for 2,000,000 tokens, 4 + 6', () => {
    const shares = quantityShares(money('2000000'), [money('-4'), money('-6')]);
    expect(shares.map(String)).toEqual(['800000', '1200000']);
  });

  it('gives the remainder of a rounded share to the last entry', () => {
    const shares = quantityShares(money('1'), [money('1'), money('1'), money('1')]);
    expect(shares.map(String)).toEqual(['0.333333333', '0.333333333', '0.333333334']);
  });

  it('gives free usage wholly to the first entry', () => {
    expect(quantityShares(money('7'), [money('0'), money('0')]).map(String)).toEqual(['7', '0']);
  });

  it('always sums to the line, never below zero, each within 1e-9 of its exact proportion', () => {
    fc.assert(
      fc.property(decimal(10_000_000), fc.array(decimal(1_000), { minLength: 1, maxLength: 6 }), (q, amounts) => {
        const shares = quantityShares(q, amounts);
        expect(shares.reduce((s, x) => s.plus(x), money(0)).equals(q)).toBe(true);
        const total = amounts.reduce((s, a) => s.plus(a), money(0));
        shares.forEach((share, i) => {
          expect(share.isNegative()).toBe(false);
          expect(share.decimalPlaces()).toBeLessThanOrEqual(9);
          if (!total.isZero() && i < shares.length - 1) {
            const exact = q.times(amounts[i]!).dividedBy(total);
            expect(exact.minus(share).abs().lessThan(money('1e-9'))).toBe(true);
          }
        });
      }),
    );
  });
});

describe('postingQuantities', () => {
  it('shares each charge over its own postings and leaves postings of no charge out', () => {
    const postings = [
      { amount: money('-3'), ref: 0 },
      { amount: money('5') }, // a grant
      { amount: money('-1'), ref: 1 },
      { amount: money('-9'), ref: 0 },
    ];
    const out = postingQuantities(postings, (ref) => [money('120'), money('50')][ref]!);
    expect([...out.entries()].map(([i, q]) => [i, q.toString()])).toEqual([
      [0, '30'],
      [3, '90'],
      [2, '50'],
    ]);
  });
});
