/**
 * The tables, created identically on ClickHouse 18.16 and on chDB. Only types
 * and engines both understand: String, UInt*, Decimal(38, 9), DateTime('UTC'),
 * MergeTree and ReplacingMergeTree; DateTimes are read back with
 * toUnixTimestamp() because the two print empty/zero dates differently.
 */
import { flushBoundsTable } from './flush-bounds.js';
import type { Store } from './store.js';
import { usageMinuteTable } from './usage-minute.js';
import { finishUsagePartitioning } from './usage-partitioning.js';
import { checkReplicatedEngines, createOnEveryReplica, replicatedDdl } from './replication.js';

export const tables = {
  usageMinute: usageMinuteTable,

  /** Each rater flush's earliest minute, written before the flush (shared/clickhouse/flush-bounds.ts). */
  flushBounds: flushBoundsTable,

  /**
   * The immutable ledger. entry_id is deterministic, so a re-run writes the
   * same ids; ReplacingMergeTree and reads that pick one row per entry_id make
   * a repeated insert harmless.
   */
  ledgerEntries: `CREATE TABLE IF NOT EXISTS ledger_entries (
    entry_id String,
    customer String,
    unit String,
    kind String,
    amount Decimal(38, 9),
    effective_at DateTime('UTC'),
    posted_at DateTime('UTC'),
    run_id String,
    meter String,
    dimensions String,
    quantity Decimal(38, 9),
    rate_version String,
    source String,
    block_id String,
    expires_at DateTime('UTC'),
    grant_source String DEFAULT '',
    grant_origin String DEFAULT ''
  ) ENGINE = ReplacingMergeTree ORDER BY (customer, unit, entry_id)`,

  /**
   * Each (customer, credit unit)'s credit state as a settlement run leaves it
   * (`as_of` = the run's window end): the run's inputs were the entries
   * effective before its window and posted before `inputs_before`, plus its
   * own postings. The next run starts from here instead of replaying the
   * ledger. `balance` = the state's balance, which equals the sum of the
   * account's entries at that point. Ordered by as_of first: a run reads the
   * previous run's snapshots, one as_of, as one range. Partitioned by month
   * so settlement drops old months whole (DRAWDOWN_SNAPSHOT_RETENTION_DAYS).
   */
  creditSnapshots: `CREATE TABLE IF NOT EXISTS credit_snapshots (
    customer String,
    unit String,
    as_of DateTime('UTC'),
    run_id String,
    inputs_before DateTime('UTC'),
    balance Decimal(38, 9),
    state String
  ) ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(as_of) ORDER BY (as_of, customer, unit)`,

  /**
   * Settlement runs: a "started" row before a run posts anything, a
   * "completed" row (with the report) after. The cursor is the latest
   * completed window_until; a started run without completion is finished,
   * with its exact window, before any new one (docs/exactly-once.md).
   */
  settlementRuns: `CREATE TABLE IF NOT EXISTS settlement_runs (
    run_id String,
    window_from DateTime('UTC'),
    window_until DateTime('UTC'),
    recorded_at DateTime('UTC'),
    report String,
    status String,
    watermarks String
  ) ENGINE = MergeTree ORDER BY (run_id, status)`,

  /**
   * Usage no rate row priced, outstanding until a later run prices it
   * (settlement/unpriced.ts). Append-only: the run that finds a line writes
   * a `found` row (line_id is a hash of that run and the line, so a resumed
   * run writes the same id again), the run that bills it a `billed` row with
   * the rate version. `run_until` is the writing run's window end: what was
   * outstanding as of an instant is read from it. Reads take one row per
   * (line_id, status).
   */
  unpricedUsage: `CREATE TABLE IF NOT EXISTS unpriced_usage (
    line_id String,
    status String,
    run_id String,
    run_until DateTime('UTC'),
    customer String,
    meter String,
    dimensions String,
    quantity Decimal(38, 9),
    since DateTime('UTC'),
    reason String,
    rate_version String,
    recorded_at DateTime('UTC')
  ) ENGINE = MergeTree ORDER BY (customer, line_id, status)`,

  /**
   * The catalog's history (catalog/): each row proposes one
   * revision, the whole validated catalog as canonical JSON. A proposal is in
   * force only once catalog_commits records it committed (two writers may
   * propose the same number; at most one commits). proposed_at is filled by
   * ClickHouse, so proposal ages are measured on one clock. Append-only.
   */
  catalogRevisions: `CREATE TABLE IF NOT EXISTS catalog_revisions (
    revision UInt64,
    applied_at DateTime('UTC'),
    applied_by String,
    sha256 String,
    document String,
    attempt String,
    proposed_at DateTime('UTC') DEFAULT now()
  ) ENGINE = MergeTree ORDER BY (revision, sha256)`,

  /**
   * What became of each catalog proposal (by its attempt id): `committed` or `withdrawn`
   * (settlement/catalog/store.ts).
   */
  catalogCommits: `CREATE TABLE IF NOT EXISTS catalog_commits (
    revision UInt64,
    sha256 String,
    attempt String,
    outcome String,
    recorded_at DateTime('UTC') DEFAULT now()
  ) ENGINE = MergeTree ORDER BY (revision, sha256)`,

  /**
   * Event-id fingerprints each rater flush counted (rater/dedupe/id-log.ts):
   * what a restarted rater reloads to keep dropping repeated event ids.
   * Written before the flush's usage rows; read only up to the watermark.
   * Partitioned by day so retention drops whole days.
   */
  dedupeIds: `CREATE TABLE IF NOT EXISTS dedupe_ids (
    stream_partition UInt16,
    flush_seq UInt64,
    chunk UInt32,
    written_at DateTime('UTC'),
    ids UInt32,
    hashes String
  ) ENGINE = MergeTree PARTITION BY toYYYYMMDD(written_at) ORDER BY (stream_partition, flush_seq, chunk)`,
} as const;

