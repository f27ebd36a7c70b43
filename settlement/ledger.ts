/**
 * The immutable per-(customer, credit unit) ledger in ClickHouse. Every entry
 * has a deterministic id derived from what caused it, so posting the same
 * thing twice writes the same id; reads take one row per id, which makes a
 * repeated insert (a re-run, a crash between insert and bookkeeping) harmless.
 */
import { dropPartitionsBelow, monthNumber } from '../shared/clickhouse/partitions.js';
import { createHash } from 'node:crypto';
import type { Decimal } from 'decimal.js';
import { creditSnapshotColumns, ledgerColumns } from '../shared/clickhouse/schema.js';
import { insertRowsMax, type Store } from '../shared/clickhouse/store.js';
import { formatAmount, parseStoredDecimal } from '../shared/money.js';
import { sqlString, sqlStringList, sqlUInt } from '../shared/sql.js';
import { encodeTsv, tsvDateTime, tsvEscape } from '../shared/tsv.js';

/** `manual`: an adjustment an operator posted (settlement/adjustments.ts): + opens a block, − is drawn like usage. */
export type EntryKind = 'grant' | 'purchase' | 'usage' | 'expiry' | 'overage' | 'adjustment' | 'manual';

export interface LedgerEntry {
  entryId: string;
  customer: string;
  unit: string;
  kind: EntryKind;
  /** Signed: credits added are positive, credits used are negative. */
  amount: Decimal;
  effectiveAtSec: number;
  postedAtSec: number;
  runId: string;
  meter: string;
  dimensions: string;
  quantity: Decimal;
  rateVersion: string;
  /** What caused the entry, e.g. "usage 2026-01-01T00:00:00Z..2026-01-01T01:00:00Z" or "package credits-100". */
  source: string;
  /**
   * The credit block the entry moves ('' = the negative balance); a grant or purchase opens the block of its own id.
   */
  blockId: string;
  /** For a grant or purchase: when its block expires, epoch s; 0 = never. */
  expiresAtSec: number;
  /**
   * On an entry that opens or moves a granted block: who granted it — a plan, an add-on or a one-time charge — and
   * its id. Left out ('' in the table) elsewhere; a grant written before add-ons existed reads '' and was a plan's.
   */
  grantSource?: GrantSource;
  grantOrigin?: string;
}

/** Who granted a block, as the ledger, statements and the API name it. */
export type GrantSource = 'plan' | 'add_on' | 'charge';

const grantSources: ReadonlySet<string> = new Set<GrantSource>(['plan', 'add_on', 'charge']);

/** A stable id: kind prefix plus a hash of the parts that make the entry unique. */
export function entryId(kind: EntryKind, parts: readonly (string | number)[]): string {
  const hash = createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 32);
  return `${kind}:${hash}`;
}

const specialTsv = /[\\\t\n\r\0]/;

/** A text cell: escaped only when it holds a character TabSeparated reserves (most never do). */
function text(value: string): string {
  return specialTsv.test(value) ? tsvEscape(value) : value;
}

/**
 * Entries as one TabSeparated payload, built directly: a run writes
 * hundreds of thousands, and the generic encoder's per-cell escaping and
 * per-row arrays were a third of a 100k-customer run (bench/settlement.ts).
 * Amounts and instants need no escaping; instants repeat, so each is
 * formatted once per payload.
 */
function encodeEntries(entries: readonly LedgerEntry[]): string {
  const instants = new Map<number, string>();
  const instant = (sec: number): string => {
    let cell = instants.get(sec);
    if (cell === undefined) instants.set(sec, (cell = tsvDateTime(sec)));
    return cell;
  };
  const parts: string[] = [];
  for (const e of entries) {
    parts.push(
      // Decimal(38, 9) accepts at most 9 fraction digits; amounts are already fixed there.
      `${text(e.entryId)}\t${text(e.customer)}\t${text(e.unit)}\t${e.kind}\t${formatAmount(e.amount)}\t${instant(e.effectiveAtSec)}\t${instant(e.postedAtSec)}\t${text(e.runId)}\t${text(e.meter)}\t${text(e.dimensions)}\t${formatAmount(e.quantity)}\t${text(e.rateVersion)}\t${text(e.source)}\t${text(e.blockId)}\t${instant(e.expiresAtSec)}\t${e.grantSource ?? ''}\t${text(e.grantOrigin ?? '')}\n`,
    );
  }
  return parts.join('');
}

