/**
 * Pure pricing rules: which rate card version is in force, which row prices a
 * usage line (the most specific match wins), and what it costs. Exact
 * decimals throughout; the cost is fixed to the ledger's 9 places once.
 */
import type { Decimal } from 'decimal.js';
import type { Price, PriceTier, RateCardVersion, RateRow } from '../catalog/model.js';
import type { Aggregation } from '../shared/events/meters.js';
import { amountScale, money, toLedgerAmount } from '../shared/money.js';

/**
 * Every price counts usage over the customer's calendar month in UTC (tiers,
 * whole packages, a max meter's peak): the month containing `sec` starts
 * here, epoch s. (A calendar month rather than a billing term: usage needs no
 * subscription to be priced.)
 */
export function pricingMonthStartSec(sec: number): number {
  const d = new Date(sec * 1000);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
}

/** Identifies a row within its version: the catalog refuses two rows with the same meter and match. */
export function rowSignature(row: RateRow): string {
  return Object.keys(row.match)
    .sort()
    .map((k) => `${k}\u0000${row.match[k]}`)
    .join('\u0001');
}

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
export function matchRow(
  version: RateCardVersion,
  meter: string,
  dimensions: Readonly<Record<string, string>>,
): RateRow | undefined {
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

/**
 * The exact cost of the first `quantity` units of a period under graduated
 * tiers: each tier prices the part of [0, quantity) that falls into it.
 */
export function graduatedTotal(tiers: readonly PriceTier[], quantity: Decimal): Decimal {
  let total = money(0);
  let lower = money(0);
  for (const tier of tiers) {
    if (!quantity.greaterThan(lower)) break;
    const upper = tier.upTo === undefined || quantity.lessThan(tier.upTo) ? quantity : tier.upTo;
    // Multiply before dividing, as for packages: one rounding, at 60 digits.
    total = total.plus(tier.amount.times(upper.minus(lower)).dividedBy(tier.per));
    if (tier.upTo === undefined) break;
    lower = tier.upTo;
  }
  return total;
}

/**
 * The exact cost of the first `quantity` units of a period at `price`, before
 * any rounding: what every price model charges for a period as a whole.
 */
export function periodTotal(price: Price, quantity: Decimal): Decimal {
  if (price.model === 'graduated') return graduatedTotal(price.tiers, quantity);
  if (price.model === 'unit') return price.amount.times(quantity);
  if (price.rounding === 'up') {
    // Whole packages, decided exactly: no quotient is rounded before the ceiling.
    const whole = quantity.dividedToIntegerBy(price.size);
    const packages = quantity.modulo(price.size).isZero() ? whole : whole.plus(1);
    return price.amount.times(packages);
  }
  // Multiply before dividing: the product is exact, so the one rounding of the
  // quotient (at 60 digits) cannot move a half-nano-credit tie.
  return price.amount.times(quantity).dividedBy(price.size);
}

/**
 * Cost of `quantity` at `price` when `before` units of the same period were
 * priced already: the rounded period total after the line minus the rounded
 * total before it (half-up, 9 fraction digits). The roundings telescope, so
 * however a period is cut into lines and runs, its costs add up to exactly
 * the cost of the whole period in one line — for every price model: whole
 * packages and tiers count over the period, and no line's own rounding adds up.
 */
export function costOf(price: Price, quantity: Decimal, before: Decimal = money(0)): Decimal {
  const after = toLedgerAmount(periodTotal(price, before.plus(quantity)));
  return before.isZero() ? after : after.minus(toLedgerAmount(periodTotal(price, before)));
}

/**
 * Whether a line's cost can depend on what the month took before it, so
 * settlement must read what earlier runs took. Tiers, whole packages and max
 * meters (charged on the month's peak) always can. A per-unit or prorated
 * price cannot when the line's own exact cost has ≤ 9 fraction digits:
 * adding an amount the ledger holds exactly commutes with the rounding, so
 * round(F(before + q)) − round(F(before)) = F(q) whatever `before` is.
 */
export function costDependsOnPeriod(price: Price, aggregation: Aggregation, quantity: Decimal): boolean {
  if (aggregation === 'max' || price.model === 'graduated') return true;
  if (price.model === 'package' && price.rounding === 'up') return true;
  // Cheap and sufficient: a product has at most as many fraction digits as its factors together.
  if (perUnitPlaces(price) + quantity.decimalPlaces() <= amountScale) return false;
  const exact = periodTotal(price, quantity);
  return !toLedgerAmount(exact).equals(exact);
}

const perUnitPlacesOf = new WeakMap<Price, number>();

/** Fraction digits of the price of one unit (a non-terminating quotient has 60, the working precision). */
function perUnitPlaces(price: Price & { model: 'unit' | 'package' }): number {
  let places = perUnitPlacesOf.get(price);
  if (places === undefined) {
    const perUnit = price.model === 'unit' ? price.amount : price.amount.dividedBy(price.size);
    perUnitPlacesOf.set(price, (places = perUnit.decimalPlaces()));
  }
  return places;
}

export function zero(): Decimal {
  return money(0);
}
