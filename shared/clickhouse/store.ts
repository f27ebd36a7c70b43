import { DrawdownError } from '../errors.js';

/**
 * ClickHouse access behind one small interface with two back ends that run
 * identical SQL: a ClickHouse server over HTTP (production) and chDB
 * in-process (the single-machine default). Data moves as TabSeparated in both
 * directions, so decimals stay exact on ClickHouse 18.16 and on current chDB.
 */
export interface Store {
  readonly kind: 'server' | 'chdb';
  /**
   * Set when the tables replicate over a ClickHouse cluster
   * (DRAWDOWN_CLICKHOUSE_CLUSTER): ensureSchema then creates them
   * ReplicatedMergeTree on every replica (shared/clickhouse/replication.ts).
   */
  readonly cluster?: StoreCluster;
  /** A statement with no result (DDL, ALTER). */
  command(sql: string): Promise<void>;
  /** A SELECT; rows of unescaped TabSeparated cells. The SQL must not carry a FORMAT clause. */
  query(sql: string): Promise<string[][]>;
  /**
   * Inserts a TabSeparated payload. One call is one INSERT statement: below
   * `insertRowsMax` rows that fall in one partition it writes exactly
   * one part, atomically — the rater's exactly-once commit depends on that.
   */
  insert(table: string, columns: readonly string[], tsv: string): Promise<void>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** The replicas of a cluster, as the store that fails over between them knows them. */
export interface StoreCluster {
  /** The cluster's name in the servers' <remote_servers>. */
  readonly name: string;
  /** One store per replica URL, in the order given; the cluster's own Store talks to one at a time. */
  readonly replicas: readonly Store[];
  /** The URL of the replica statements go to now (no credentials). */
  current(): string;
}

/**
 * ClickHouse forms one block (and so one part) per `max_insert_block_size`
 * rows (1,048,576 by default on both engines); we stay well below it.
 */
export const insertRowsMax = 500_000;

/** A storage failure; `retryable` distinguishes "server unreachable" from "our SQL is wrong". */
export class StoreError extends Error {
  readonly retryable: boolean;
  constructor(message: string, retryable: boolean, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'StoreError';
    this.retryable = retryable;
  }
}

/**
 * The replica a store reads from has not yet fetched inserts other replicas
 * committed, and what is about to be read depends on them (a settlement
 * run's window, a rater's resume): retry once it has caught up
 * (shared/clickhouse/replication.ts).
 */
export class ReplicaBehindError extends StoreError {
  constructor(message: string) {
    super(message, true);
    this.name = 'ReplicaBehindError';
  }
}

/**
 * The client's answer for a failure that is ClickHouse being unreachable (a
 * retryable StoreError anywhere in the cause chain): 503 `store_unavailable`
 * with Retry-After, whichever route or write hit it; a replica that has not
 * caught up is 503 `store_replica_behind`. Undefined for anything else — a
 * failing statement is our bug and stays `internal`.
 */
export function storeUnavailable(error: unknown): DrawdownError | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof ReplicaBehindError) return new DrawdownError('store_replica_behind', e.message, { cause: error });
    if (e instanceof StoreError)
      return e.retryable
        ? new DrawdownError('store_unavailable', 'ClickHouse is unreachable; retry later', { cause: error })
        : undefined;
  }
  return undefined;
}

/**
 * ClickHouse error codes that say the store refuses every write, whatever
 * its rows: a missing table or column, a read-only or full server, limits on
 * memory, parts or concurrent queries, a refused login. Such an error is
 * about the store, not the data: the rater retries it (and reports itself
 * unready) and never blames, so never dead-letters, a message for it.
 */
const storeWideCodes: ReadonlySet<number> = new Set([
  8, // THERE_IS_NO_COLUMN
  16, // NO_SUCH_COLUMN_IN_TABLE
  47, // UNKNOWN_IDENTIFIER
  60, // UNKNOWN_TABLE
  81, // UNKNOWN_DATABASE
  159, // TIMEOUT_EXCEEDED
  164, // READONLY
  173, // CANNOT_ALLOCATE_MEMORY
  192, // UNKNOWN_USER
  193, // WRONG_PASSWORD
  194, // REQUIRED_PASSWORD
  202, // TOO_MANY_SIMULTANEOUS_QUERIES
  203, // NO_FREE_CONNECTION
  209, // SOCKET_TIMEOUT
  210, // NETWORK_ERROR
  241, // MEMORY_LIMIT_EXCEEDED
  242, // TABLE_IS_READ_ONLY
  243, // NOT_ENOUGH_SPACE
  252, // TOO_MANY_PARTS
  279, // ALL_CONNECTION_TRIES_FAILED
  425, // SYSTEM_ERROR
  497, // ACCESS_DENIED
  516, // AUTHENTICATION_FAILED
]);

/** The ClickHouse error code in an error's cause chain (`code` of the client's error, or "Code: N." in the text). */
export function clickhouseErrorCode(error: unknown): number | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^\d+$/.test(code)) return Number(code);
    const match = /\bCode: (\d+)\b/.exec(e.message);
    if (match !== null) return Number(match[1]);
  }
  return undefined;
}

/**
 * How the rater treats a failed write: `retry` (ClickHouse unreachable, or
 * refusing every write: wait and try again, never drop) or `refused` (this
 * write's rows were refused: retrying cannot help; the rows' messages are
 * isolated and the culprit dead-lettered).
 */
export function writeFailure(error: unknown): 'retry' | 'refused' {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof StoreError && e.retryable) return 'retry';
    if (e instanceof StoreError && /session is closed/.test(e.message)) return 'retry';
  }
  if (!(error instanceof StoreError) && !(error instanceof Error && error.cause instanceof StoreError)) return 'retry';
  const code = clickhouseErrorCode(error);
  return code !== undefined && storeWideCodes.has(code) ? 'retry' : 'refused';
}
