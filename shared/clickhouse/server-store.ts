import { Readable } from 'node:stream';
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import { StoreError, type Store } from './store.js';
import { sqlIdentifier } from '../sql.js';
import { decodeTsv } from '../tsv.js';

export interface ServerStoreOptions {
  url: string;
  database?: string;
  username?: string;
  password?: string;
  requestTimeoutMs?: number;
}

/**
 * Server exceptions that say "not now" rather than "wrong statement": a
 * replicated table is read-only while its replica has no ZooKeeper session
 * (just restarted, or ZooKeeper away), and an insert's fate can be unknown
 * when the session is lost during it. Retrying them is what a client should do.
 */
const retryableServerCodes = new Set([
  '209', // SOCKET_TIMEOUT
  '210', // NETWORK_ERROR
  '225', // NO_ZOOKEEPER
  '242', // TABLE_IS_READ_ONLY
  '319', // UNKNOWN_STATUS_OF_INSERT
  '999', // KEEPER_EXCEPTION
]);

// A ClickHouse exception carries a numeric code; anything without one is transport.
function classify(error: unknown, what: string): StoreError {
  const e = error as { code?: unknown; message?: string };
  const isServerException = typeof e.code === 'string' && /^\d+$/.test(e.code);
  const retryable = !isServerException || retryableServerCodes.has(e.code as string);
  return new StoreError(`ClickHouse ${what} failed: ${e.message ?? String(error)}`, retryable, error);
}

export class ServerStore implements Store {
  readonly kind = 'server' as const;
  readonly #client: ClickHouseClient;

  constructor(options: ServerStoreOptions) {
    this.#client = createClient({
      url: options.url,
      database: options.database ?? 'default',
      username: options.username ?? 'default',
      password: options.password ?? '',
      request_timeout: options.requestTimeoutMs ?? 30_000,
      // 18.16 predates some settings newer clients send by default; send none.
      clickhouse_settings: {},
      compression: { request: false, response: false },
      max_open_connections: 10,
      // Failures reach our own structured logs as StoreErrors; the client's
      // console logger would print them a second time, unstructured.
      log: { level: ClickHouseLogLevel.OFF },
    });
  }

  async command(sql: string): Promise<void> {
    try {
      await this.#client.command({ query: sql });
    } catch (error) {
      throw classify(error, 'command');
    }
  }

  async query(sql: string): Promise<string[][]> {
    try {
      const result = await this.#client.query({ query: sql, format: 'TabSeparated' });
      return decodeTsv(await result.text());
    } catch (error) {
      throw classify(error, 'query');
    }
  }

  async insert(table: string, columns: readonly string[], tsv: string): Promise<void> {
    if (tsv.length === 0) return;
    try {
      await this.#client.insert({
        table: sqlIdentifier(table),
        columns: columns.map(sqlIdentifier) as [string, ...string[]],
        format: 'TabSeparated',
        values: Readable.from([Buffer.from(tsv)], { objectMode: false }),
      });
    } catch (error) {
      throw classify(error, `insert into ${table}`);
    }
  }

  async ping(): Promise<boolean> {
    const result = await this.#client.ping();
    return result.success;
  }

  async close(): Promise<void> {
    await this.#client.close();
  }
}
