/**
 * One Store over the replicas of a ClickHouse cluster: every statement goes
 * to one replica (the first listed, to begin with) and stays there, so a
 * process reads what it wrote. When that replica fails with a retryable
 * error, the store turns to the next one and rethrows: the caller's own
 * retry (the rater's back-off, a client retrying a 503) runs its whole
 * sequence again on the next replica. A statement is never replayed here
 * silently, because a read that began on one replica and ended on another
 * could mix two states (docs/exactly-once.md › ClickHouse cluster).
 */
import { StoreError, type Store, type StoreCluster } from './store.js';

export interface Replica {
  /** The URL without credentials, for messages and logs. */
  url: string;
  store: Store;
}

export class FailoverStore implements Store {
  readonly kind = 'server' as const;
  readonly cluster: StoreCluster;
  readonly #replicas: readonly Replica[];
  #current = 0;

  constructor(name: string, replicas: readonly Replica[]) {
    if (replicas.length === 0) throw new RangeError('a cluster store needs at least one replica');
    this.#replicas = replicas;
    this.cluster = {
      name,
      replicas: replicas.map((r) => r.store),
      current: () => this.#replicas[this.#current]!.url,
    };
  }

  command(sql: string): Promise<void> {
    return this.#onCurrent((store) => store.command(sql));
  }

  query(sql: string): Promise<string[][]> {
    return this.#onCurrent((store) => store.query(sql));
  }

  insert(table: string, columns: readonly string[], tsv: string): Promise<void> {
    return this.#onCurrent((store) => store.insert(table, columns, tsv));
  }

  async ping(): Promise<boolean> {
    try {
      return await this.#onCurrent(async (store) => {
        if (await store.ping()) return true;
        throw new StoreError('ping failed', true);
      });
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#replicas.map((r) => r.store.close()));
  }

  async #onCurrent<T>(operation: (store: Store) => Promise<T>): Promise<T> {
    const index = this.#current;
    const replica = this.#replicas[index]!;
    try {
      return await operation(replica.store);
    } catch (error) {
      // Only the first failure of a replica moves the store on: statements that
      // were already in flight to it must not skip the next replica as well.
      if (error instanceof StoreError && error.retryable && this.#current === index)
        this.#current = (index + 1) % this.#replicas.length;
      if (error instanceof StoreError)
        throw new StoreError(`replica ${replica.url}: ${error.message}`, error.retryable, error);
      throw error;
    }
  }
}
