/**
 * A customer's balance per credit unit: settled (the ledger's sum), pending
 * (usage after the last settlement, priced at current rates, not yet posted)
 * and available (settled − pending).
 */
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { formatAmount, formatAtPrecision, money } from '../shared/money.js';
import { settledBalancesOf } from './ledger.js';
import { lastCompletedRun } from './runs.js';
import { priceOutstanding, priceUsage } from './price-usage.js';
import { outstandingAsOf } from './unpriced.js';
import { priorUsageFor } from './usage-reader.js';
import { readSelectedUsage, type Watermarks } from './usage-reader.js';
import { namesFor } from '../catalog/names.js';

/** A unit's names for a customer's balance or ledger: frozen at their subscription's start (SPEC §4 "Names"). */
export function unitNamesJson(
  catalog: Catalog,
  unit: string,
  customer: string,
  nowMs: number,
): { name: string | null; internal_name: string | null } {
  const names = namesFor(catalog, unit, { customer, nowMs });
  return { name: names?.name ?? null, internal_name: names?.internalName ?? null };
}

export interface UnitBalance {
  unit: string;
  /** The unit's names as this customer's subscription shows them (catalog/names.ts); null: not in the catalog. */
  name: string | null;
  internal_name: string | null;
  settled: string;
  pending: string;
  available: string;
  /** available at the unit's display precision. */
  display: string;
  /** Below the unit's allowed negative balance (below zero when it allows none). */
  over_limit: boolean;
}

/** As served by GET /v1/customers/{id}/balance (snake_case, like every API body). */
export interface Balance {
  customer: string;
  settled_until: string | null;
  units: UnitBalance[];
  /**
   * Usage no rate prices: not yet settled (`found_by` null), and outstanding lines earlier runs could not price
   * (`found_by` the run). Neither has a cost, so neither moves `available`.
   */
  unrated_pending: {
    meter: string;
    dimensions: Record<string, string>;
    quantity: string;
    since: string;
    found_by: string | null;
  }[];
}

export async function balanceOf(
  store: Store,
  catalog: Catalog,
  customer: string,
  nowMs: number = Date.now(),
  /** Pending as of these watermarks (a snapshot read first, shared with other reads); undefined: all committed. */
  watermarks?: Watermarks,
): Promise<Balance> {
  return (await balancesOf(store, catalog, [customer], nowMs, watermarks)).get(customer)!;
}

/**
 * balanceOf for many customers with one read of each kind (balance notices evaluate every customer a rater flush
 * touched; a read per customer would queue them behind each other).
 */
export async function balancesOf(
  store: Store,
  catalog: Catalog,
  customers: readonly string[],
  nowMs: number = Date.now(),
  watermarks?: Watermarks,
): Promise<Map<string, Balance>> {
  // The last completed run is read before the ledger: a run that completes in between then shows in both settled
  // and pending (available reads low for a moment), never in neither (it would read high).
  const last = await lastCompletedRun(store);
  // Where settlement has reached (settledUntil's answer: the newest completed run's end), taken from the same read so
  // the two always agree, and one read fewer in every live balance.
  const cursor = last?.untilSec ?? 0;
  const settledOf = await settledBalancesOf(store, customers);
  // Pending covers everything after the cursor, up to the end of the current minute.
  const untilSec = (Math.floor(nowMs / 60_000) + 1) * 60;
  // Pending = everything committed that no completed run has taken yet, late usage included.
  const excluding = last && { untilSec: last.untilSec, watermarks: last.watermarks };
  // Both reads are fixed by `last` and `cursor` (a run completing meanwhile changes neither answer), so they run
  // together: each sequential read is a wait in every live balance, hold and notice evaluation.
  const [lines, outstandingLines] = await Promise.all([
    readSelectedUsage(store, catalog, {
      untilSec: Math.max(untilSec, cursor),
      watermarks,
      excluding,
      lateBeforeSec: cursor,
      customers,
    }),
    outstandingAsOf(store, cursor, customers),
  ]);
  const { priced, unrated } = priceUsage(
    catalog,
    lines,
    await priorUsageFor(store, catalog, lines, excluding, customers),
  );
  // Outstanding lines a rate now prices are what the next run will bill: pending, at the version in force now.
  const outstanding = priceOutstanding(catalog, outstandingLines, untilSec);
  const pendingOf = new Map<string, Map<string, Decimal>>();
  for (const p of [...priced, ...outstanding.billed]) {
    let pending = pendingOf.get(p.line.customer);
    if (pending === undefined) pendingOf.set(p.line.customer, (pending = new Map()));
    pending.set(p.unit, (pending.get(p.unit) ?? money(0)).plus(p.cost));
  }
  const unratedOf = new Map<string, Balance['unrated_pending']>();
  const addUnrated = (customer: string, line: Balance['unrated_pending'][number]): void => {
    const list = unratedOf.get(customer);
    if (list === undefined) unratedOf.set(customer, [line]);
    else list.push(line);
  };
  for (const line of outstanding.still)
    addUnrated(line.customer, {
      meter: line.meter,
      dimensions: JSON.parse(line.dimensions) as Record<string, string>,
      quantity: formatAmount(line.quantity),
      since: new Date(line.sinceSec * 1000).toISOString(),
      found_by: line.foundBy,
    });
  for (const u of unrated)
    addUnrated(u.line.customer, {
      meter: u.line.meter,
      dimensions: JSON.parse(u.line.dimensions) as Record<string, string>,
      quantity: formatAmount(u.line.quantity),
      since: new Date(u.line.firstMinuteSec * 1000).toISOString(),
      found_by: null,
    });
  const out = new Map<string, Balance>();
  for (const customer of customers) {
    const settled = settledOf.get(customer) ?? new Map<string, Decimal>();
    const pending = pendingOf.get(customer) ?? new Map<string, Decimal>();
    const units = [...new Set([...settled.keys(), ...pending.keys()])].sort();
    out.set(customer, {
      customer,
      settled_until: cursor === 0 ? null : new Date(cursor * 1000).toISOString(),
      units: units.map((unit) => {
        const s = settled.get(unit) ?? money(0);
        const p = pending.get(unit) ?? money(0);
        const available = s.minus(p);
        return {
          unit,
          ...unitNamesJson(catalog, unit, customer, nowMs),
          settled: formatAmount(s),
          pending: formatAmount(p),
          available: formatAmount(available),
          display: formatAtPrecision(available, catalog.creditUnits.get(unit)?.precision ?? 2),
          over_limit: available.lessThan((catalog.creditUnits.get(unit)?.allowedNegativeBalance ?? money(0)).negated()),
        };
      }),
      unrated_pending: unratedOf.get(customer) ?? [],
    });
  }
  return out;
}