export const dedupeIdsColumns = ['stream_partition', 'flush_seq', 'chunk', 'written_at', 'ids', 'hashes'] as const;

export const catalogRevisionColumns = [
  'revision',
  'applied_at',
  'applied_by',
  'sha256',
  'document',
  'attempt',
] as const;
export const catalogCommitColumns = ['revision', 'sha256', 'attempt', 'outcome'] as const;

export const ledgerColumns = [
  'entry_id',
  'customer',
  'unit',
  'kind',
  'amount',
  'effective_at',
  'posted_at',
  'run_id',
  'meter',
  'dimensions',
  'quantity',
  'rate_version',
  'source',
  'block_id',
  'expires_at',
  'grant_source',
  'grant_origin',
] as const;

export const creditSnapshotColumns = [
  'customer',
  'unit',
  'as_of',
  'run_id',
  'inputs_before',
  'balance',
  'state',
] as const;

export const unpricedUsageColumns = [
  'line_id',
  'status',
  'run_id',
  'run_until',
  'customer',
  'meter',
  'dimensions',
  'quantity',
  'since',
  'reason',
  'rate_version',
  'recorded_at',
] as const;

export const settlementRunColumns = [
  'run_id',
  'window_from',
  'window_until',
  'recorded_at',
  'report',
  'status',
  'watermarks',
] as const;

export async function ensureSchema(store: Store): Promise<void> {
  // Before any CREATE: a migration cut between its renames must not be met with a new, empty usage_minute.
  await finishUsagePartitioning(store);
  for (const ddl of Object.values(tables)) await createTable(store, ddl);
  if (store.cluster !== undefined)
    await checkReplicatedEngines(
      store,
      Object.values(tables).map((ddl) => /^CREATE TABLE IF NOT EXISTS (\w+)/.exec(ddl)![1]!),
    );
  await addMessageSeqs(store);
  await addHold(store);
  await addGrantSource(store);
  await partitionCreditSnapshots(store);
}

/**
 * The engine clause is chosen here, once: the DDL above as written on a
 * single server or chDB; on a cluster (DRAWDOWN_CLICKHOUSE_CLUSTER) the same
 * DDL with its engine made Replicated…, created on every replica
 * (shared/clickhouse/replication.ts). The ALTERs below then run on one
 * replica: ALTER of a replicated table reaches the others through ZooKeeper.
 */
async function createTable(store: Store, ddl: string): Promise<void> {
  if (store.cluster === undefined) await store.command(ddl);
  else await createOnEveryReplica(store, (database) => replicatedDdl(ddl, database));
}

/**
 * usage_minute was created without `message_seqs` before flushes recorded
 * the messages they counted. ALTER … ADD COLUMN only touches metadata; old
 * rows read as '' and the rater treats their flushes as it did then
 * (rater/counted-log.ts, legacyFloor).
 */
async function addMessageSeqs(store: Store): Promise<void> {
  const rows = await store.query(
    "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'usage_minute' AND name = 'message_seqs'",
  );
  if (Number(rows[0]?.[0] ?? 0) === 0)
    await store.command("ALTER TABLE usage_minute ADD COLUMN message_seqs String DEFAULT ''");
}

/**
 * usage_minute was created without `hold` before usage could name a credit
 * hold; old rows read as '' (no hold), which is what they were.
 */
async function addHold(store: Store): Promise<void> {
  const rows = await store.query(
    "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'usage_minute' AND name = 'hold'",
  );
  if (Number(rows[0]?.[0] ?? 0) === 0)
    await store.command("ALTER TABLE usage_minute ADD COLUMN hold String DEFAULT ''");
}

/**
 * ledger_entries was created without `grant_source` and `grant_origin`
 * before add-ons and charges granted credits: every grant then came from a
 * plan, so old rows read '' and are shown as plan grants (settlement/ledger.ts).
 */
async function addGrantSource(store: Store): Promise<void> {
  const rows = await store.query(
    "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'ledger_entries' AND name IN ('grant_source', 'grant_origin')",
  );
  const have = new Set(rows.map((r) => r[0]));
  for (const column of ['grant_source', 'grant_origin'])
    if (!have.has(column)) await store.command(`ALTER TABLE ledger_entries ADD COLUMN ${column} String DEFAULT ''`);
}

/**
 * credit_snapshots was created without PARTITION BY before retention
 * existed; such a table is copied into a partitioned one once, at the first
 * start after upgrading. Snapshots are a cache of the ledger (an account
 * without one is rebuilt from its entries), so a crash half-way loses at
 * most speed: leftovers are dropped, and a missing table was created above.
 */
async function partitionCreditSnapshots(store: Store): Promise<void> {
  const ddl = (await store.query('SHOW CREATE TABLE credit_snapshots'))[0]?.[0] ?? '';
  if (!/PARTITION BY/i.test(ddl)) {
    await store.command('DROP TABLE IF EXISTS credit_snapshots_partitioned');
    await createTable(store, tables.creditSnapshots.replace('credit_snapshots (', 'credit_snapshots_partitioned ('));
    await store.command(
      `INSERT INTO credit_snapshots_partitioned (${creditSnapshotColumns.join(', ')}) SELECT ${creditSnapshotColumns.join(', ')} FROM credit_snapshots`,
    );
    await store.command(
      'RENAME TABLE credit_snapshots TO credit_snapshots_unpartitioned, credit_snapshots_partitioned TO credit_snapshots',
    );
  }
  await store.command('DROP TABLE IF EXISTS credit_snapshots_unpartitioned');
}
