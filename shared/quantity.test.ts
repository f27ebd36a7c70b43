import { Decimal } from 'decimal.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatScaled, isWithinEventBound, parseQuantity, scaledToDecimal, type QuantityProblem } from './quantity.js';

const ExactDecimal = Decimal.clone({ precision: 100 });

/** The largest accepted quantity: 18 integer nines and 9 fraction nines, scaled by 10^9. */
const largestScaled = 10n ** 27n - 1n;

function accepted(value: unknown): bigint {
  const result = parseQuantity(value);
  if (!result.ok) throw new Error(`expected ${String(value)} to be accepted, got ${result.problem}`);
  return result.scaled;
}

function rejected(value: unknown): QuantityProblem {
  const result = parseQuantity(value);
  if (result.ok) throw new Error(`expected ${String(value)} to be rejected, got ${result.scaled}`);
  expect(result.message.length).toBeGreaterThan(0);
  return result.problem;
}

describe('parseQuantity, given a JavaScript number', () => {
  it('when it is an integer, then it is scaled by 10^9', () => {
    expect(accepted(0)).toBe(0n);
    expect(accepted(1)).toBe(1_000_000_000n);
    expect(accepted(2_000_000)).toBe(2_000_000_000_000_000n);
    expect(accepted(Number.MAX_SAFE_INTEGER)).toBe(9_007_199_254_740_991_000_000_000n);
  });

  it('when it is 0.1, then it is read as the decimal the sender wrote, not the nearest double', () => {
    expect(accepted(0.1)).toBe(100_000_000n);
    expect(accepted(12.5)).toBe(12_500_000_000n);
  });

  it('when its shortest text uses an exponent (1e-7), then it is expanded exactly', () => {
    expect(accepted(1e-7)).toBe(100n);
    expect(accepted(1e-9)).toBe(1n);
    expect(accepted(1.5e-8)).toBe(15n);
  });

  it('when it is an integer beyond 2^53 that still has 18 digits (1e17), then it is accepted as written', () => {
    expect(accepted(1e17)).toBe(10n ** 26n);
  });

  it('when it has more than 9 fraction digits (1e-10, 1.5e-9), then it is too precise', () => {
    expect(rejected(1e-10)).toBe('quantity_too_precise');
    expect(rejected(1.5e-9)).toBe('quantity_too_precise');
  });

  it('when it is 1e21 or 1e18 (19+ integer digits), then it is too large', () => {
    expect(rejected(1e21)).toBe('quantity_too_large');
    expect(rejected(1e18)).toBe('quantity_too_large');
  });

  it('when it is NaN or ±Infinity, then it is not finite', () => {
    expect(rejected(Number.NaN)).toBe('quantity_not_finite');
    expect(rejected(Number.POSITIVE_INFINITY)).toBe('quantity_not_finite');
    expect(rejected(Number.NEGATIVE_INFINITY)).toBe('quantity_not_finite');
  });

  it('when it is negative, then it is rejected as negative', () => {
    expect(rejected(-1)).toBe('quantity_negative');
    expect(rejected(-0.5)).toBe('quantity_negative');
    expect(rejected(-Number.MIN_VALUE)).toBe('quantity_negative');
  });

  it('when it is -0, then it is accepted as zero', () => {
    expect(accepted(-0)).toBe(0n);
  });
});

describe('parseQuantity, given a bigint', () => {
  it('when it has up to 18 digits, then it is exact even beyond 2^53', () => {
    expect(accepted(123_456_789_012_345_678n)).toBe(123_456_789_012_345_678_000_000_000n);
    expect(accepted(999_999_999_999_999_999n)).toBe(999_999_999_999_999_999_000_000_000n);
    expect(accepted(0n)).toBe(0n);
  });

  it('when it has 19 digits, then it is too large', () => {
    expect(rejected(1_000_000_000_000_000_000n)).toBe('quantity_too_large');
  });

  it('when it is negative, then it is rejected as negative', () => {
    expect(rejected(-1n)).toBe('quantity_negative');
  });
});

