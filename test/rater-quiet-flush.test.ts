/**
 * When a partition flushes (rater/README.md): a quiet one as soon as its
 * deliveries pause, not when its pull request expires, but never more than
 * once per flush interval. Real nats-server and clickhouse-server; the flush
 * interval is 4 s, so the pull request expires after 4 s and the two rules
 * are seconds apart.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startDrawdown } from '../deploy/processes.js';
import { openTestStore, postEvents, startClickHouse, startNats, tempDir, testConfig, usageTotals } from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const meter = 'gpt-4o.input_tokens';

describe('a quiet partition', () => {
  it('counts a lone event once its deliveries pause, long before its pull request expires, and flushes at most once per interval', async () => {
    const dir = tempDir('quiet-flush');
    cleanups.push(dir.remove);
    const nats = await startNats(dir.path);
    cleanups.push(() => nats.stop());
    const clickhouse = await startClickHouse('server', dir.path);
    cleanups.push(() => clickhouse.stop());
    const intervalMs = 4_000;
    const running = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url, partitions: 1, flushIntervalMs: intervalMs }),
      { ingest: true, rater: true, settlement: false },
    );
    cleanups.push(() => running.stop());
    const store = await openTestStore(clickhouse.url);
    cleanups.push(() => store.close());
    const counted = async (customer: string) => (await usageTotals(store)).has(`${customer}|${meter}|{}`);
    const waitCounted = async (customer: string, sentMs: number): Promise<number> => {
      while (!(await counted(customer))) {
        if (Date.now() - sentMs > 3 * intervalMs) throw new Error(`${customer} was not counted`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return Date.now() - sentMs;
    };
    const send = async (customer: string): Promise<number> => {
      const event = { id: `${customer}-1`, customer, meter, quantity: 5, timestamp: Date.now() - 60_000 };
      expect((await postEvents(running.url!, [event])).status).toBe(202);
      return Date.now();
    };
    // Let the rater's first pull requests start and the partition fall quiet.
    await new Promise((r) => setTimeout(r, 1_000));

    const firstSent = await send('quiet-a');
    const firstLagMs = await waitCounted('quiet-a', firstSent);
    // The pull request would have held it up to 4 s; a pause of 20 ms ends the wait.
    expect(firstLagMs).toBeLessThan(intervalMs / 2);

    // Right after a flush the next lone event waits for the interval: the second flush starts no sooner than
    // one interval after the first, which started after the first event was sent.
    const secondSent = await send('quiet-b');
    const secondLagMs = await waitCounted('quiet-b', secondSent);
    expect(secondSent + secondLagMs - firstSent).toBeGreaterThanOrEqual(intervalMs - 50);
  });
});
