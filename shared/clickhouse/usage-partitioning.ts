/**
 * `drawdown storage partition-usage`: copies a usage_minute created before
 * partitioning (one partition, read whole by every settlement run) into the
 * partitioned layout (shared/clickhouse/usage-minute.ts). ClickHouse cannot
 * change a table's partition key in place, so this is a copy and a rename,
 * made with every rater stopped:
 *
 * 1. create usage_minute_partitioned and copy every row into it, each
 *    stamped no earlier than its own minute (older raters stamped the flush
 *    clock alone, which may precede a future-skewed minute);
 * 2. refuse, dropping the copy, if the watermarks moved meanwhile (a rater
 *    wrote during the copy) or the copy's rows, events or quantities differ;
 * 3. rename usage_minute to usage_minute_unpartitioned and the copy to
 *    usage_minute. The old table stays, for the operator to drop once
 *    satisfied.
 *
 * A crash between the two renames leaves no usage_minute: the next start
 * (ensureSchema) finishes the rename before creating any table.
 */
import { DrawdownError } from '../errors.js';
import type { Store } from './store.js';
import { partitionedByFlushMonth, readWatermarks, usageMinuteFlushColumns, usageMinuteTable } from './usage-minute.js';

/** Every column, as a rater flush writes them. */
const copyColumns = usageMinuteFlushColumns;

async function tableExists(store: Store, name: string): Promise<boolean> {
  const rows = await store.query(
    `SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '${name}'`,
  );
  return Number(rows[0]?.[0] ?? 0) > 0;
}

/** Finishes a migration a crash cut between its renames; a no-op otherwise. Runs before any table is created. */
export async function finishUsagePartitioning(store: Store): Promise<void> {
  if (store.cluster !== undefined) return;
  if ((await tableExists(store, 'usage_minute_partitioned')) && !(await tableExists(store, 'usage_minute')))
    await store.command('RENAME TABLE usage_minute_partitioned TO usage_minute');
}

/** Rows, events and the exact quantity total of a table, compared before the copy replaces the original. */
async function totals(store: Store, table: string): Promise<string> {
  const rows = await store.query(`SELECT count(), sum(events), toString(sum(quantity)) FROM ${table}`);
  return rows[0]!.join(' ');
}

function sameMarks(a: ReadonlyMap<number, number>, b: ReadonlyMap<number, number>): boolean {
  return a.size === b.size && [...a].every(([p, seq]) => b.get(p) === seq);
}

export async function partitionUsageMinute(
  store: Store,
  progress: (message: string) => void = () => {},
): Promise<{ partitioned: 'already' | 'now'; rows: number }> {
  if (store.cluster !== undefined)
    throw new DrawdownError(
      'usage_migration_refused',
      'drawdown storage partition-usage runs on one server or chDB; on a cluster, create the partitioned table on each replica and copy per docs/deploy.md',
    );
  if (await partitionedByFlushMonth(store, 'usage_minute')) return { partitioned: 'already', rows: 0 };
  // The place the original goes must be free: an operator's table is never dropped here.
  if (await tableExists(store, 'usage_minute_unpartitioned'))
    throw new DrawdownError(
      'usage_migration_refused',
      'a table usage_minute_unpartitioned exists already; drop or rename it, then run again (nothing changed)',
    );
  const before = await readWatermarks(store);
  const expected = await totals(store, 'usage_minute');
  progress(`copying usage_minute (${expected.split(' ')[0]} rows) into the partitioned layout`);
  await store.command('DROP TABLE IF EXISTS usage_minute_partitioned');
  await store.command(usageMinuteTable.replace('usage_minute (', 'usage_minute_partitioned ('));
  await store.command(
    `INSERT INTO usage_minute_partitioned (${copyColumns.join(', ')})
     SELECT ${copyColumns.map((c) => (c === 'flushed_at' ? 'greatest(flushed_at, minute)' : c)).join(', ')} FROM usage_minute`,
  );
  const after = await readWatermarks(store);
  const copied = await totals(store, 'usage_minute_partitioned');
  if (!sameMarks(before, after) || copied !== (await totals(store, 'usage_minute'))) {
    await store.command('DROP TABLE IF EXISTS usage_minute_partitioned');
    throw new DrawdownError(
      'usage_migration_refused',
      sameMarks(before, after)
        ? `the copy does not match usage_minute (${copied} vs ${expected}); nothing changed`
        : 'a rater wrote to usage_minute during the copy; stop every rater and run again (nothing changed)',
    );
  }
  progress('copy verified; swapping the tables');
  await store.command(
    'RENAME TABLE usage_minute TO usage_minute_unpartitioned, usage_minute_partitioned TO usage_minute',
  );
  return { partitioned: 'now', rows: Number(expected.split(' ')[0]) };
}
