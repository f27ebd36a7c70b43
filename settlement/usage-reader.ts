/**
 * Reads aggregated usage for a settlement window from ClickHouse, split at
 * rate-card version boundaries inside the window so each part is priced by
 * the version in force at its own minutes.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { parseStoredDecimal } from '../shared/money.js';
import { sqlDateTime, sqlString, sqlStringList, sqlUInt } from '../shared/sql.js';
import { dependsOnPeriod, pricingMonthStartSec } from './pricing.js';

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

/** Per stream partition, the last flush sequence a selection takes (the rater's watermark at some instant). */
export type Watermarks = Readonly<Record<string, number>>;

/**
 * Which aggregated usage to read. Settlement attributes usage by what the
 * rater had committed when a run started, not only by event time: a run takes
 * rows of minutes before `untilSec` committed at or below `watermarks`, minus
 * what the previous run took. Rows that arrived late — minutes already
 * settled, committed after that run's snapshot — are picked up by the next
 * run and flagged `late`, so no usage is ever skipped.
 */
export interface UsageSelection {
  untilSec: number;
  /** undefined: everything committed so far. */
  watermarks: Watermarks | undefined;
  excluding: { untilSec: number; watermarks: Watermarks } | undefined;
  /** Minutes before this are late (their time was settled already). */
  lateBeforeSec: number;
  customer?: string;
}

export interface SelectedLine extends UsageLine {
  late: boolean;
}

/**
 * The usage from `fromSec` to `untilSec` cut at every rate-card version boundary between them: `parts[i]` is
 * where part i starts, and `partExpr` (SQL over `minute`) names a row's part, so each part is priced by the
 * version in force at its own minutes.
 */
export function rateCardParts(
  catalog: Catalog,
  fromSec: number,
  untilSec: number,
): { parts: number[]; partExpr: string } {
  const boundaries = catalog.rateCard
    .map((v) => Math.floor(v.effectiveFromMs / 1000))
    .filter((sec) => sec > fromSec && sec < untilSec)
    .sort((a, b) => a - b);
  const partExpr =
    boundaries.length === 0
      ? '0'
      : `multiIf(${boundaries.map((b, i) => `minute < ${sqlDateTime(b)}, ${i}`).join(', ')}, ${boundaries.length})`;
  return { parts: [fromSec, ...boundaries], partExpr };
}

/** SQL: the row was committed at or below `watermarks` (undefined: any committed row). */
export function committedUnder(watermarks: Watermarks | undefined): string {
  if (watermarks === undefined) return '1';
  const entries = Object.entries(watermarks);
  if (entries.length === 0) return '0';
  return `multiIf(${entries.map(([p, seq]) => `stream_partition = ${sqlUInt(Number(p))}, flush_seq <= ${sqlUInt(seq)}`).join(', ')}, 0)`;
}

export async function readSelectedUsage(
  store: Store,
  catalog: Catalog,
  selection: UsageSelection,
): Promise<SelectedLine[]> {
  // Parts at every rate-card boundary, so late rows are priced by their own version too.
  const { parts, partExpr } = rateCardParts(catalog, 0, selection.untilSec);
  const taken = `(minute < ${sqlDateTime(selection.untilSec)} AND ${committedUnder(selection.watermarks)})`;
  const excluded =
    selection.excluding === undefined
      ? '0'
      : `(minute < ${sqlDateTime(selection.excluding.untilSec)} AND ${committedUnder(selection.excluding.watermarks)})`;
  const customerFilter = selection.customer === undefined ? '' : ` AND customer = ${sqlString(selection.customer)}`;
  const rows = await store.query(
    // Lines are also cut at calendar months (UTC): graduated tiers count usage per month.
    `SELECT customer, meter, dimensions, ${partExpr} AS part, minute < ${sqlDateTime(selection.lateBeforeSec)} AS late, toRelativeMonthNum(minute) AS month,
       sum(quantity), max(quantity), sum(events), toUnixTimestamp(min(minute))
     FROM usage_minute
     WHERE ${taken} AND NOT ${excluded}${customerFilter}
     GROUP BY customer, meter, dimensions, part, late, month
     ORDER BY customer, meter, dimensions, part, late, month`,
  );
  return rows.map(([customer, meter, dimensions, part, late, , sum, max, events, firstMinute]) => ({
    customer: customer!,
    meter: meter!,
    dimensions: dimensions!,
    fromSec: Math.max(
      parts[Number(part)]!,
      late === '1' ? 0 : selection.lateBeforeSec,
      pricingMonthStartSec(Number(firstMinute)),
    ),
    quantity: parseStoredDecimal(catalog.meters.get(meter!)?.aggregation === 'max' ? max! : sum!),
    events: Number(events),
    firstMinuteSec: Number(firstMinute),
    late: late === '1',
  }));
}

