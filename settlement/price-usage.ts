/**
 * Prices a run's usage lines with the rate card in force at each line's own
 * time (SPEC §4). Pure: what earlier runs took (for graduated tiers) is an
 * input, read by usage-reader.ts's priorUsageFor.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog, RateCardVersion, RateRow } from '../catalog/model.js';
import { money } from '../shared/money.js';
import { costOf, matchRow, rowSignature, tierPeriodStartSec, versionAt } from './pricing.js';
import type { OutstandingLine } from './unpriced.js';
import { priorUsageKey, type PriorUsage, type SelectedLine, type UsageLine } from './usage-reader.js';

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
 * never as free. A graduated row prices a line by where it falls in the
 * month's cumulative usage of that row: everything taken before (`prior`,
 * from earlier runs) plus this run's earlier lines, in time order, that the
 * same version's same row prices.
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
  const graduated: { priced: PricedLine; version: RateCardVersion; row: RateRow }[] = [];
  // Lines repeat a handful of (version, meter, dimensions): match each once.
  const rows = new Map<RateCardVersion, Map<string, RateRow | undefined>>();
  const rowFor = (version: RateCardVersion, meter: string, dimensions: string): RateRow | undefined => {
    let byLine = rows.get(version);
    if (byLine === undefined) rows.set(version, (byLine = new Map()));
    const key = `${meter}\u0000${dimensions}`;
    if (!byLine.has(key)) byLine.set(key, matchRow(version, meter, dimensionsOf(dimensions)));
    return byLine.get(key);
  };
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
    if (row.price.model === 'graduated') graduated.push({ priced, version, row });
    else priced.cost = costOf(row.price, line.quantity);
    out.priced.push(priced);
  }
  if (graduated.length === 0) return out;

  // This run's lines of each (customer, meter, month), in time order, to count what came before a line.
  const monthOf = (line: UsageLine): number => tierPeriodStartSec(line.firstMinuteSec);
  const inTimeOrder = (a: UsageLine, b: UsageLine): number =>
    a.fromSec - b.fromSec ||
    Number((b as SelectedLine).late === true) - Number((a as SelectedLine).late === true) ||
    a.firstMinuteSec - b.firstMinuteSec ||
    (a.dimensions < b.dimensions ? -1 : a.dimensions > b.dimensions ? 1 : 0);
  const groups = new Map<string, UsageLine[]>();
  for (const { priced } of graduated)
    groups.set(priorUsageKey(priced.line.customer, priced.line.meter, monthOf(priced.line)), []);
  for (const line of lines) groups.get(priorUsageKey(line.customer, line.meter, monthOf(line)))?.push(line);
  for (const group of groups.values()) group.sort(inTimeOrder);

  for (const { priced, version, row } of graduated) {
    const { line } = priced;
    const key = priorUsageKey(line.customer, line.meter, monthOf(line));
    const signature = rowSignature(row);
    const sameRow = (dimensions: string): boolean => {
      const r = rowFor(version, line.meter, dimensions);
      return r !== undefined && rowSignature(r) === signature;
    };
    let before = money(0);
    for (const p of prior.get(key) ?? []) if (sameRow(p.dimensions)) before = before.plus(p.quantity);
    for (const other of groups.get(key)!) {
      if (other === line) break;
      if (sameRow(other.dimensions)) before = before.plus(other.quantity);
    }
    priced.cost = costOf(row.price, line.quantity, before);
  }
  return out;
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
