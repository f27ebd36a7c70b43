/**
 * drawdown on a ClickHouse cluster (DRAWDOWN_CLICKHOUSE_CLUSTER): the same
 * tables with a replicated engine, created on every replica, and the checks
 * that keep exactly-once when the store fails over to a replica that has not
 * yet fetched every part another replica committed (docs/exactly-once.md ›
 * ClickHouse cluster).
 *
 *   insert ──▶ replica A ──commit: part + log entry + block id──▶ ZooKeeper
 *                                                                   │ log
 *                             replica B ◀──fetch part from A── queue ◀┘
 *
 * A commit is the ZooKeeper write, so B learns of every committed part from
 * ZooKeeper even while A is down; what it cannot do then is fetch it. Reads
 * that decide what is counted or settled first ask B whether it lacks any.
 */
import { DrawdownError } from '../errors.js';
import { sqlString } from '../sql.js';
import { ReplicaBehindError, StoreError, type Store } from './store.js';

/**
 * The CREATE TABLE with its MergeTree-family engine made replicated: the
 * ZooKeeper path names the shard (macro), database and table, the replica
 * its macro. Everything after the engine name (PARTITION BY, ORDER BY) is
 * unchanged, so the SQL stays the one schema.ts defines.
 */
export function replicatedDdl(ddl: string, database: string): string {
  const table = /^CREATE TABLE IF NOT EXISTS (\w+) \(/.exec(ddl)?.[1];
  if (table === undefined) throw new Error(`not a CREATE TABLE IF NOT EXISTS statement: ${ddl.slice(0, 80)}`);
  let engines = 0;
  const replicated = ddl.replace(/ENGINE = (\w*MergeTree)(?=\s)/g, (_, engine: string) => {
    engines++;
    return `ENGINE = Replicated${engine}('/clickhouse/tables/{shard}/${database}/${table}', '{replica}')`;
  });
  if (engines !== 1) throw new Error(`table ${table}: expected one MergeTree-family engine, found ${engines}`);
  return replicated;
}

/**
 * Runs a CREATE TABLE IF NOT EXISTS on every replica (CREATE is not
 * replicated; ALTER on a replicated table is, so ALTERs go to one). A
 * replica that does not answer is skipped: it holds the tables from before,
 * or gets them when a process next starts while it is up. Returns the
 * replicas skipped; throws if none answered.
 */
export async function createOnEveryReplica(store: Store, ddl: (database: string) => string): Promise<string[]> {
  const cluster = store.cluster!;
  const skipped: string[] = [];
  let created = 0;
  for (const [i, replica] of cluster.replicas.entries()) {
    try {
      const database = (await replica.query('SELECT currentDatabase()'))[0]![0]!;
      await replica.command(ddl(database));
      created++;
    } catch (error) {
      if (!(error instanceof StoreError && error.retryable)) throw error;
      skipped.push(`replica ${i + 1}: ${error.message}`);
    }
  }
  if (created === 0) throw new StoreError(`no ClickHouse replica answered: ${skipped.join('; ')}`, true);
  return skipped;
}

/** Every table in `names` must be replicated: a plain MergeTree left from a single server would not be. */
export async function checkReplicatedEngines(store: Store, names: readonly string[]): Promise<void> {
  const rows = await store.query(
    `SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name IN (${names.map(sqlString).join(', ')})`,
  );
  const plain = rows.filter(([, engine]) => !engine!.startsWith('Replicated'));
  if (plain.length > 0)
    throw new DrawdownError(
      'config_invalid',
      `DRAWDOWN_CLICKHOUSE_CLUSTER is set, but ${plain.map(([name, engine]) => `${name} is ${engine}`).join(', ')}: replicated tables cannot be made in place; copy the data into a new database (docs/deploy.md › ClickHouse cluster)`,
    );
}

interface ReplicaState {
  table: string;
  insertsInQueue: number;
  logPointer: number;
  logMaxIndex: number;
  zookeeperPath: string;
}

async function replicaStates(store: Store, tables: readonly string[]): Promise<ReplicaState[]> {
  // log_pointer and log_max_index are read from ZooKeeper, so they are current, not cached.
  const rows = await store.query(
    `SELECT table, inserts_in_queue, log_pointer, log_max_index, zookeeper_path FROM system.replicas WHERE database = currentDatabase() AND table IN (${tables.map(sqlString).join(', ')})`,
  );
  return rows.map(([table, inserts, pointer, maxIndex, path]) => ({
    table: table!,
    insertsInQueue: Number(inserts),
    logPointer: Number(pointer),
    logMaxIndex: Number(maxIndex),
    zookeeperPath: path!,
  }));
}

/**
 * Whether the replica has copied every entry of the replication log into its
 * queue. log_pointer is the index of the next entry to copy, so it is above
 * log_max_index once all are copied; 0 and 0 is either an empty log or one
 * entry not yet copied, which only ZooKeeper can tell apart.
 */
async function logCopied(store: Store, state: ReplicaState): Promise<boolean> {
  if (state.logPointer > state.logMaxIndex) return true;
  if (state.logPointer > 0) return false;
  const rows = await store.query(
    `SELECT count() FROM system.zookeeper WHERE path = ${sqlString(`${state.zookeeperPath}/log`)}`,
  );
  return Number(rows[0]?.[0] ?? 0) === 0;
}

function behind(store: Store, what: string): ReplicaBehindError {
  return new ReplicaBehindError(
    `ClickHouse replica ${store.cluster?.current() ?? ''} has not yet fetched ${what}; retry once it has caught up (if the replica that committed them is down: once it is back)`,
  );
}

/**
 * Throws ReplicaBehindError unless the replica the store talks to holds
 * every insert committed (on any replica) into `tables` before this call.
 * No-op without a cluster. What a rater resumes from (its watermark, label
 * floor, remembered ids, counted messages) and a settlement run's own tables
 * are read only after this passes.
 */
export async function assertCaughtUp(store: Store, tables: readonly string[]): Promise<void> {
  if (store.cluster === undefined) return;
  for (const state of await replicaStates(store, tables)) {
    if (state.insertsInQueue > 0) throw behind(store, `${state.insertsInQueue} committed part(s) of ${state.table}`);
    if (!(await logCopied(store, state))) throw behind(store, `the replication log of ${state.table}`);
  }
}

/** Where a part lies in commit order: its partition (a YYYYMM month, or "all" on a table from before) and block. */
interface PartPlace {
  partition: string;
  block: number;
}

/** Parses `<partition>_<min block>_<max block>_<level>[_<mutation>]`, at its min or max block. */
function partPlace(name: string, end: 'min' | 'max'): PartPlace | undefined {
  const fields = name.split('_');
  const block = Number(fields[end === 'min' ? 1 : 2]);
  return fields.length >= 4 && Number.isSafeInteger(block) ? { partition: fields[0]!, block } : undefined;
}

/** Months compare as equal-length digit strings; block numbers count per partition. */
function before(a: PartPlace, b: PartPlace): boolean {
  return a.partition < b.partition || (a.partition === b.partition && a.block < b.block);
}

/**
 * The weaker check a settlement run needs for usage_minute, after reading
 * the watermarks: every part it lacks was committed after every part it
 * has. One rater writes a partition's flushes one after another, with labels
 * and flushed_at stamps that only grow (rater/flush.ts flushStampSec), so
 * (month, block number) follows their labels (block numbers count per
 * month); a missing part placed below a present one could hold a label at or
 * below the watermark just read, and the run would skip it for good. Missing
 * parts above are labelled above the watermark, and a later run takes them.
 * So a run can settle on a replica whose peer died with parts it never
 * copied, as long as nothing was written after them.
 */
export async function assertUsageInOrder(store: Store): Promise<void> {
  if (store.cluster === undefined) return;
  const [state] = await replicaStates(store, ['usage_minute']);
  if (state === undefined) return;
  if (!(await logCopied(store, state))) throw behind(store, 'the replication log of usage_minute');
  if (state.insertsInQueue === 0) return;
  const waiting = await store.query(
    "SELECT new_part_name FROM system.replication_queue WHERE database = currentDatabase() AND table = 'usage_minute' AND type = 'GET_PART'",
  );
  const present = await store.query(
    "SELECT name FROM system.parts WHERE database = currentDatabase() AND table = 'usage_minute' AND active",
  );
  let lowestWaiting: PartPlace | undefined;
  for (const [name] of waiting) {
    const place = partPlace(name!, 'min');
    if (place !== undefined && (lowestWaiting === undefined || before(place, lowestWaiting))) lowestWaiting = place;
  }
  let highestPresent: PartPlace | undefined;
  for (const [name] of present) {
    const place = partPlace(name!, 'max');
    if (place !== undefined && (highestPresent === undefined || before(highestPresent, place))) highestPresent = place;
  }
  if (lowestWaiting !== undefined && highestPresent !== undefined && !before(highestPresent, lowestWaiting))
    throw behind(
      store,
      `usage_minute parts committed before parts it already holds (${lowestWaiting.partition} block ${lowestWaiting.block} < ${highestPresent.partition} block ${highestPresent.block})`,
    );
}
