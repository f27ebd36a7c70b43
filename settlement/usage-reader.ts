/**
 * Reads aggregated usage for a settlement window from ClickHouse, split at
 * rate-card version boundaries inside the window so each part is priced by
 * the version in force at its own minutes.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog, RateRow } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { parseStoredDecimal } from '../shared/money.js';
import { untakenFloor } from '../shared/clickhouse/flush-bounds.js';
import { usageMinutePartitioned } from '../shared/clickhouse/usage-minute.js';
import { sqlDateTime, sqlString, sqlStringList, sqlUInt } from '../shared/sql.js';
import { costDependsOnPeriod, matchRow, pricingMonthStartSec, versionAt } from './pricing.js';

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
  /** Only these customers' usage (a live balance, or the customers a flush touched); undefined: everyone's. */
  customers?: readonly string[];
}

/** SQL: the row is one of `customers`' ('' when undefined: everyone's). */
function customersFilter(customers: readonly string[] | undefined): string {
  if (customers === undefined) return '';
  return customers.length === 1
    ? ` AND customer = ${sqlString(customers[0]!)}`
    : ` AND customer IN ${sqlStringList(customers)}`;
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
  const customerFilter = customersFilter(selection.customers);
  // Nothing untaken lies before the floor: ClickHouse skips the months flushed before it whole, and within
  // them the history of every customer before its minute. A read for one customer (a live balance) is already
  // bounded by the table's key and is latency-bound: no extra query.
  const floor =
    selection.customers === undefined
      ? await untakenFloor(store, selection.excluding, selection.watermarks)
      : undefined;
  let floorFilter = '';
  if (floor !== undefined) {
    floorFilter = ` AND minute >= ${sqlDateTime(floor.minuteSec)}`;
    if (await usageMinutePartitioned(store)) floorFilter += ` AND flushed_at >= ${sqlDateTime(floor.flushedSec)}`;
  }
  const rows = await store.query(
    // Lines are also cut at calendar months (UTC): graduated tiers count usage per month.
    `SELECT customer, meter, dimensions, ${partExpr} AS part, minute < ${sqlDateTime(selection.lateBeforeSec)} AS late, toRelativeMonthNum(minute) AS month,
       sum(quantity), max(quantity), sum(events), toUnixTimestamp(min(minute))
     FROM usage_minute
     WHERE ${taken} AND NOT ${excluded}${floorFilter}${customerFilter}
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
    customers?: readonly string[];
  },
): Promise<PriorUsage> {
  const out = new Map<string, PriorQuantity[]>();
  if (selection.excluding === undefined || selection.meters.length === 0 || selection.monthStartsSec.length === 0)
    return out;
  const months = selection.monthStartsSec.map((start) => {
    const d = new Date(start * 1000);
    return `(minute >= ${sqlDateTime(start)} AND minute < ${sqlDateTime(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000)})`;
  });
  const customerFilter = customersFilter(selection.customers);
  // No row was flushed before its own minute: the months flushed before the earliest one read are skipped whole.
  const flushedFilter = (await usageMinutePartitioned(store))
    ? ` AND flushed_at >= ${sqlDateTime(Math.min(...selection.monthStartsSec))}`
    : '';
  const rows = await store.query(
    `SELECT customer, meter, dimensions, toRelativeMonthNum(minute) AS month, sum(quantity), max(quantity), toUnixTimestamp(min(minute))
     FROM usage_minute
     WHERE minute < ${sqlDateTime(selection.excluding.untilSec)} AND ${committedUnder(selection.excluding.watermarks)}
       AND meter IN ${sqlStringList(selection.meters)} AND (${months.join(' OR ')})${flushedFilter}${customerFilter}
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
 * What earlier runs took in the months of these lines, for the meters where
 * some line's cost depends on it (`costDependsOnPeriod`): tiers, whole
 * packages, max meters, and per-unit prices only when a line's own cost is
 * finer than the ledger's 9 places. Other lines cost the same on their own,
 * so a month's history is read only when it can change a charge.
 */
export async function priorUsageFor(
  store: Store,
  catalog: Catalog,
  lines: readonly UsageLine[],
  excluding: { untilSec: number; watermarks: Watermarks } | undefined,
  customers?: readonly string[],
): Promise<PriorUsage> {
  // The first run has no earlier runs: nothing to read, so no line needs looking at.
  if (excluding === undefined) return new Map();
  const meters = new Set<string>();
  const months = new Map<string, Set<number>>();
  const rows = new Map<string, RateRow | undefined>();
  for (const line of lines) {
    const month = pricingMonthStartSec(line.firstMinuteSec);
    if (months.get(line.meter)?.has(month) === true) continue;
    const aggregation = catalog.meters.get(line.meter)?.aggregation;
    const version = versionAt(catalog.rateCard, line.fromSec * 1000);
    if (aggregation === undefined || version === undefined) continue;
    const key = `${version.version}\u0000${line.meter}\u0000${line.dimensions}`;
    if (!rows.has(key))
      rows.set(key, matchRow(version, line.meter, JSON.parse(line.dimensions) as Record<string, string>));
    const row = rows.get(key);
    if (row === undefined || !costDependsOnPeriod(row.price, aggregation, line.quantity)) continue;
    meters.add(line.meter);
    let set = months.get(line.meter);
    if (set === undefined) months.set(line.meter, (set = new Set()));
    set.add(month);
  }
  const allMonths = new Set([...months.values()].flatMap((m) => [...m]));
  return readPriorUsage(store, {
    excluding,
    meters: [...meters].sort(),
    monthStartsSec: [...allMonths].sort((a, b) => a - b),
    ...(customers === undefined ? {} : { customers }),
  });
}
