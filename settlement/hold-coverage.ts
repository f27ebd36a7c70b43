/**
 * What the usage naming each credit hold has cost so far: usage events may
 * carry `hold`, and the rater keeps such usage in usage_minute rows of their
 * own (column `hold`). The live balance subtracts that usage like any other,
 * so the hold stops reserving what its usage already took (docs/holds.md).
 *
 * All of a hold's usage counts, settled or not: a hold's coverage only
 * grows, and settling moves its usage from `pending` to `settled` without
 * changing `available`. Usage is priced on its own lines, at the rate card in
 * force at its minutes — exactly its share of the customer's cost for unit
 * prices; for package and graduated rows, as if it were the month's only
 * usage (docs/holds.md says so).
 */
import { usageMinutePartitioned } from '../shared/clickhouse/usage-minute.js';
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { money, parseStoredDecimal } from '../shared/money.js';
import { sqlDateTime, sqlString, sqlStringList } from '../shared/sql.js';
import { priceUsage } from './price-usage.js';
import { pricingMonthStartSec } from './pricing.js';
import { committedUnder, rateCardParts, type UsageLine, type Watermarks } from './usage-reader.js';
import { parseHoldId } from './holds/hold-ids.js';

/** Per credit unit, per hold id suffix (the hold's id inside its account), the live cost of its usage. */
export type HoldCoverage = Map<string, Map<string, Decimal>>;

/**
 * Reads the coverage of `customer`'s holds from usage at or after `sinceSec`
 * (a hold's usage cannot be older than the hold's longest life plus the
 * gateway's accepted lateness, so older rows are not read). Usage naming a
 * hold of another customer, an id that is no hold id, or a hold in another
 * unit than the usage's price covers nothing: it is ordinary usage.
 */
export async function readHoldCoverage(
  store: Store,
  catalog: Catalog,
  customer: string,
  sinceSec: number,
  /** Read as of this snapshot, the one pending is read at, so both see the same flushes. */
  watermarks: Watermarks | undefined,
): Promise<HoldCoverage> {
  return (await readHoldCoverages(store, catalog, [customer], sinceSec, watermarks)).get(customer)!;
}

/** readHoldCoverage for many customers in one read (balance notices evaluate every customer a flush touched). */
export async function readHoldCoverages(
  store: Store,
  catalog: Catalog,
  customers: readonly string[],
  sinceSec: number,
  watermarks: Watermarks | undefined,
): Promise<Map<string, HoldCoverage>> {
  const out = new Map<string, HoldCoverage>(customers.map((c) => [c, new Map()]));
  if (customers.length === 0) return out;
  const { parts, partExpr } = rateCardParts(catalog, sinceSec, Number.POSITIVE_INFINITY);
  // No row was flushed before its own minute: older months are skipped whole.
  const flushedFilter = (await usageMinutePartitioned(store)) ? ` AND flushed_at >= ${sqlDateTime(sinceSec)}` : '';
  const customerFilter =
    customers.length === 1 ? `customer = ${sqlString(customers[0]!)}` : `customer IN ${sqlStringList(customers)}`;
  const rows = await store.query(
    `SELECT customer, hold, meter, dimensions, ${partExpr} AS part, toRelativeMonthNum(minute) AS month,
       sum(quantity), max(quantity), sum(events), toUnixTimestamp(min(minute))
     FROM usage_minute
     WHERE ${customerFilter} AND hold != '' AND minute >= ${sqlDateTime(sinceSec)}${flushedFilter}
       AND ${committedUnder(watermarks)}
     GROUP BY customer, hold, meter, dimensions, part, month
     ORDER BY customer, hold, meter, dimensions, part, month`,
  );
  const linesByHold = new Map<string, { customer: string; hold: string; lines: UsageLine[] }>();
  for (const [customer, hold, meter, dimensions, part, , sum, max, events, firstMinute] of rows) {
    const key = `${customer!}\u0000${hold!}`;
    let entry = linesByHold.get(key);
    if (entry === undefined) linesByHold.set(key, (entry = { customer: customer!, hold: hold!, lines: [] }));
    entry.lines.push({
      customer: customer!,
      meter: meter!,
      dimensions: dimensions!,
      fromSec: Math.max(parts[Number(part)]!, pricingMonthStartSec(Number(firstMinute))),
      quantity: parseStoredDecimal(catalog.meters.get(meter!)?.aggregation === 'max' ? max! : sum!),
      events: Number(events),
      firstMinuteSec: Number(firstMinute),
    });
  }
  for (const { customer, hold, lines } of linesByHold.values()) {
    const coverage = out.get(customer);
    const parsed = parseHoldId(hold);
    if (coverage === undefined || parsed === undefined || parsed.account.customer !== customer) continue;
    let cost = money(0);
    for (const priced of priceUsage(catalog, lines).priced)
      if (priced.unit === parsed.account.unit) cost = cost.plus(priced.cost);
    if (!cost.isPositive()) continue;
    let byHold = coverage.get(parsed.account.unit);
    if (byHold === undefined) coverage.set(parsed.account.unit, (byHold = new Map()));
    byHold.set(parsed.suffix, cost);
  }
  return out;
}
