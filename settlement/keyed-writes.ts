/**
 * One write per key at a time in this process. Checking the ledger and then
 * writing is a race: concurrent requests under one key would all find nothing
 * and all write (rows with the same id but each request's own posted time).
 * Here later requests wait for the first and answer with its result. Across
 * processes only the deterministic entry id holds (settlement/README.md).
 */
import type { Store } from '../shared/clickhouse/store.js';

export class KeyedWrites<R> {
  readonly #inFlight = new WeakMap<Store, Map<string, Promise<R>>>();

  /** `waited`: the result is another request's, written while this one waited. */
  async run(store: Store, id: string, write: () => Promise<R>): Promise<{ result: R; waited: boolean }> {
    let pending = this.#inFlight.get(store);
    if (pending === undefined) this.#inFlight.set(store, (pending = new Map()));
    for (let first = pending.get(id); first !== undefined; first = pending.get(id)) {
      // A first attempt that failed (store away) leaves the key free: this request then tries on its own.
      const result = await first.catch(() => undefined);
      if (result !== undefined) return { result, waited: true };
    }
    // Removed before anyone waiting on it resumes, so a waiter never finds a settled attempt again.
    const attempt: Promise<R> = write().finally(() => {
      if (pending.get(id) === attempt) pending.delete(id);
    });
    pending.set(id, attempt);
    return { result: await attempt, waited: false };
  }
}