export async function writeEntries(store: Store, entries: readonly LedgerEntry[]): Promise<void> {
  for (let i = 0; i < entries.length; i += insertRowsMax) {
    await store.insert('ledger_entries', ledgerColumns, encodeEntries(entries.slice(i, i + insertRowsMax)));
  }
}

const selectColumns = `entry_id, any(customer), any(unit), any(kind), any(amount), toUnixTimestamp(any(effective_at)), toUnixTimestamp(any(posted_at)),
  any(run_id), any(meter), any(dimensions), any(quantity), any(rate_version), any(source), any(block_id), toUnixTimestamp(any(expires_at)),
  any(grant_source), any(grant_origin)`;

function fromRow(r: string[]): LedgerEntry {
  return {
    entryId: r[0]!,
    customer: r[1]!,
    unit: r[2]!,
    kind: r[3] as EntryKind,
    amount: parseStoredDecimal(r[4]!),
    effectiveAtSec: Number(r[5]),
    postedAtSec: Number(r[6]),
    runId: r[7]!,
    meter: r[8]!,
    dimensions: r[9]!,
    quantity: parseStoredDecimal(r[10]!),
    rateVersion: r[11]!,
    source: r[12]!,
    blockId: r[13]!,
    expiresAtSec: Number(r[14]),
    ...(grantSources.has(r[15]!) && { grantSource: r[15] as GrantSource, grantOrigin: r[16]! }),
    // A grant from before grant sources were recorded: only plans granted then.
    ...(r[15] === '' && r[3] === 'grant' && { grantSource: 'plan' as const }),
  };
}

/**
 * IN lists stay bounded: a run may touch every customer, and ClickHouse
 * parses at most max_query_size (256 KiB by default) of a query — 10,000
 * ids of up to 128 characters would not fit. A list stops at 10,000
 * customers or `queryCharsMax` characters of quoted ids.
 */
const customersPerQuery = 10_000;
export const queryCharsMax = 200_000;

/** `items` cut into lists that fit one query, given what each costs in characters. */
export function queryChunks<T>(items: readonly T[], charsOf: (item: T) => number): T[][] {
  const out: T[][] = [];
  let chunk: T[] = [];
  let chars = 0;
  for (const item of items) {
    const cost = charsOf(item);
    if (chunk.length > 0 && (chunk.length >= customersPerQuery || chars + cost > queryCharsMax)) {
      out.push(chunk);
      chunk = [];
      chars = 0;
    }
    chunk.push(item);
    chars += cost;
  }
  if (chunk.length > 0) out.push(chunk);
  return out;
}

/** Quoted in an IN list: the id, quotes, comma and space (escapes are rare and short). */
const listedChars = (customer: string): number => customer.length + 4;

/** Every entry of these customers effective before `untilSec`, oldest first: a full replay's input. */
export async function entriesOf(store: Store, customers: readonly string[], untilSec: number): Promise<LedgerEntry[]> {
  const out: LedgerEntry[] = [];
  for (const chunk of queryChunks(customers, listedChars)) {
    const rows = await store.query(
      `SELECT ${selectColumns} FROM ledger_entries
       WHERE customer IN ${sqlStringList(chunk)} AND effective_at < toDateTime(${sqlUInt(untilSec)}, 'UTC')
       GROUP BY entry_id ORDER BY toUnixTimestamp(any(effective_at)), entry_id`,
    );
    for (const row of rows) out.push(fromRow(row));
  }
  return out;
}

