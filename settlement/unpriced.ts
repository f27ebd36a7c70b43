/**
 * Outstanding unpriced usage (SPEC §4: usage no row prices is never free, and
 * stays outstanding until a rate applies to it, then is billed exactly once).
 * A run records the lines it could not price (`found`) and the outstanding
 * lines it billed (`billed`) in `unpriced_usage`, before its completion row,
 * so a crashed run that is resumed writes the same rows again and reads the
 * same outstanding lines: reads take one row per (line_id, status).
 */
import type { Decimal } from 'decimal.js';
import { unpricedUsageColumns } from '../shared/clickhouse/schema.js';
import type { Store } from '../shared/clickhouse/store.js';
import { formatAmount, parseStoredDecimal } from '../shared/money.js';
import { sqlDateTime, sqlString, sqlStringList } from '../shared/sql.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { entryId } from './ledger.js';
import type { SelectedLine, UsageLine } from './usage-reader.js';

export interface OutstandingLine {
  /** Derived from the run that found it and the line, so a resumed run finds the same id. */
  lineId: string;
  customer: string;
  meter: string;
  /** Canonical JSON of dimension values. */
  dimensions: string;
  quantity: Decimal;
  /** The line's first minute of usage, epoch s. */
  sinceSec: number;
  /** The run that found it unpriced. */
  foundBy: string;
  reason: string;
}

/** The lines a run could not price, as outstanding lines found by that run. */
export function foundLines(
  runId: string,
  unrated: readonly { line: UsageLine | SelectedLine; reason: string }[],
): OutstandingLine[] {
  return unrated.map(({ line, reason }) => ({
    // The same hash as ledger ids; the prefix only names what it identifies.
    lineId: entryId('usage', [
      runId,
      line.customer,
      line.meter,
      line.dimensions,
      line.fromSec,
      line.firstMinuteSec,
      (line as SelectedLine).late === true ? 'late' : '',
    ]).replace(/^usage:/, 'unpriced:'),
    customer: line.customer,
    meter: line.meter,
    dimensions: line.dimensions,
    quantity: line.quantity,
    sinceSec: line.firstMinuteSec,
    foundBy: runId,
    reason,
  }));
}

/** Oldest first per customer; the order a run bills them in, so entry ids do not depend on read order. */
function inOrder(a: OutstandingLine, b: OutstandingLine): number {
  return (
    (a.customer < b.customer ? -1 : a.customer > b.customer ? 1 : 0) ||
    a.sinceSec - b.sinceSec ||
    (a.lineId < b.lineId ? -1 : a.lineId > b.lineId ? 1 : 0)
  );
}

async function readOutstanding(
  store: Store,
  foundUntilSec: number,
  billedBy: string,
  customers: readonly string[] | undefined,
): Promise<OutstandingLine[]> {
  const customerFilter = customers === undefined ? '' : ` AND customer IN ${sqlStringList(customers)}`;
  const rows = await store.query(
    `SELECT line_id, any(customer), any(meter), any(dimensions), any(quantity), toUnixTimestamp(any(since)), any(run_id), any(reason)
     FROM unpriced_usage
     WHERE status = 'found' AND run_until <= ${sqlDateTime(foundUntilSec)}${customerFilter}
       AND line_id NOT IN (SELECT line_id FROM unpriced_usage WHERE status = 'billed' AND ${billedBy}${customerFilter})
     GROUP BY line_id`,
  );
  return rows
    .map(([lineId, customer, meter, dimensions, quantity, since, foundBy, reason]) => ({
      lineId: lineId!,
      customer: customer!,
      meter: meter!,
      dimensions: dimensions!,
      quantity: parseStoredDecimal(quantity!),
      sinceSec: Number(since),
      foundBy: foundBy!,
      reason: reason!,
    }))
    .sort(inOrder);
}

/**
 * What a run starts from: lines found by runs that ended by its start and
 * billed by no other run. Its own rows never count, so a resumed run (or an
 * exact re-run of an old window) reads exactly what it read the first time.
 */
export function outstandingForRun(store: Store, run: { runId: string; fromSec: number }): Promise<OutstandingLine[]> {
  return readOutstanding(store, run.fromSec, `run_id != ${sqlString(run.runId)}`, undefined);
}

/** Outstanding once settlement has reached `asOfSec`: found by runs ending by then, billed by none of them. */
export function outstandingAsOf(
  store: Store,
  asOfSec: number,
  customers?: readonly string[],
): Promise<OutstandingLine[]> {
  if (customers !== undefined && customers.length === 0) return Promise.resolve([]);
  return readOutstanding(store, asOfSec, `run_until <= ${sqlDateTime(asOfSec)}`, customers);
}

/** Records what a run found unpriced and which outstanding lines it billed (at which rate version). */
export async function recordUnpriced(
  store: Store,
  run: { runId: string; untilSec: number },
  nowSec: number,
  found: readonly OutstandingLine[],
  billed: readonly { line: OutstandingLine; rateVersion: string }[],
): Promise<void> {
  const row = (line: OutstandingLine, status: string, rateVersion: string): string[] => [
    line.lineId,
    status,
    run.runId,
    tsvDateTime(run.untilSec),
    line.customer,
    line.meter,
    line.dimensions,
    formatAmount(line.quantity),
    tsvDateTime(line.sinceSec),
    line.reason,
    rateVersion,
    tsvDateTime(nowSec),
  ];
  const rows = [
    ...found.map((line) => row(line, 'found', '')),
    ...billed.map(({ line, rateVersion }) => row(line, 'billed', rateVersion)),
  ];
  if (rows.length > 0) await store.insert('unpriced_usage', unpricedUsageColumns, encodeTsv(rows));
}

/** As the API shows an outstanding line (balance, run report, run history, statements). */
export interface OutstandingJson {
  meter: string;
  dimensions: Record<string, string>;
  quantity: string;
  since: string;
  found_by: string;
}

export function outstandingJson(line: OutstandingLine): OutstandingJson {
  return {
    meter: line.meter,
    dimensions: JSON.parse(line.dimensions) as Record<string, string>,
    quantity: formatAmount(line.quantity),
    since: new Date(line.sinceSec * 1000).toISOString(),
    found_by: line.foundBy,
  };
}
