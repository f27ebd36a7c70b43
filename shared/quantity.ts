/**
 * Event quantities as exact fixed-point integers: value × 10^9 in a bigint.
 *
 * SPEC §2 allows up to 18 integer and 9 fraction digits, so a scale of 10^9
 * holds every accepted quantity exactly and sums never round. Aggregation
 * (the hot path) adds bigints; decimal.js is kept for pricing, where division
 * happens.
 */
import { Decimal } from 'decimal.js';

export const quantityScale = 9;
const scaleFactor = 10n ** BigInt(quantityScale);
export const quantityIntegerDigitsMax = 18;
const quantityMax = 10n ** BigInt(quantityIntegerDigitsMax + quantityScale) - 1n;

export type QuantityProblem =
  | 'quantity_type'
  | 'quantity_not_finite'
  | 'quantity_negative'
  | 'quantity_malformed'
  | 'quantity_too_large'
  | 'quantity_too_precise';

export type QuantityResult = { ok: true; scaled: bigint } | { ok: false; problem: QuantityProblem; message: string };

const decimalText = /^(\d+)(?:\.(\d+))?$/;

function fromDecimalText(text: string): QuantityResult {
  const match = decimalText.exec(text);
  if (match === null) {
    if (/^-\d/.test(text)) return { ok: false, problem: 'quantity_negative', message: 'quantity must be ≥ 0' };
    return { ok: false, problem: 'quantity_malformed', message: 'quantity must be a plain decimal such as "12.5"' };
  }
  const integerPart = match[1]!.replace(/^0+(?=\d)/, '');
  // Trailing zeros add no precision: "1.500" is 1.5 and is accepted.
  const fractionPart = (match[2] ?? '').replace(/0+$/, '');
  if (integerPart.length > quantityIntegerDigitsMax) {
    return {
      ok: false,
      problem: 'quantity_too_large',
      message: `quantity has more than ${quantityIntegerDigitsMax} integer digits`,
    };
  }
  if (fractionPart.length > quantityScale) {
    return {
      ok: false,
      problem: 'quantity_too_precise',
      message: `quantity has more than ${quantityScale} fraction digits`,
    };
  }
  const scaled = BigInt(integerPart) * scaleFactor + BigInt(fractionPart.padEnd(quantityScale, '0') || '0');
  return { ok: true, scaled };
}

/** Validates a quantity as decoded from MessagePack or JSON. */
export function parseQuantity(value: unknown): QuantityResult {
  if (typeof value === 'number') {
    if (!Number.isFinite(value))
      return { ok: false, problem: 'quantity_not_finite', message: 'quantity must be finite' };
    if (value < 0 || Object.is(value, -0)) {
      if (value === 0) return { ok: true, scaled: 0n };
      return { ok: false, problem: 'quantity_negative', message: 'quantity must be ≥ 0' };
    }
    if (Number.isSafeInteger(value)) return fromDecimalText(String(value));
    // The shortest text that round-trips the double is what the sender meant
    // (0.1, not 0.1000000000000000055…); exponent forms are expanded by Decimal.
    const text = String(value);
    return fromDecimalText(text.includes('e') ? new Decimal(text).toFixed() : text);
  }
  if (typeof value === 'bigint') {
    if (value < 0n) return { ok: false, problem: 'quantity_negative', message: 'quantity must be ≥ 0' };
    return fromDecimalText(value.toString());
  }
  if (typeof value === 'string') return fromDecimalText(value);
  return { ok: false, problem: 'quantity_type', message: 'quantity must be a number or a decimal string' };
}

/** Scaled bigint → canonical decimal text with exactly 9 fraction digits (TabSeparated for Decimal(38, 9)). */
export function formatScaled(scaled: bigint): string {
  const negative = scaled < 0n;
  const abs = negative ? -scaled : scaled;
  const integer = abs / scaleFactor;
  const fraction = (abs % scaleFactor).toString().padStart(quantityScale, '0');
  return `${negative ? '-' : ''}${integer}.${fraction}`;
}

export function scaledToDecimal(scaled: bigint): Decimal {
  return new Decimal(formatScaled(scaled));
}

/** Sums stay below 10^29 (38 − 9 digits) in ClickHouse's Decimal(38, 9); this is the per-event bound. */
export function isWithinEventBound(scaled: bigint): boolean {
  return scaled >= 0n && scaled <= quantityMax;
}
