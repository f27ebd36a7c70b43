/**
 * What only the log engine has (settlement/holds/hold-log.ts), against real
 * nats-servers: a process that starts later replays the log; a nats-server
 * restart loses nothing and the followers resume; open holds are re-appended
 * before the stream ages them out; a batch too big for one message is split;
 * a purged shard takes appends again; a stream made for another shard count
 * is refused. The behaviours both engines share are in holds.test.ts.
 */
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterEach, describe, expect, it } from 'vitest';
import { NatsServerProcess } from '../deploy/nats-server.js';
import { IdempotencyKeyReusedError, InsufficientCreditsError } from '../settlement/holds/hold-errors.js';
import { HoldStore, type HoldStoreOptions, type ReserveResult } from '../settlement/holds/hold-store.js';
import { shardOf } from '../settlement/holds/hold-log.js';
import { accountKey } from '../settlement/holds/hold-ids.js';
import { tempDir } from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function natsServer(prefix: string, maxPayloadBytes?: number): Promise<NatsServerProcess> {
  const dir = tempDir(prefix);
  cleanups.push(dir.remove);
  const server = await NatsServerProcess.start({
    dir: join(dir.path, 'nats'),
    ...(maxPayloadBytes === undefined ? {} : { maxPayloadBytes }),
  });
  cleanups.push(() => server.stop());
  return server;
}

async function connection(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100, noAsyncTraces: true });
  cleanups.push(() => nc.close());
  return nc;
}

async function apiProcess(url: string, options: HoldStoreOptions = {}): Promise<HoldStore> {
  const store = await HoldStore.open(await connection(url), { engine: 'log', ...options });
  cleanups.push(() => store.shutdown());
  return store;
}

const account = { unit: 'credits', base: '100', allowance: '5' };

