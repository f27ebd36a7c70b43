/**
 * Pure pricing rules: which rate card version is in force, which row prices a
 * usage line (the most specific match wins), and what it costs. Exact
 * decimals throughout; the cost is fixed to the ledger's 9 places once.
 */
import type { Decimal } from 'decimal.js';
import type { Price, RateCardVersion, RateRow } from '../shared/catalog.js';
import { money, toLedgerAmount } from '../shared/money.js';

/** The version in force at `atMs`: the latest whose effective_from ≤ atMs. */
export function versionAt(card: readonly RateCardVersion[], atMs: number): RateCardVersion | undefined {
  let found: RateCardVersion | undefined;
  for (const version of card) {
    if (version.effectiveFromMs <= atMs) found = version;
    else break;
  }
  return found;
}

/**
 * The row for a meter and dimension values: every key of the row's match must
 * equal the usage's value; among those, the row matching the most keys wins.
 * The catalog refuses two rows with identical meter and match, and rows with
 * the same number of keys cannot both match unless their keys differ — then
 * the tie is broken by key names so the choice never depends on row order.
 */
export function matchRow(version: RateCardVersion, meter: string, dimensions: Readonly<Record<string, string>>): RateRow | undefined {
  let best: RateRow | undefined;
  let bestKeys = -1;
  let bestSignature = '';
  for (const row of version.rows) {
    if (row.meter !== meter) continue;
    const keys = Object.keys(row.match);
    if (!keys.every((k) => dimensions[k] === row.match[k])) continue;
    const signature = keys.sort().join('\u0000');
    if (keys.length > bestKeys || (keys.length === bestKeys && signature < bestSignature)) {
      best = row;
      bestKeys = keys.length;
      bestSignature = signature;
    }
  }
  return best;
}

/** Cost of `quantity` at `price`, rounded half-up to 9 fraction digits. */
export function costOf(price: Price, quantity: Decimal): Decimal {
  if (price.model === 'unit') return toLedgerAmount(price.amount.times(quantity));
  if (price.rounding === 'up') {
    // Whole packages, decided exactly: no quotient is rounded before the ceiling.
    const whole = quantity.dividedToIntegerBy(price.size);
    const packages = quantity.modulo(price.size).isZero() ? whole : whole.plus(1);
    return toLedgerAmount(price.amount.times(packages));
  }
  // Multiply before dividing: the product is exact, so the one rounding of the
  // quotient (at 60 digits) cannot move a half-nano-credit tie.
  return toLedgerAmount(price.amount.times(quantity).dividedBy(price.size));
}

export function zero(): Decimal {
  return money(0);
}