export interface CreditSnapshot {
  customer: string;
  unit: string;
  asOfSec: number;
  runId: string;
  /** Entries posted at or after this were not the run's inputs. */
  inputsBeforeSec: number;
  balance: Decimal;
  state: string;
}

export async function writeSnapshots(store: Store, snapshots: readonly CreditSnapshot[]): Promise<void> {
  for (let i = 0; i < snapshots.length; i += insertRowsMax) {
    const rows = snapshots
      .slice(i, i + insertRowsMax)
      .map((s) => [
        s.customer,
        s.unit,
        tsvDateTime(s.asOfSec),
        s.runId,
        tsvDateTime(s.inputsBeforeSec),
        formatAmount(s.balance),
        s.state,
      ]);
    await store.insert('credit_snapshots', creditSnapshotColumns, encodeTsv(rows));
  }
}

function toSnapshot(row: string[]): CreditSnapshot {
  const [customer, unit, asOf, runId, inputsBefore, balance, state] = row;
  return {
    customer: customer!,
    unit: unit!,
    asOfSec: Number(asOf),
    runId: runId!,
    inputsBeforeSec: Number(inputsBefore),
    balance: parseStoredDecimal(balance!),
    state: state!,
  };
}

/**
 * Each account's latest snapshot as of `atOrBeforeSec`, keyed
 * `customer\u0000unit`. First the snapshots written exactly then — by the
 * run that ended where this one starts, so nearly every account's — in one
 * range read; then, for the customers still missing, older ones by bounded IN lists.
 */
export async function latestSnapshots(
  store: Store,
  accounts: readonly string[],
  atOrBeforeSec: number,
): Promise<Map<string, CreditSnapshot>> {
  const wanted = new Set(accounts);
  const out = new Map<string, CreditSnapshot>();
  const columns = 'customer, unit, toUnixTimestamp(as_of), run_id, toUnixTimestamp(inputs_before), balance, state';
  // Duplicates (a re-run writes the same snapshot again) are identical; the last one read wins.
  for (const row of await store.query(
    `SELECT ${columns} FROM credit_snapshots WHERE as_of = toDateTime(${sqlUInt(atOrBeforeSec)}, 'UTC')`,
  )) {
    const key = `${row[0]}\u0000${row[1]}`;
    if (wanted.has(key)) out.set(key, toSnapshot(row));
  }
  const missing = [...new Set(accounts.filter((k) => !out.has(k)).map((k) => k.slice(0, k.indexOf('\u0000'))))];
  for (const chunk of queryChunks(missing, listedChars)) {
    const rows = await store.query(
      `SELECT customer, unit, toUnixTimestamp(max(as_of)), argMax(run_id, as_of), toUnixTimestamp(argMax(inputs_before, as_of)), argMax(balance, as_of), argMax(state, as_of)
       FROM credit_snapshots
       WHERE customer IN ${sqlStringList(chunk)} AND as_of < toDateTime(${sqlUInt(atOrBeforeSec)}, 'UTC')
       GROUP BY customer, unit`,
    );
    for (const row of rows) {
      const key = `${row[0]}\u0000${row[1]}`;
      if (wanted.has(key)) out.set(key, toSnapshot(row));
    }
  }
  return out;
}

/**
 * Drops whole months of credit snapshots (the table is partitioned by
 * toYYYYMM(as_of)) that lie entirely before `newestAsOfSec` −
 * `retentionDays`; returns the months dropped. Safe by the snapshot rule: an
 * account whose snapshots are gone is rebuilt from its whole ledger, which
 * posts exactly what a snapshot would (test/credit-snapshots.test.ts). The
 * next run reads the snapshots as of the newest completed run's end, which
 * a retention of at least a day never drops.
 */
export async function dropExpiredSnapshots(
  store: Store,
  newestAsOfSec: number,
  retentionDays: number,
): Promise<number> {
  const cutoffSec = newestAsOfSec - retentionDays * 86_400;
  if (cutoffSec <= 0) return 0;
  // Months before the cutoff's month hold only snapshots older than the cutoff.
  return dropPartitionsBelow(store, 'credit_snapshots', monthNumber(cutoffSec));
}

