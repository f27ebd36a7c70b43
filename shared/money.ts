/**
 * Money and credit amounts: decimal.js with a precision far above anything we
 * store, so intermediate products never round; rounding happens once, where a
 * ledger amount is fixed, at `amountScale` fraction digits, half-up.
 */
import { Decimal } from 'decimal.js';

// 60 significant digits: a Decimal(38, 9) quantity times a price with up to 18
// fraction digits fits without rounding.
export const Money = Decimal.clone({ precision: 60, rounding: Decimal.ROUND_HALF_UP, toExpNeg: -40, toExpPos: 60 });
export type Money = Decimal;

/** Ledger amounts are stored as Decimal(38, 9). */
export const amountScale = 9;

export function money(value: string | number | Decimal): Decimal {
  return new Money(value);
}

/** Fix an amount for the ledger: rounded half-up to the ledger's 9 fraction digits. */
export function toLedgerAmount(value: Decimal): Decimal {
  return value.toDecimalPlaces(amountScale, Decimal.ROUND_HALF_UP);
}

/**
 * Canonical text: no exponent, no trailing zeros ("12", "0.04", "-3.5").
 * toFixed() without places is exact and never uses an exponent, whatever
 * the Decimal's configuration, so no copy is needed (the ledger writer calls
 * this for every amount).
 */
export function formatAmount(value: Decimal): string {
  const text = value.toFixed();
  return text === '-0' ? '0' : text;
}

/** Text for display at a credit unit's precision (e.g. 2 → "88.00"). */
export function formatAtPrecision(value: Decimal, precision: number): string {
  const text = new Money(value).toFixed(precision, Decimal.ROUND_HALF_UP);
  // -0.001 shown at 2 places is zero, not "-0.00".
  return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text;
}

/** Exact decimal text from storage (18.16 pads "1.500000000", chDB trims "1.5"). */
export function parseStoredDecimal(text: string): Decimal {
  if (!/^-?\d+(\.\d+)?$/.test(text)) throw new RangeError(`not a stored decimal: ${JSON.stringify(text)}`);
  return new Money(text);
}

export function sumMoney(values: Iterable<Decimal>): Decimal {
  let total = new Money(0);
  for (const value of values) total = total.plus(value);
  return total;
}
