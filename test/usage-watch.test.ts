/**
 * Balance notices learn which customers had usage from the rater's flushes
 * (settlement/notices/usage-watch.ts). A look that fails — ClickHouse busy
 * or away for a moment — must not lose those customers: the next look reads
 * the same flushes again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flushPayload } from '../rater/flush.js';
import { flushBoundsColumns, flushBoundsPayload } from '../shared/clickhouse/flush-bounds.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import type { Store } from '../shared/clickhouse/store.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import { UsageWatch } from '../settlement/notices/usage-watch.js';
import { tempDir } from './harness.js';

describe('the usage watch of balance notices (chDB)', () => {
  const dir = tempDir('usage-watch');
  let store: Store;
  let failNext = false;
  /** The real store, but the next look for customers fails as a ClickHouse error would. */
  let flaky: Store;

  beforeAll(async () => {
    store = await openStore(`chdb:${dir.path}/chdb`);
    await ensureSchema(store);
    flaky = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'query')
          return async (sql: string) => {
            if (failNext && sql.startsWith('SELECT DISTINCT customer')) {
              failNext = false;
              throw new Error('ClickHouse query failed: timeout');
            }
            return target.query(sql);
          };
        const value: unknown = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  });

  afterAll(async () => {
    await store?.close();
    dir.remove();
  });

  // As the rater writes a flush: its record first (shared/clickhouse/flush-bounds.ts), then its rows.
  const flush = async (partition: number, label: number, customers: string[]): Promise<void> => {
    const nowSec = Math.floor(Date.now() / 60_000) * 60;
    await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(partition, label, nowSec, nowSec));
    await store.insert(
      'usage_minute',
      usageMinuteFlushColumns,
      flushPayload(
        customers.map((c) => [c, 'gpt-4o.input_tokens', '{}', nowSec, 1_000_000_000n, 1] as const),
        partition,
        label,
        nowSec,
      ),
    );
  };

  it('given a look that fails, then the next look still names the customers of the flushes it missed', async () => {
    const watch = new UsageWatch(flaky, 1_000);
    await flush(0, 1, ['before']);
    expect(await watch.changed()).toEqual({ customers: [], truncated: false });
    await flush(0, 2, ['w-1', 'w-2']);
    await flush(1, 1, ['w-3']);
    failNext = true;
    await expect(watch.changed()).rejects.toThrow(/timeout/);
    const { customers } = await watch.changed();
    expect(customers.sort()).toEqual(['w-1', 'w-2', 'w-3']);
    // And once read, they are not named again.
    expect(await watch.changed()).toEqual({ customers: [], truncated: false });
  });
});
