/**
 * Retention by whole partitions: the tables that expire data (credit
 * snapshots, remembered event ids, flush records, minute usage) are partitioned by a
 * numeric date (YYYYMM or YYYYMMDD), and dropping a partition is cheap on
 * ClickHouse 18.16 and chDB alike, where TTL is not.
 */
import { sqlUInt } from '../sql.js';
import type { Store } from './store.js';

/** The tables retention drops from (names are SQL identifiers: only these constants reach the query). */
export type RetainedTable = 'credit_snapshots' | 'dedupe_ids' | 'flush_bounds' | 'usage_minute';

/** Drops every active partition of `table` numbered below `below`; returns how many were dropped. */
export async function dropPartitionsBelow(store: Store, table: RetainedTable, below: number): Promise<number> {
  const rows = await store.query(
    `SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = '${table}' AND active`,
  );
  let dropped = 0;
  for (const [partition] of rows) {
    const value = Number(partition);
    if (!Number.isSafeInteger(value) || value >= below) continue;
    await store.command(`ALTER TABLE ${table} DROP PARTITION ${sqlUInt(value)}`);
    dropped++;
  }
  return dropped;
}

/** Drops one partition (a numeric date) of `table`; dropping one that is not there is a no-op. */
export async function dropPartition(store: Store, table: RetainedTable, partition: number): Promise<void> {
  await store.command(`ALTER TABLE ${table} DROP PARTITION ${sqlUInt(partition)}`);
}

/** The YYYYMM number of the UTC month `monthsBack` months before the one holding `sec` (0: that month). */
export function monthNumber(sec: number, monthsBack = 0): number {
  const d = new Date(sec * 1000);
  const total = d.getUTCFullYear() * 12 + d.getUTCMonth() - monthsBack;
  return Math.floor(total / 12) * 100 + (total % 12) + 1;
}
