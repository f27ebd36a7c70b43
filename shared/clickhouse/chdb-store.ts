import { mkdirSync } from 'node:fs';
import { Session } from 'chdb';
import { decodeTsv } from '../tsv.js';
import { sqlIdentifier } from '../sql.js';
import { StoreError, type Store } from './store.js';

/**
 * chDB runs ClickHouse's engine inside this process. One data directory may be
 * open in one process at a time, so the all-in-one process owns it; the async
 * calls run off the event loop so the gateway keeps serving during inserts.
 */
export class ChdbStore implements Store {
  readonly kind = 'chdb' as const;
  readonly #session: Session;
  #closed = false;

  constructor(path: string) {
    mkdirSync(path, { recursive: true });
    this.#session = new Session(path);
  }

  #check(): void {
    if (this.#closed) throw new StoreError('chDB session is closed', false);
  }

  async command(sql: string): Promise<void> {
    this.#check();
    try {
      await this.#session.queryAsync(sql, { format: 'TabSeparated' });
    } catch (error) {
      throw new StoreError(`chDB command failed: ${(error as Error).message}`, false, error);
    }
  }

  async query(sql: string): Promise<string[][]> {
    this.#check();
    try {
      const result = await this.#session.queryAsync(sql, { format: 'TabSeparated' });
      return decodeTsv(result.text());
    } catch (error) {
      throw new StoreError(`chDB query failed: ${(error as Error).message}`, false, error);
    }
  }

  async insert(table: string, columns: readonly string[], tsv: string): Promise<void> {
    this.#check();
    if (tsv.length === 0) return;
    try {
      await this.#session.insert({
        table: sqlIdentifier(table),
        columns: columns.map(sqlIdentifier),
        format: 'TabSeparated',
        values: Buffer.from(tsv),
      });
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
    this.#session.close();
  }
}