/** What earlier runs took of one dimension set in a month: its total and its peak reading. */
export interface PriorQuantity {
  dimensions: string;
  quantity: Decimal;
  max: Decimal;
}

/**
 * Quantities taken by earlier runs, for prices that count over the month:
 * per `priorUsageKey(customer, meter, month start)`, each dimension set's.
 */
export type PriorUsage = ReadonlyMap<string, readonly PriorQuantity[]>;

export function priorUsageKey(customer: string, meter: string, monthStartSec: number): string {
  return `${customer}\u0000${meter}\u0000${monthStartSec}`;
}

/**
 * What earlier runs took (the `excluding` selection) of the given meters in
 * the given calendar months, per (customer, meter, dimensions, month): the
 * cumulative usage (and peak) a month's pricing continues from.
 */
export async function readPriorUsage(
  store: Store,
  selection: {
    excluding: { untilSec: number; watermarks: Watermarks } | undefined;
    meters: readonly string[];
    monthStartsSec: readonly number[];
    customer?: string;
  },
): Promise<PriorUsage> {
  const out = new Map<string, PriorQuantity[]>();
  if (selection.excluding === undefined || selection.meters.length === 0 || selection.monthStartsSec.length === 0)
    return out;
  const months = selection.monthStartsSec.map((start) => {
    const d = new Date(start * 1000);
    return `(minute >= ${sqlDateTime(start)} AND minute < ${sqlDateTime(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000)})`;
  });
  const customerFilter = selection.customer === undefined ? '' : ` AND customer = ${sqlString(selection.customer)}`;
  const rows = await store.query(
    `SELECT customer, meter, dimensions, toRelativeMonthNum(minute) AS month, sum(quantity), max(quantity), toUnixTimestamp(min(minute))
     FROM usage_minute
     WHERE minute < ${sqlDateTime(selection.excluding.untilSec)} AND ${committedUnder(selection.excluding.watermarks)}
       AND meter IN ${sqlStringList(selection.meters)} AND (${months.join(' OR ')})${customerFilter}
     GROUP BY customer, meter, dimensions, month
     ORDER BY customer, meter, dimensions, month`,
  );
  for (const [customer, meter, dimensions, , sum, max, firstMinute] of rows) {
    const key = priorUsageKey(customer!, meter!, pricingMonthStartSec(Number(firstMinute)));
    const list = out.get(key) ?? [];
    list.push({ dimensions: dimensions!, quantity: parseStoredDecimal(sum!), max: parseStoredDecimal(max!) });
    out.set(key, list);
  }
  return out;
}

/**
 * What earlier runs took in the months of these lines, for the meters whose
 * price in some version depends on the month so far (`dependsOnPeriod`).
 * Other meters' lines cost the same on their own, so their history is not read.
 */
export async function priorUsageFor(
  store: Store,
  catalog: Catalog,
  lines: readonly UsageLine[],
  excluding: { untilSec: number; watermarks: Watermarks } | undefined,
  customer?: string,
): Promise<PriorUsage> {
  const meters = new Set<string>();
  for (const version of catalog.rateCard)
    for (const row of version.rows) {
      const aggregation = catalog.meters.get(row.meter)?.aggregation;
      if (aggregation !== undefined && dependsOnPeriod(row.price, aggregation)) meters.add(row.meter);
    }
  const months = new Set<number>();
  for (const line of lines) if (meters.has(line.meter)) months.add(pricingMonthStartSec(line.firstMinuteSec));
  return readPriorUsage(store, {
    excluding,
    meters: [...meters].sort(),
    monthStartsSec: [...months].sort((a, b) => a - b),
    customer,
  });
}