/**
 * Entries posted outside settlement (purchases) effective before `untilSec`
 * that snapshots taken at `sinceAsOfSec` with inputs before
 * `sincePostedSec` may lack: effective since the one or posted since the
 * other. No customer list: it is a short scan of three columns.
 */
export async function entriesOutsideSettlementSince(
  store: Store,
  untilSec: number,
  sinceAsOfSec: number,
  sincePostedSec: number,
): Promise<LedgerEntry[]> {
  const rows = await store.query(
    `SELECT ${selectColumns} FROM ledger_entries
     WHERE run_id = '' AND effective_at < toDateTime(${sqlUInt(untilSec)}, 'UTC')
       AND (effective_at >= toDateTime(${sqlUInt(sinceAsOfSec)}, 'UTC') OR posted_at >= toDateTime(${sqlUInt(sincePostedSec)}, 'UTC'))
     GROUP BY entry_id ORDER BY toUnixTimestamp(any(effective_at)), entry_id`,
  );
  return rows.map(fromRow);
}

/** Ids a settlement run already posted (all of them, if it completed; some, if it crashed). */
export async function entryIdsOfRun(store: Store, runId: string): Promise<Set<string>> {
  const rows = await store.query(`SELECT DISTINCT entry_id FROM ledger_entries WHERE run_id = ${sqlString(runId)}`);
  return new Set(rows.map((r) => r[0]!));
}

export async function entryExists(store: Store, customer: string, id: string): Promise<LedgerEntry | undefined> {
  const rows = await store.query(
    `SELECT ${selectColumns} FROM ledger_entries WHERE customer = ${sqlString(customer)} AND entry_id = ${sqlString(id)} GROUP BY entry_id`,
  );
  return rows[0] === undefined ? undefined : fromRow(rows[0]);
}

export interface LedgerPage {
  entries: LedgerEntry[];
  /** Pass as `after` for the next page; absent on the last page. */
  next: string | undefined;
}

/**
 * A customer's entries, oldest first, `limit` per page. Pages are keyed by
 * (effective_at, entry_id), so entries posted meanwhile never shift a page.
 */
export async function readLedger(store: Store, customer: string, limit: number, after?: string): Promise<LedgerPage> {
  let afterFilter = '';
  if (after !== undefined) {
    const [sec, id] = [Number(after.split('|', 1)[0]), after.slice(after.indexOf('|') + 1)];
    afterFilter = ` HAVING (toUnixTimestamp(any(effective_at)) > ${sqlUInt(sec)}) OR (toUnixTimestamp(any(effective_at)) = ${sqlUInt(sec)} AND entry_id > ${sqlString(id)})`;
  }
  const rows = await store.query(
    `SELECT ${selectColumns} FROM ledger_entries WHERE customer = ${sqlString(customer)}
     GROUP BY entry_id${afterFilter}
     ORDER BY toUnixTimestamp(any(effective_at)), entry_id LIMIT ${sqlUInt(limit + 1)}`,
  );
  const entries = rows.slice(0, limit).map(fromRow);
  const last = entries[entries.length - 1];
  return { entries, next: rows.length > limit && last ? `${last.effectiveAtSec}|${last.entryId}` : undefined };
}

/** Settled balance per credit unit: the sum of the customer's entries, one row per id. */
export async function settledBalances(store: Store, customer: string): Promise<Map<string, Decimal>> {
  return (await settledBalancesOf(store, [customer])).get(customer)!;
}

