/**
 * Prices a run's usage lines with the rate card in force at each line's own
 * time (SPEC §4). Pure: what earlier runs took in the month is an input,
 * read by usage-reader.ts's priorUsageFor.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog, RateCardVersion, RateRow } from '../catalog/model.js';
import { money } from '../shared/money.js';
import { costOf, matchRow, rowSignature, pricingMonthStartSec, versionAt } from './pricing.js';
import type { OutstandingLine } from './unpriced.js';
import {
  priorUsageKey,
  type PriorQuantity,
  type PriorUsage,
  type SelectedLine,
  type UsageLine,
} from './usage-reader.js';

export interface PricedLine {
  line: UsageLine;
  unit: string;
  rateVersion: string;
  cost: Decimal;
  /** Set when this is usage an earlier run could not price, billed now. */
  outstanding?: OutstandingLine;
}

export interface PricingOutcome {
  priced: PricedLine[];
  unrated: { line: UsageLine; reason: string }[];
}

/**
 * Prices usage lines; what no version or row covers is returned as unrated,
 * never as free. Every price counts over the customer's calendar month (UTC)
 * and per row: a line costs round(F(before + q)) − round(F(before)), F the
 * row's exact period total, `before` the month's quantity of that row so far
 * — what earlier runs took (`prior`) plus this run's earlier lines, in time
 * order, whose dimensions the same version's same row prices. So a month
 * costs the same whether one run or many settle it.
 *
 * A max meter is charged on its monthly peak: per dimension set, a line's
 * quantity for pricing is how far it raises that set's peak so far
 * (max(0, q − peak)); the row's quantity is the sum of its sets' peaks.
 */
export function priceUsage(
  catalog: Catalog,
  lines: readonly UsageLine[],
  prior: PriorUsage = new Map(),
): PricingOutcome {
  const out: PricingOutcome = { priced: [], unrated: [] };
  const parsed = new Map<string, Record<string, string>>();
  const dimensionsOf = (text: string): Record<string, string> => {
    let value = parsed.get(text);
    if (value === undefined) parsed.set(text, (value = JSON.parse(text) as Record<string, string>));
    return value;
  };
  // Lines repeat a handful of (version, meter, dimensions): match each once.
  const rows = new Map<RateCardVersion, Map<string, RateRow | undefined>>();
  const rowFor = (version: RateCardVersion, meter: string, dimensions: string): RateRow | undefined => {
    let byLine = rows.get(version);
    if (byLine === undefined) rows.set(version, (byLine = new Map()));
    const key = `${meter}\u0000${dimensions}`;
    if (!byLine.has(key)) byLine.set(key, matchRow(version, meter, dimensionsOf(dimensions)));
    return byLine.get(key);
  };
  const groups = new Map<string, Priceable[]>();
  for (const line of lines) {
    const version = versionAt(catalog.rateCard, line.fromSec * 1000);
    if (version === undefined) {
      out.unrated.push({ line, reason: 'no rate card version in force' });
      continue;
    }
    const row = rowFor(version, line.meter, line.dimensions);
    if (row === undefined) {
      out.unrated.push({ line, reason: `rate card ${version.version} has no row for this meter and dimensions` });
      continue;
    }
    const priced: PricedLine = { line, unit: row.unit, rateVersion: version.version, cost: money(0) };
    out.priced.push(priced);
    const key = priorUsageKey(line.customer, line.meter, pricingMonthStartSec(line.firstMinuteSec));
    let group = groups.get(key);
    if (group === undefined) groups.set(key, (group = []));
    group.push({ priced, version, row });
  }
  for (const [key, group] of groups) {
    const meter = group[0]!.priced.line.meter;
    priceMonth(group, prior.get(key) ?? [], catalog.meters.get(meter)?.aggregation === 'max', (version, dimensions) =>
      rowFor(version, meter, dimensions),
    );
  }
  return out;
}

interface Priceable {
  priced: PricedLine;
  version: RateCardVersion;
  row: RateRow;
}