describe('holds log engine', () => {
  it('a process started later replays the log: open holds, closed ones within retention, the same answers', async () => {
    const server = await natsServer('holds-log-replay');
    const a = await apiProcess(server.url);
    const made: ReserveResult[] = [];
    for (let i = 0; i < 40; i++)
      made.push(await a.reserve({ ...account, customer: `replay-${i % 8}`, amount: '3', key: `job-${i}` }));
    for (const reserved of made.slice(0, 20)) await a.release(reserved.hold.id);
    await a.consume(made[25]!.hold.id, '1.25', { usageKey: 'event-1' });

    const b = await apiProcess(server.url);
    for (let c = 0; c < 8; c++) {
      const [fromA, fromB] = [await a.list(`replay-${c}`, 'credits'), await b.list(`replay-${c}`, 'credits')];
      expect(fromB.holds).toEqual(fromA.holds);
      expect(fromB.held).toBe(fromA.held);
    }
    // A retried reserve finds its hold in the new process, open or released; another body under the key is refused.
    for (const [i, reserved] of made.entries()) {
      const again = await b.reserve({ ...account, customer: `replay-${i % 8}`, amount: '3', key: `job-${i}` });
      expect([again.created, again.hold.id, again.hold.status]).toEqual([
        false,
        reserved.hold.id,
        i < 20 ? 'released' : 'open',
      ]);
    }
    await expect(b.reserve({ ...account, customer: 'replay-0', amount: '4', key: 'job-0' })).rejects.toBeInstanceOf(
      IdempotencyKeyReusedError,
    );
    expect(await b.consume(made[25]!.hold.id, '1.25', { usageKey: 'event-1' })).toMatchObject({ duplicate: true });
    expect(b.stats().writes).toBe(0);
  });

  it('a nats-server restart loses no hold; both processes follow again and still admit exactly 105', async () => {
    const server = await natsServer('holds-log-restart');
    const stores = [await apiProcess(server.url), await apiProcess(server.url)];
    const reserve = (i: number) =>
      stores[i % 2]!.reserve({ ...account, customer: 'restart', amount: '1', key: `req-${i}` });
    const before = await Promise.all(Array.from({ length: 50 }, (_, i) => reserve(i)));
    await server.restart();
    const deadline = Date.now() + 30_000;
    const answers = await Promise.all(
      Array.from({ length: 150 }, async (_, n) => {
        const i = n + 50;
        for (;;) {
          try {
            return { ok: await reserve(i) };
          } catch (error) {
            if (error instanceof InsufficientCreditsError) return { refused: error };
            // 503 while the connection comes back: a client retries under the same key.
            if (Date.now() > deadline) throw error;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }),
    );
    const admitted = [
      ...before.map((r) => r.hold.id),
      ...answers.flatMap((a) => (a.ok === undefined ? [] : [a.ok.hold.id])),
    ];
    expect(new Set(admitted).size).toBe(105);
    expect(answers.filter((a) => 'refused' in a)).toHaveLength(95);
    for (const store of stores) expect((await store.list('restart', 'credits')).held).toBe('105');
  });

  it("keeps following when its consumer is deleted under it: another process's holds still count", async () => {
    const server = await natsServer('holds-log-follower');
    const [a, b] = [await apiProcess(server.url), await apiProcess(server.url)];
    const jsm = await jetstreamManager(await connection(server.url));
    for await (const consumer of jsm.consumers.list('drawdown_holds_log'))
      await jsm.consumers.delete('drawdown_holds_log', consumer.name);
    await b.reserve({ ...account, customer: 'follow', amount: '100', key: 'all' });
    // a must see b's hold: 5 left (the allowance), so 6 is refused and 5 admitted.
    await expect(a.reserve({ ...account, customer: 'follow', amount: '6', key: 'six' })).rejects.toBeInstanceOf(
      InsufficientCreditsError,
    );
    expect((await a.reserve({ ...account, customer: 'follow', amount: '5', key: 'five' })).created).toBe(true);
    expect((await b.list('follow', 'credits')).held).toBe('105');
  });

  it('reads racing appends never leave a process behind its log: every read and reserve of the other process answers', async () => {
    // A read asks the shard's last sequence; the follower may apply a newer message before that answer arrives.
    // Taking the older answer for a rewound log once left the shard waiting for a message already applied (503).
    const server = await natsServer('holds-log-race');
    const [a, b] = [await apiProcess(server.url), await apiProcess(server.url)];
    let writing = true;
    const readers = Array.from({ length: 64 }, async () => {
      let reads = 0;
      while (writing) {
        await b.list('race', 'credits');
        reads++;
      }
      return reads;
    });
    for (let i = 0; i < 40; i++) await a.reserve({ ...account, customer: 'race', amount: '1', key: `race-${i}` });
    writing = false;
    expect((await Promise.all(readers)).every((reads) => reads > 0)).toBe(true);
    expect((await b.reserve({ ...account, customer: 'race', amount: '65', key: 'rest' })).created).toBe(true);
    await expect(b.reserve({ ...account, customer: 'race', amount: '1', key: 'over' })).rejects.toBeInstanceOf(
      InsufficientCreditsError,
    );
    expect((await a.list('race', 'credits')).held).toBe('105');
  });

  it('re-appends an account whose open hold was last written over half the window ago', async () => {
    const server = await natsServer('holds-log-refresh');
    let now = Date.now();
    // The smallest window (1 min): refresh rounds every 7.5 s; the store's clock is moved past half of it.
    const store = await apiProcess(server.url, { logWindowMs: 60_000, closedRetentionMs: 0, clock: () => now });
    const held = await store.reserve({ ...account, customer: 'long', amount: '7', key: 'long-job', ttlMs: 600_000 });
    const expired = await store.reserve({ ...account, customer: 'short', amount: '1', key: 'short', ttlMs: 1_000 });
    const nc = await connection(server.url);
    const jsm = await jetstreamManager(nc);
    const messages = async () => (await jsm.streams.info('drawdown_holds_log')).state.messages;
    expect(await messages()).toBe(2);
    now += 31_000;
    for (let i = 0; i < 100 && (await messages()) < 3; i++) await new Promise((r) => setTimeout(r, 100));
    const info = await jsm.streams.info('drawdown_holds_log');
    expect(info.state.messages).toBe(3);
    // Only the account with a hold still open; its post-image unchanged.
    const last = (await jsm.streams.getMessage('drawdown_holds_log', { seq: info.state.last_seq }))!.string();
    expect(last.split('\t')[0]).toBe(held.hold.id.split('.').slice(0, 2).join('.'));
    expect(JSON.parse(last.split('\t')[1]!).holds.map((h: { a: string }) => h.a)).toEqual(['7']);
    expect(store.stats().refreshed).toBe(1);
    expect((await store.list('short', 'credits')).holds).toEqual([]);
    expect(expired.hold.status).toBe('open');
  });

  it('splits a batch that one message cannot carry; every operation is answered once', async () => {
    const server = await natsServer('holds-log-split', 32 * 1024);
    const options = { logShards: 1, openHoldsMax: 10, closedHoldsMax: 16 };
    const store = await apiProcess(server.url, options);
    const metadata = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`key${i}`, 'v'.repeat(20)]));
    const made = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        store.reserve({ ...account, customer: `split-${i}`, amount: '2', key: 'job', metadata }),
      ),
    );
    expect(made.every((r) => r.created)).toBe(true);
    // ~400 B a line: 300 lines need at least four messages of 32 KiB, and a batch of over 80 accounts a split.
    const nc = await connection(server.url);
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info('drawdown_holds_log');
    expect(info.state.messages).toBe(store.stats().writes);
    expect(info.state.messages).toBeGreaterThanOrEqual(4);
    let lines = 0;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const message = (await jsm.streams.getMessage('drawdown_holds_log', { seq }))!;
      expect(message.data.length).toBeLessThanOrEqual(32 * 1024);
      lines += message.string().split('\n').length;
    }
    expect(lines).toBe(300);
    const other = await apiProcess(server.url, options);
    for (const i of [0, 150, 299]) expect((await other.list(`split-${i}`, 'credits')).held).toBe('2');
  });

  it('engine auto: the log on a new installation, the KV bucket where one holds the holds already', async () => {
    const fresh = await natsServer('holds-log-auto');
    const auto = await HoldStore.open(await connection(fresh.url), { engine: 'auto' });
    cleanups.push(() => auto.shutdown());
    expect(auto.settings.engine).toBe('log');

    const older = await natsServer('holds-log-auto-kv');
    const kv = await HoldStore.open(await connection(older.url), { engine: 'kv' });
    cleanups.push(() => kv.shutdown());
    const made = await kv.reserve({ ...account, customer: 'before', amount: '2', key: 'k' });
    const later = await HoldStore.open(await connection(older.url), { engine: 'auto' });
    cleanups.push(() => later.shutdown());
    expect(later.settings.engine).toBe('kv');
    expect((await later.get(made.hold.id)).status).toBe('open');
  });

  it('moving from the KV engine: open holds and closed ones in the values come along, imported once', async () => {
    const server = await natsServer('holds-log-import');
    const kv = await HoldStore.open(await connection(server.url), { engine: 'kv' });
    const open: ReserveResult[] = [];
    for (let i = 0; i < 30; i++)
      open.push(await kv.reserve({ ...account, customer: `move-${i % 5}`, amount: '4', key: `job-${i}` }));
    const released = await kv.reserve({ ...account, customer: 'move-0', amount: '1', key: 'done' });
    await kv.release(released.hold.id);
    await kv.shutdown();

    // Two processes start on the log at once: each shard is imported by one of them.
    const [a, b] = await Promise.all([apiProcess(server.url), apiProcess(server.url)]);
    expect(a.stats().imported + b.stats().imported).toBe(5);
    const jsm = await jetstreamManager(await connection(server.url));
    const info = await jsm.streams.info('drawdown_holds_log');
    const lines: string[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++)
      lines.push(...(await jsm.streams.getMessage('drawdown_holds_log', { seq }))!.string().split('\n'));
    expect(lines.map((line) => line.split('\t')[0]).sort()).toEqual(
      Array.from({ length: 5 }, (_, c) => accountKey({ customer: `move-${c}`, unit: 'credits' })).sort(),
    );
    for (let c = 0; c < 5; c++) expect((await b.list(`move-${c}`, 'credits')).held).toBe('24');
    // 100 + 5 − 24 = 81 left for move-1: a hold of 82 is refused, as the KV engine would have.
    await expect(a.reserve({ ...account, customer: 'move-1', amount: '82', key: 'big' })).rejects.toBeInstanceOf(
      InsufficientCreditsError,
    );
    const again = await b.reserve({ ...account, customer: 'move-0', amount: '1', key: 'done' });
    expect([again.created, again.hold.status]).toEqual([false, 'released']);
    expect(await a.release(open[7]!.hold.id)).toMatchObject({ changed: true });
    expect((await b.list('move-2', 'credits')).held).toBe('20');
  });

  it('a shard purged by an operator takes appends again; a stream made for another shard count is refused', async () => {
    const server = await natsServer('holds-log-purged');
    const store = await apiProcess(server.url);
    const first = await store.reserve({ ...account, customer: 'purged', amount: '1', key: 'one' });
    const nc = await connection(server.url);
    const jsm = await jetstreamManager(nc);
    const shard = shardOf(accountKey({ customer: 'purged', unit: 'credits' }), 16);
    await jsm.streams.purge('drawdown_holds_log', { filter: `drawdown_holds.log.${shard}` });
    // This process still knows the hold (what the operator removed was its record on disk).
    const second = await store.reserve({ ...account, customer: 'purged', amount: '1', key: 'two' });
    expect(second.created).toBe(true);
    expect((await store.list('purged', 'credits')).holds.map((h) => h.id)).toEqual([first.hold.id, second.hold.id]);
    expect(store.stats().conflicts).toBe(1);

    await expect(apiProcess(server.url, { logShards: 8 })).rejects.toThrow(/made for 16 shards, not logShards 8/);
  });
});
