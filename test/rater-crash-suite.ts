/**
 * The rater is killed (SIGKILL) right after its ClickHouse insert and before
 * its ack, twice, then restarted: every event is still counted exactly once.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Decimal } from 'decimal.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  crashed,
  openTestStore,
  postEvents,
  spawnDrawdown,
  startClickHouse,
  startNats,
  streamState,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

export function defineRaterCrash(backend: Backend): void {
  describe(`rater killed between ClickHouse write and ack (${backend})`, () => {
    const dir = tempDir(`crash-${backend}`);
    let nats: NatsServerProcess | undefined;
    let clickhouse: ClickHouseTarget | undefined;
    let ingest: Running | undefined;

    afterAll(async () => {
      await ingest?.stop();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    it('counts every event exactly once across two crashes and restarts', async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      ingest = await startDrawdown(testConfig({ natsUrl: nats.url }), {
        ingest: true,
        rater: false,
        settlement: false,
      });
      const base = ingest.url!;
      const expected = new Map<string, Decimal>();
      const atMs = Date.now() - 10 * 60_000;
      let batchNo = 0;
      const sendBatches = async (count: number): Promise<void> => {
        for (let b = 0; b < count; b++, batchNo++) {
          const events = Array.from({ length: 50 }, (_, i) => {
            const customer = `c${(batchNo + i) % 5}`;
            const quantity = `${(batchNo * 50 + i) % 997}.${String(i).padStart(3, '0')}`;
            const key = `${customer}|gpt-4o.input_tokens|{}`;
            expected.set(key, (expected.get(key) ?? new Decimal(0)).plus(quantity));
            return {
              id: `e-${batchNo}-${i}`,
              customer,
              meter: 'gpt-4o.input_tokens',
              quantity,
              timestamp: atMs + i * 1_000,
            };
          });
          const response = await postEvents(base, events, { key: `crash-batch-${batchNo}` });
          expect(response.status).toBe(202);
        }
      };
      const raterEnv = (fault?: string): Record<string, string> => ({
        DRAWDOWN_NATS_URL: nats!.url,
        DRAWDOWN_CLICKHOUSE_URL: clickhouse!.url,
        DRAWDOWN_PARTITIONS: '2',
        DRAWDOWN_FLUSH_INTERVAL_MS: '50',
        DRAWDOWN_FETCH_MESSAGES_MAX: '3',
        ...(fault ? { DRAWDOWN_FAULT: fault } : {}),
      });

      await sendBatches(12);
      for (const fault of ['after-insert:1', 'after-insert:2']) {
        const doomed = spawnDrawdown('rater', raterEnv(fault));
        const exit = await crashed(doomed);
        expect(exit.signal, doomed.output()).toBe('SIGKILL');
        // The crash landed in the gap: ClickHouse holds rows whose batches are still unacked in the stream.
        expect((await streamState(nats.url)).messages).toBeGreaterThan(0);
        await sendBatches(4);
      }
      const store = backend === 'server' ? await openTestStore(clickhouse.url) : undefined;
      if (store) expect((await usageTotals(store)).size).toBeGreaterThan(0);
      await store?.close();

      const rater = spawnDrawdown('rater', raterEnv());
      try {
        await waitForStreamDrained(nats.url);
      } finally {
        await rater.stop();
      }
      expect(rater.output()).not.toMatch(/"level":(50|60)/);

      const check = await openTestStore(clickhouse.url);
      try {
        const totals = await usageTotals(check);
        const want = new Map(
          [...expected].map(([k, v]) => [k, `${v.toFixed()}|${k.startsWith('c') ? countEvents(k, batchNo) : 0}`]),
        );
        expect(totals).toEqual(want);
      } finally {
        await check.close();
      }
    });
  });
}

/** Events per customer in the workload above: event i of batch b goes to customer (b + i) % 5. */
function countEvents(key: string, batches: number): number {
  const customer = Number(key.slice(1, key.indexOf('|')));
  let n = 0;
  for (let b = 0; b < batches; b++) for (let i = 0; i < 50; i++) if ((b + i) % 5 === customer) n++;
  return n;
}
