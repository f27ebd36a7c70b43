/**
 * The rater SIGKILLed again and again while usage streams in: at seeded
 * random instants, inside a worker thread mid-decode, between writing a
 * flush's event ids and its usage, and between its usage and its ack —
 * restarted each time. Some events are also re-sent under new keys (a client
 * that lost its answers). At the end ClickHouse holds every distinct event
 * exactly once. Real nats-server, clickhouse-server and rater processes.
 */
import { Decimal } from 'decimal.js';
import { afterAll, describe, expect, it } from 'vitest';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import {
  crashed,
  openTestStore,
  postEvents,
  prng,
  spawnDrawdown,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type ClickHouseTarget,
} from './harness.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('rater killed at random points', () => {
  const dir = tempDir('rater-kill');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  let ingest: Running;

  afterAll(async () => {
    await ingest?.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('counts every distinct event exactly once across ten kills and restarts', async () => {
    const seed = Number(process.env.DRAWDOWN_TEST_SEED ?? 20261125);
    const rand = prng(seed);
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    ingest = await startDrawdown(testConfig({ natsUrl: nats.url }), { ingest: true, rater: false, settlement: false });

    const expected = new Map<string, { quantity: Decimal; events: number }>();
    const sent: unknown[][] = [];
    const atMs = Date.now() - 30 * 60_000;
    let batchNo = 0;
    const sendBatch = async (): Promise<void> => {
      const b = batchNo++;
      const events = Array.from({ length: 25 }, (_, i) => {
        const customer = `k${(b * 3 + i) % 7}`;
        const quantity = `${(b * 13 + i * 7) % 500}.${String((b * 7 + i) % 1000).padStart(3, '0')}`;
        const key = `${customer}|gpt-4o.input_tokens|{}`;
        const total = expected.get(key) ?? { quantity: new Decimal(0), events: 0 };
        expected.set(key, { quantity: total.quantity.plus(quantity), events: total.events + 1 });
        return {
          id: `kill-${b}-${i}`,
          customer,
          meter: 'gpt-4o.input_tokens',
          quantity,
          timestamp: atMs + ((b * 25 + i) % 1_200) * 1_000,
        };
      });
      sent.push(events);
      expect((await postEvents(ingest.url!, events, { key: `kill-batch-${b}` })).status).toBe(202);
      // Now and then a client re-sends an earlier batch under a new key: its events must not count again.
      if (rand() < 0.3) {
        const again = sent[Math.floor(rand() * sent.length)]!;
        expect((await postEvents(ingest.url!, again, { key: `resent-${b}` })).status).toBe(202);
      }
    };
    const raterEnv = (fault?: string): Record<string, string> => ({
      DRAWDOWN_NATS_URL: nats.url,
      DRAWDOWN_CLICKHOUSE_URL: clickhouse.url,
      DRAWDOWN_PARTITIONS: '2',
      DRAWDOWN_FLUSH_INTERVAL_MS: String(20 + Math.floor(rand() * 100)),
      DRAWDOWN_FETCH_MESSAGES_MAX: String(1 + Math.floor(rand() * 4)),
      DRAWDOWN_ACK_WAIT_MS: '2000',
      ...(fault ? { DRAWDOWN_FAULT: fault } : {}),
    });

    // Kills at named points (each rater dies there by itself) and at random instants (the test kills it).
    const kills = [
      'random',
      'in-worker:2',
      'random',
      'after-ids-insert:1',
      'random',
      'after-insert:2',
      'random',
      'in-worker:5',
      'random',
      'after-ids-insert:3',
    ];
    for (const kill of kills) {
      for (let i = 0; i < 3; i++) await sendBatch();
      const rater = spawnDrawdown('rater', raterEnv(kill === 'random' ? undefined : kill));
      if (kill === 'random') {
        await sleep(150 + Math.floor(rand() * 900));
        rater.child.kill('SIGKILL');
      } else {
        // Keep feeding it until it reaches its crash point (at most 100 more batches).
        for (let fed = 0; fed < 100 && rater.child.exitCode === null && rater.child.signalCode === null; fed++) {
          await sendBatch();
          await Promise.race([rater.exited, sleep(200)]);
        }
      }
      const exit = await crashed(rater, 10_000);
      expect(exit.signal, `${kill} (seed ${seed}): ${rater.output()}`).toBe('SIGKILL');
    }

    const survivor = spawnDrawdown('rater', raterEnv());
    try {
      await waitForStreamDrained(nats.url);
    } finally {
      await survivor.stop();
    }
    expect(survivor.output()).not.toMatch(/"level":(50|60)/);

    const store = await openTestStore(clickhouse.url);
    try {
      const want = new Map([...expected].map(([k, v]) => [k, `${v.quantity.toFixed()}|${v.events}`]));
      expect(await usageTotals(store), `seed ${seed}`).toEqual(want);
    } finally {
      await store.close();
    }
  });
});
