/**
 * A usage line whose cost is drawn from several blocks becomes several ledger
 * entries. Each entry carries the share of the line's quantity its amount
 * paid for, so an auditor summing an entry's quantities gets the line back
 * exactly (docs: settlement/README.md "Ledger entries").
 */
import { Decimal } from 'decimal.js';
import { money } from '../../shared/money.js';

/** Quantities keep 9 fraction digits, as events carry them (SPEC §2). */
const quantityPlaces = 9;

/**
 * Splits `quantity` over `amounts` in proportion to their sizes, rounding each
 * share down to 9 places; the last share takes the remainder, so the shares
 * always sum to `quantity`. All-zero amounts (free usage) give the whole
 * quantity to the first entry.
 */
export function quantityShares(quantity: Decimal, amounts: readonly Decimal[]): Decimal[] {
  if (amounts.length === 0) return [];
  const total = amounts.reduce((sum, a) => sum.plus(a.abs()), money(0));
  if (total.isZero()) return amounts.map((_, i) => (i === 0 ? quantity : money(0)));
  const shares: Decimal[] = [];
  let given = money(0);
  for (let i = 0; i < amounts.length - 1; i++) {
    const share = quantity
      .times(amounts[i]!.abs())
      .dividedBy(total)
      .toDecimalPlaces(quantityPlaces, Decimal.ROUND_DOWN);
    shares.push(share);
    given = given.plus(share);
  }
  shares.push(quantity.minus(given));
  return shares;
}

/** Per posting index, its share of the quantity of the charge it refers to (postings without a charge get none). */
export function postingQuantities(
  postings: readonly { amount: Decimal; ref?: number }[],
  quantityOf: (ref: number) => Decimal,
): Map<number, Decimal> {
  const byRef = new Map<number, number[]>();
  postings.forEach((p, index) => {
    if (p.ref === undefined) return;
    const indexes = byRef.get(p.ref);
    if (indexes === undefined) byRef.set(p.ref, [index]);
    else indexes.push(index);
  });
  const out = new Map<number, Decimal>();
  for (const [ref, indexes] of byRef) {
    const shares = quantityShares(
      quantityOf(ref),
      indexes.map((i) => postings[i]!.amount),
    );
    indexes.forEach((postingIndex, k) => out.set(postingIndex, shares[k]!));
  }
  return out;
}