/** settledBalances for many customers in one read; a customer without entries maps to an empty map. */
export async function settledBalancesOf(
  store: Store,
  customers: readonly string[],
): Promise<Map<string, Map<string, Decimal>>> {
  const out = new Map<string, Map<string, Decimal>>(customers.map((c) => [c, new Map()]));
  if (customers.length === 0) return out;
  const filter =
    customers.length === 1 ? `customer = ${sqlString(customers[0]!)}` : `customer IN ${sqlStringList(customers)}`;
  const rows = await store.query(
    `SELECT customer, unit, sum(amount) FROM (SELECT customer, entry_id, any(unit) AS unit, any(amount) AS amount FROM ledger_entries WHERE ${filter} GROUP BY customer, entry_id) GROUP BY customer, unit ORDER BY customer, unit`,
  );
  for (const [customer, unit, sum] of rows) out.get(customer!)?.set(unit!, parseStoredDecimal(sum!));
  return out;
}

/** A credit block that still holds credits and expires in a given span, as the ledger has it (notices). */
export interface HeldBlockRow {
  customer: string;
  unit: string;
  id: string;
  source: 'grant' | 'add_on' | 'charge' | 'purchase' | 'manual';
  origin: string | undefined;
  /** Σ of the block's entries: what settlement (and credit adjustments) left in it. */
  remaining: Decimal;
  createdAtMs: number;
  expiresAtMs: number;
}

/**
 * The blocks with credits left whose expiry lies in (fromSec, untilSec],
 * soonest expiry first, at most `rowsMax` (grant.expiring, settlement/notices/
 * expiring.ts). Every entry that opens or draws a block carries its expiry
 * (`expires_at`), so the blocks are found by that column; their remaining
 * sum is then taken over all of their entries (one row per id, as every read),
 * so entries written before that column existed still count. Reads the
 * ledger's `expires_at` column (one UInt32 per entry) and the found
 * customers' rows.
 */
export async function blocksExpiringBetween(
  store: Store,
  fromSec: number,
  untilSec: number,
  rowsMax: number,
): Promise<{ blocks: HeldBlockRow[]; truncated: boolean }> {
  const span = `expires_at > toDateTime(${sqlUInt(fromSec)}, 'UTC') AND expires_at <= toDateTime(${sqlUInt(untilSec)}, 'UTC') AND block_id != ''`;
  const rows = await store.query(
    `SELECT c, u, b, sum(a), max(e), min(t), countIf(k = 'purchase'), countIf(k = 'manual'), max(gs), max(go)
     FROM (
       SELECT any(customer) AS c, any(unit) AS u, any(block_id) AS b, any(amount) AS a,
              toUnixTimestamp(any(expires_at)) AS e, toUnixTimestamp(any(effective_at)) AS t, any(kind) AS k,
              any(grant_source) AS gs, any(grant_origin) AS go
       FROM ledger_entries
       WHERE customer IN (SELECT customer FROM ledger_entries WHERE ${span})
         AND block_id IN (SELECT block_id FROM ledger_entries WHERE ${span})
       GROUP BY entry_id
     )
     GROUP BY c, u, b
     HAVING sum(a) > 0 AND max(e) > ${sqlUInt(fromSec)} AND max(e) <= ${sqlUInt(untilSec)}
     ORDER BY max(e), c, u, b
     LIMIT ${sqlUInt(rowsMax + 1)}`,
  );
  const blocks = rows.slice(0, rowsMax).map((r): HeldBlockRow => {
    const grantSource = r[8]!;
    const source: HeldBlockRow['source'] =
      Number(r[6]) > 0
        ? 'purchase'
        : Number(r[7]) > 0
          ? 'manual'
          : grantSource === 'add_on' || grantSource === 'charge'
            ? grantSource
            : 'grant';
    return {
      customer: r[0]!,
      unit: r[1]!,
      id: r[2]!,
      source,
      origin: source === 'purchase' || source === 'manual' || r[9] === '' ? undefined : r[9]!,
      remaining: parseStoredDecimal(r[3]!),
      expiresAtMs: Number(r[4]) * 1000,
      createdAtMs: Number(r[5]) * 1000,
    };
  });
  return { blocks, truncated: rows.length > rowsMax };
}