/** Time order within a run: a line's part, on-time before late, first minute, then dimensions for a stable tie. */
function inTimeOrder(a: Priceable, b: Priceable): number {
  const x = a.priced.line;
  const y = b.priced.line;
  return (
    x.fromSec - y.fromSec ||
    Number((y as SelectedLine).late === true) - Number((x as SelectedLine).late === true) ||
    x.firstMinuteSec - y.firstMinuteSec ||
    (x.dimensions < y.dimensions ? -1 : x.dimensions > y.dimensions ? 1 : 0)
  );
}

/**
 * Prices one (customer, meter, month)'s lines of a run in time order, each
 * from the row's running quantity. The running quantity is kept per
 * dimension set (total, peak) and summed per row lazily for each version the
 * run uses, so a line costs O(versions) rather than a scan of its group.
 */
function priceMonth(
  group: Priceable[],
  prior: readonly PriorQuantity[],
  byPeak: boolean,
  rowFor: (version: RateCardVersion, dimensions: string) => RateRow | undefined,
): void {
  if (group.length === 1 && prior.length === 0) {
    // The common case, one line of a customer's meter in the month and nothing before it: it starts the month.
    const { priced, row } = group[0]!;
    priced.cost = costOf(row.price, priced.line.quantity);
    return;
  }
  group.sort(inTimeOrder);
  const versions = [...new Set(group.map((g) => g.version))];
  // Per version, the row quantity so far of each row signature.
  const rowTotals = new Map<RateCardVersion, Map<string, Decimal>>(versions.map((v) => [v, new Map()]));
  const add = (dimensions: string, delta: Decimal): void => {
    if (delta.isZero()) return;
    for (const version of versions) {
      const row = rowFor(version, dimensions);
      if (row === undefined) continue;
      const totals = rowTotals.get(version)!;
      const signature = rowSignature(row);
      totals.set(signature, (totals.get(signature) ?? money(0)).plus(delta));
    }
  };
  const peaks = new Map<string, Decimal>();
  for (const p of prior) {
    const quantity = byPeak ? p.max : p.quantity;
    if (byPeak) peaks.set(p.dimensions, quantity);
    add(p.dimensions, quantity);
  }
  for (const { priced, version, row } of group) {
    const { line } = priced;
    let quantity = line.quantity;
    if (byPeak) {
      const peak = peaks.get(line.dimensions) ?? money(0);
      quantity = line.quantity.greaterThan(peak) ? line.quantity.minus(peak) : money(0);
      if (!quantity.isZero()) peaks.set(line.dimensions, line.quantity);
    }
    const before = rowTotals.get(version)!.get(rowSignature(row)) ?? money(0);
    priced.cost = costOf(row.price, quantity, before);
    add(line.dimensions, quantity);
  }
}

/**
 * Prices outstanding unpriced usage (lines earlier runs could not price) with
 * the rate card version that prices the run's last minute — the one in force
 * just before `untilSec` — not the version of the usage's own minutes: that
 * version had no row for it, and versions never take effect in settled time.
 * Each line is priced on its own quantity: a graduated row counts it from the
 * start of its tiers, apart from the month's other usage. What is still
 * unpriced stays outstanding, with the reason as of this version.
 */
export function priceOutstanding(
  catalog: Catalog,
  lines: readonly OutstandingLine[],
  untilSec: number,
): { billed: PricedLine[]; still: OutstandingLine[] } {
  const out: { billed: PricedLine[]; still: OutstandingLine[] } = { billed: [], still: [] };
  const version = versionAt(catalog.rateCard, untilSec * 1000 - 1);
  for (const outstanding of lines) {
    if (version === undefined) {
      out.still.push({ ...outstanding, reason: 'no rate card version in force' });
      continue;
    }
    const row = matchRow(version, outstanding.meter, JSON.parse(outstanding.dimensions) as Record<string, string>);
    if (row === undefined) {
      out.still.push({
        ...outstanding,
        reason: `rate card ${version.version} has no row for this meter and dimensions`,
      });
      continue;
    }
    out.billed.push({
      line: {
        customer: outstanding.customer,
        meter: outstanding.meter,
        dimensions: outstanding.dimensions,
        fromSec: outstanding.sinceSec,
        quantity: outstanding.quantity,
        events: 0,
        firstMinuteSec: outstanding.sinceSec,
      },
      unit: row.unit,
      rateVersion: version.version,
      cost: costOf(row.price, outstanding.quantity),
      outstanding,
    });
  }
  return out;
}
