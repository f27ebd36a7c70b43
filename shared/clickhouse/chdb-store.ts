import { mkdirSync } from 'node:fs';
import { DrawdownError } from '../errors.js';
import { decodeTsv } from '../tsv.js';
import { sqlIdentifier } from '../sql.js';
import { StoreError, type Store } from './store.js';

/** The part of chdb's API this store uses (its own types are not needed to build without it). */
interface ChdbSession {
  queryAsync(sql: string, options: { format: string }): Promise<{ text(): string }>;
  insert(params: { table: string; columns: string[]; format: string; values: Buffer }): Promise<unknown>;
  close(): void;
}
type ChdbModule = { Session: new (path: string) => ChdbSession };

/**
 * The package name sits in a variable so tsc does not resolve it: chdb is an
 * optional peer dependency (543 MiB), and code built where it is absent (a
 * production install, `npm ci --omit=dev`, for a gateway or rater against a
 * ClickHouse server) must still compile and run. This is the one place chdb is loaded, and only
 * when a chdb: URL is opened.
 */
const chdbPackage = 'chdb';

async function loadChdb(path: string): Promise<ChdbModule> {
  try {
    return (await import(chdbPackage)) as ChdbModule;
  } catch (error) {
    const missing =
      (error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND' &&
      (error as Error).message.includes(`'${chdbPackage}'`);
    if (!missing) throw error;
    throw new DrawdownError(
      'chdb_not_installed',
      `ClickHouse URL chdb:${path} needs chDB, an optional dependency that is not installed: ` +
        'run `npm install chdb`, or set DRAWDOWN_CLICKHOUSE_URL to a ClickHouse server (http://host:8123)',
    );
  }
}

/** Sessions that answer queries; writes have one of their own. */
const chdbReadSessions = 2;

interface Lane {
  readonly session: ChdbSession;
  /** Calls in flight on it (its queue): a query goes to the reader with the fewest. */
  pending: number;
}

/**
 * chDB runs ClickHouse's engine inside this process. One data directory may be
 * open in one process at a time, so the all-in-one process owns it; the async
 * calls run off the event loop so the gateway keeps serving during inserts.
 *
 * A chDB session runs its calls one at a time, so with one session a live
 * balance read (a hold's notice, GET …/balance) waited behind every rater
 * insert in the process. Sessions on the same directory share the data and
 * run in parallel, so writes (inserts, DDL) keep one session, in the order
 * they were made, and queries go to `chdbReadSessions` others. A query made
 * after a write resolved sees it (one engine); one made while a write is in
 * flight may run before it, as it may against a ClickHouse server.
 */
export class ChdbStore implements Store {
  readonly kind = 'chdb' as const;
  readonly #writer: Lane;
  readonly #readers: readonly Lane[];
  #closed = false;

  private constructor(writer: ChdbSession, readers: readonly ChdbSession[]) {
    this.#writer = { session: writer, pending: 0 };
    this.#readers = readers.map((session) => ({ session, pending: 0 }));
  }

  static async open(path: string): Promise<ChdbStore> {
    const { Session } = await loadChdb(path);
    mkdirSync(path, { recursive: true });
    const writer = new Session(path);
    const readers = Array.from({ length: chdbReadSessions }, () => new Session(path));
    return new ChdbStore(writer, readers);
  }

  #check(): void {
    if (this.#closed) throw new StoreError('chDB session is closed', false);
  }

  async #on<T>(lane: Lane, call: (session: ChdbSession) => Promise<T>): Promise<T> {
    lane.pending++;
    try {
      return await call(lane.session);
    } finally {
      lane.pending--;
    }
  }

  #reader(): Lane {
    let best = this.#readers[0]!;
    for (const lane of this.#readers) if (lane.pending < best.pending) best = lane;
    return best;
  }

  async command(sql: string): Promise<void> {
    this.#check();
    try {
      await this.#on(this.#writer, (session) => session.queryAsync(sql, { format: 'TabSeparated' }));
    } catch (error) {
      throw new StoreError(`chDB command failed: ${(error as Error).message}`, false, error);
    }
  }

  async query(sql: string): Promise<string[][]> {
    this.#check();
    try {
      const result = await this.#on(this.#reader(), (session) => session.queryAsync(sql, { format: 'TabSeparated' }));
      return decodeTsv(result.text());
    } catch (error) {
      throw new StoreError(`chDB query failed: ${(error as Error).message}`, false, error);
    }
  }

  async insert(table: string, columns: readonly string[], tsv: string): Promise<void> {
    this.#check();
    if (tsv.length === 0) return;
    try {
      await this.#on(this.#writer, (session) =>
        session.insert({
          table: sqlIdentifier(table),
          columns: columns.map(sqlIdentifier),
          format: 'TabSeparated',
          values: Buffer.from(tsv),
        }),
      );
    } catch (error) {
      throw new StoreError(`chDB insert into ${table} failed: ${(error as Error).message}`, false, error);
    }
  }

  async ping(): Promise<boolean> {
    return !this.#closed;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const lane of [...this.#readers, this.#writer]) lane.session.close();
  }
}
