import { describe, expect, it } from 'vitest';
import {
  amountScale,
  formatAmount,
  formatAtPrecision,
  money,
  parseStoredDecimal,
  sumMoney,
  toLedgerAmount,
} from './money.js';

describe('toLedgerAmount', () => {
  it('keeps 9 fraction digits', () => {
    expect(amountScale).toBe(9);
    expect(formatAmount(toLedgerAmount(money('1.123456789')))).toBe('1.123456789');
  });

  it('given exactly half a nano-credit (0.0000000005), when fixed, then it rounds up to 0.000000001', () => {
    expect(formatAmount(toLedgerAmount(money('0.0000000005')))).toBe('0.000000001');
    expect(formatAmount(toLedgerAmount(money('2.0000000015')))).toBe('2.000000002');
  });

  it('given just under half (0.00000000049), when fixed, then it rounds down to 0', () => {
    expect(formatAmount(toLedgerAmount(money('0.00000000049')))).toBe('0');
    expect(formatAmount(toLedgerAmount(money('0.000000001499999999999')))).toBe('0.000000001');
  });

  it('given a negative half, when fixed, then it rounds away from zero like the positive one', () => {
    expect(formatAmount(toLedgerAmount(money('-0.0000000005')))).toBe('-0.000000001');
  });

  it('given a value with many digits, when fixed, then nothing but the 10th+ fraction digits changes', () => {
    expect(formatAmount(toLedgerAmount(money('12345678901234567890123456789.1234567894')))).toBe(
      '12345678901234567890123456789.123456789',
    );
  });
});

describe('formatAmount', () => {
  it('writes tiny and huge amounts without an exponent', () => {
    expect(formatAmount(money('1e-9'))).toBe('0.000000001');
    expect(formatAmount(money('1e25'))).toBe('10000000000000000000000000');
    expect(formatAmount(money('-1e-9'))).toBe('-0.000000001');
  });

  it('writes negative zero as "0"', () => {
    expect(formatAmount(money('-0'))).toBe('0');
    expect(formatAmount(money('-0.000'))).toBe('0');
    expect(formatAmount(money('1').minus(money('1')).negated())).toBe('0');
  });

  it('trims trailing zeros', () => {
    expect(formatAmount(money('12.000'))).toBe('12');
    expect(formatAmount(money('0.040'))).toBe('0.04');
    expect(formatAmount(money('-3.50'))).toBe('-3.5');
    expect(formatAmount(money('100.000000000'))).toBe('100');
  });
});

describe('formatAtPrecision', () => {
  it('pads to the credit unit precision', () => {
    expect(formatAtPrecision(money('88'), 2)).toBe('88.00');
    expect(formatAtPrecision(money('0.5'), 0)).toBe('1');
    expect(formatAtPrecision(money('1.5'), 9)).toBe('1.500000000');
  });

  it('rounds half-up', () => {
    expect(formatAtPrecision(money('0.125'), 2)).toBe('0.13');
    expect(formatAtPrecision(money('0.124999999'), 2)).toBe('0.12');
    expect(formatAtPrecision(money('-0.125'), 2)).toBe('-0.13');
  });

  it('given a tiny negative balance that rounds to zero, then it shows "0.00", not "-0.00"', () => {
    // formatAmount already refuses to print "-0"; the display text should not either.
    expect(formatAtPrecision(money('-0.001'), 2)).toBe('0.00');
  });
});

describe('parseStoredDecimal', () => {
  it('reads ClickHouse 18.16 padded text and chDB trimmed text as the same value', () => {
    const padded = parseStoredDecimal('1.500000000');
    const trimmed = parseStoredDecimal('1.5');
    expect(padded.eq(trimmed)).toBe(true);
    expect(formatAmount(padded)).toBe('1.5');
  });

  it('reads negatives and integers exactly', () => {
    expect(formatAmount(parseStoredDecimal('-12.000000001'))).toBe('-12.000000001');
    expect(formatAmount(parseStoredDecimal('99999999999999999999999999999.999999999'))).toBe(
      '99999999999999999999999999999.999999999',
    );
  });

  it.each(['1e5', 'abc', '', ' 1', '1.', '.5', '+1', 'NaN', 'Infinity', '1,5'])('rejects %j', (text) => {
    expect(() => parseStoredDecimal(text)).toThrow(RangeError);
  });
});

describe('sumMoney', () => {
  it('adds exactly where floats would not', () => {
    expect(formatAmount(sumMoney([money('0.1'), money('0.2')]))).toBe('0.3');
    expect(formatAmount(sumMoney([]))).toBe('0');
  });
});
