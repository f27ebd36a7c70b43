/**
 * Reads aggregated usage for a settlement window from ClickHouse, split at
 * rate-card version boundaries inside the window so each part is priced by
 * the version in force at its own minutes.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../shared/catalog.js';
import type { Store } from '../shared/clickhouse/store.js';
import { parseStoredDecimal } from '../shared/money.js';
import { sqlDateTime, sqlString } from '../shared/sql.js';

export interface UsageLine {
  customer: string;
  meter: string;
  /** Canonical JSON of dimension values. */
  dimensions: string;
  /** Start of the part of the window this line covers (a version boundary or the window start), epoch s. */
  fromSec: number;
  /** Sum (sum/count meters) or max (max meters) over the part. */
  quantity: Decimal;
  events: number;
  /** The first minute with usage in this line, epoch s: when settlement draws it down. */
  firstMinuteSec: number;
}

export interface UsageQuery {
  fromSec: number;
  untilSec: number;
  customer?: string;
}

export async function readUsage(store: Store, catalog: Catalog, query: UsageQuery): Promise<UsageLine[]> {
  const boundaries = catalog.rateCard
    .map((v) => Math.floor(v.effectiveFromMs / 1000))
    .filter((sec) => sec > query.fromSec && sec < query.untilSec);
  const parts = [query.fromSec, ...boundaries];
  // multiIf(minute < b1, 0, minute < b2, 1, 2): which part each minute falls in.
  const partExpr =
    boundaries.length === 0
      ? '0'
      : `multiIf(${boundaries.map((b, i) => `minute < ${sqlDateTime(b)}, ${i}`).join(', ')}, ${boundaries.length})`;
  const customerFilter = query.customer === undefined ? '' : ` AND customer = ${sqlString(query.customer)}`;
  const rows = await store.query(
    `SELECT customer, meter, dimensions, ${partExpr} AS part, sum(quantity), max(quantity), sum(events), toUnixTimestamp(min(minute))
     FROM usage_minute
     WHERE minute >= ${sqlDateTime(query.fromSec)} AND minute < ${sqlDateTime(query.untilSec)}${customerFilter}
     GROUP BY customer, meter, dimensions, part
     ORDER BY customer, meter, dimensions, part`,
  );
  return rows.map(([customer, meter, dimensions, part, sum, max, events, firstMinute]) => ({
    customer: customer!,
    meter: meter!,
    dimensions: dimensions!,
    fromSec: parts[Number(part)]!,
    quantity: parseStoredDecimal(catalog.meters.get(meter!)?.aggregation === 'max' ? max! : sum!),
    events: Number(events),
    firstMinuteSec: Number(firstMinute),
  }));
}