describe('parseQuantity, given a decimal string', () => {
  it('when it has trailing fraction zeros ("1.500"), then they add no precision', () => {
    expect(accepted('1.500')).toBe(1_500_000_000n);
    expect(accepted('1.5000000000000')).toBe(1_500_000_000n);
    expect(accepted('0.0000000010')).toBe(1n);
  });

  it('when it has exactly 9 fraction digits ("0.000000001"), then it is accepted', () => {
    expect(accepted('0.000000001')).toBe(1n);
    expect(accepted('12.345678901')).toBe(12_345_678_901n);
  });

  it('when it has 10 significant fraction digits ("0.0000000001"), then it is too precise', () => {
    expect(rejected('0.0000000001')).toBe('quantity_too_precise');
  });

  it('when it has 18 integer digits, then it is accepted; 19 are too large', () => {
    expect(accepted('999999999999999999.999999999')).toBe(largestScaled);
    expect(rejected('1000000000000000000')).toBe('quantity_too_large');
  });

  it('when it has leading zeros, then they do not count as integer digits', () => {
    expect(accepted('007')).toBe(7_000_000_000n);
    expect(accepted('0000000000000000000000001')).toBe(1_000_000_000n);
    expect(accepted('00.5')).toBe(500_000_000n);
  });

  it('when it is "-1", then it is rejected as negative', () => {
    expect(rejected('-1')).toBe('quantity_negative');
    expect(rejected('-0.5')).toBe('quantity_negative');
  });

  it.each(['1e5', ' 1', '1 ', '', '1.', '.5', '+1', '1,5', '0x10', 'abc', '١'])(
    'when it is %j, then it is malformed',
    (text) => {
      expect(rejected(text)).toBe('quantity_malformed');
    },
  );
});

describe('parseQuantity, given a value of the wrong type', () => {
  it.each([
    ['null', null],
    ['undefined', undefined],
    ['an object', {}],
    ['an array', [1]],
    ['a boolean', true],
  ])('when it is %s, then the problem is quantity_type', (_label, value) => {
    expect(rejected(value)).toBe('quantity_type');
  });
});

describe('formatScaled', () => {
  it('gives exactly 9 fraction digits', () => {
    expect(formatScaled(0n)).toBe('0.000000000');
    expect(formatScaled(1n)).toBe('0.000000001');
    expect(formatScaled(1_500_000_000n)).toBe('1.500000000');
    expect(formatScaled(largestScaled)).toBe('999999999999999999.999999999');
    expect(formatScaled(-1_500_000_001n)).toBe('-1.500000001');
  });

  it('round-trips through parseQuantity for accepted values', () => {
    for (const text of ['0', '0.000000001', '1.5', '2000000', '999999999999999999.999999999']) {
      const scaled = accepted(text);
      expect(accepted(formatScaled(scaled))).toBe(scaled);
    }
  });

  it('agrees with scaledToDecimal', () => {
    expect(scaledToDecimal(12_345_678_901n).toFixed()).toBe('12.345678901');
  });
});

describe('isWithinEventBound', () => {
  it('accepts 0 up to the largest 18.9-digit quantity and nothing outside', () => {
    expect(isWithinEventBound(0n)).toBe(true);
    expect(isWithinEventBound(largestScaled)).toBe(true);
    expect(isWithinEventBound(largestScaled + 1n)).toBe(false);
    expect(isWithinEventBound(-1n)).toBe(false);
  });
});

describe('properties', () => {
  const scaledInRange = fc.bigInt({ min: 0n, max: largestScaled });

  it('given any scaled value in range, formatScaled then parseQuantity gives it back', () => {
    fc.assert(
      fc.property(scaledInRange, (scaled) => {
        const result = parseQuantity(formatScaled(scaled));
        expect(result).toEqual({ ok: true, scaled });
      }),
    );
  });

  it('given many quantities, the sum of scaled bigints equals the decimal sum of their texts', () => {
    fc.assert(
      fc.property(fc.array(scaledInRange, { maxLength: 50 }), (values) => {
        const texts = values.map(formatScaled);
        const scaledSum = texts.reduce((sum, text) => sum + accepted(text), 0n);
        // Decimal's default 20 significant digits would round a 30-digit sum.
        const decimalSum = texts.reduce((sum, text) => sum.plus(text), new ExactDecimal(0));
        expect(formatScaled(scaledSum)).toBe(decimalSum.toFixed(9));
      }),
    );
  });
});
