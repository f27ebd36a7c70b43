/**
 * The embedded store (shared/clickhouse/chdb-store.ts): a chDB session runs
 * its calls one at a time, so with a single session every live balance read
 * in the all-in-one process waited behind the rater's inserts. Reads now have
 * sessions of their own on the same directory. What a user would notice: a
 * read answers while a long write is still running, a long read does not hold
 * up a short one, and what a resolved write wrote is what the next read sees.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../shared/clickhouse/open.js';
import type { Store } from '../shared/clickhouse/store.js';
import { StoreError } from '../shared/clickhouse/store.js';
import { tempDir } from './harness.js';

/** Work that keeps one chDB call busy for a while (hundreds of ms) and writes or returns one row. */
const longSelect = 'SELECT sum(number) FROM numbers(1500000000)';

describe('chDB store sessions', () => {
  const dir = tempDir('chdb-store');
  let store: Store;

  beforeAll(async () => {
    store = await openStore(`chdb:${dir.path}/chdb`);
    await store.command('CREATE TABLE IF NOT EXISTS lanes (n UInt64) ENGINE = MergeTree ORDER BY n');
  });

  afterAll(async () => {
    await store?.close();
    dir.remove();
  });

  /** Runs the calls at once; answers the order in which they resolved (their labels). */
  const finishOrder = async (calls: Record<string, () => Promise<unknown>>): Promise<string[]> => {
    const order: string[] = [];
    await Promise.all(Object.entries(calls).map(([label, call]) => call().then(() => order.push(label))));
    return order;
  };

  it('answers a query while a long write is still running', async () => {
    const order = await finishOrder({
      write: () => store.command(`INSERT INTO lanes ${longSelect}`),
      read: async () => {
        // Made once the write is under way, as a live balance read arrives during a rater flush.
        await new Promise((resolve) => setTimeout(resolve, 20));
        return store.query('SELECT count() FROM lanes');
      },
    });
    expect(order).toEqual(['read', 'write']);
  });

  it('does not hold a short query behind a long one', async () => {
    const order = await finishOrder({
      long: () => store.query(longSelect),
      short: async () => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return store.query('SELECT 1');
      },
    });
    expect(order).toEqual(['short', 'long']);
  });

  it('shows a read what every resolved write wrote, in order', async () => {
    await store.command('CREATE TABLE IF NOT EXISTS ordered (n UInt64) ENGINE = MergeTree ORDER BY n');
    // Writes made without waiting keep the order they were made in: the table is emptied before the rows land.
    await Promise.all([
      store.insert('ordered', ['n'], '1\n2\n'),
      store.command('TRUNCATE TABLE ordered'),
      store.insert('ordered', ['n'], '3\n'),
      store.insert('ordered', ['n'], '4\n'),
    ]);
    expect(await store.query('SELECT n FROM ordered ORDER BY n')).toEqual([['3'], ['4']]);
    for (let i = 5; i < 25; i++) {
      await store.insert('ordered', ['n'], `${i}\n`);
      expect(await store.query('SELECT max(n), count() FROM ordered')).toEqual([[String(i), String(i - 2)]]);
    }
  });

  it('refuses every call once closed', async () => {
    // One data directory per process: a second store opens the same one (its sessions coexist).
    const second = await openStore(`chdb:${dir.path}/chdb`);
    await second.close();
    await expect(second.query('SELECT 1')).rejects.toBeInstanceOf(StoreError);
    await expect(second.command('SELECT 1')).rejects.toBeInstanceOf(StoreError);
    await expect(second.insert('lanes', ['n'], '1\n')).rejects.toBeInstanceOf(StoreError);
    expect(await second.ping()).toBe(false);
    expect(await store.query('SELECT 1')).toEqual([['1']]);
  });
});
