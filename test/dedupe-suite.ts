/**
 * Duplicate event ids (SPEC §3): an event whose (customer, id) was already
 * counted is dropped — in a retried batch under a new key or none, inside one
 * batch, after a rater crash between writing the ids and the usage, and
 * after restarts — within the documented window, and only there.
 * Real nats-server, real ClickHouse (server or chDB), real rater processes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Decimal } from 'decimal.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { dedupeIdsColumns } from '../shared/clickhouse/schema.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import { flushPayload } from '../rater/flush.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { dropExpiredIds, highestIdsLabel, idsPayload, readRecentIds } from '../rater/dedupe/id-log.js';
import {
  crashed,
  openTestStore,
  postEvents,
  spawnDrawdown,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type Backend,
  type ChildService,
  type ClickHouseTarget,
} from './harness.js';
import type { Store } from '../shared/clickhouse/store.js';

interface TestEvent {
  id: string;
  customer: string;
  meter: string;
  quantity: string;
  timestamp: number;
}

export function defineDedupe(backend: Backend): void {
  describe(`duplicate event ids (${backend})`, () => {
    const dir = tempDir(`dedupe-${backend}`);
    let nats: NatsServerProcess;
    let clickhouse: ClickHouseTarget;
    let ingest: Running;
    let base: string;
    /** What ClickHouse must hold: every distinct (customer, id) once, plus what the window lets through again. */
    const expected = new Map<string, { quantity: Decimal; events: number }>();
    const atMs = Date.now() - 10 * 60_000;
    let keyNo = 0;

    const event = (customer: string, id: string, quantity: string): TestEvent => ({
      id,
      customer,
      meter: 'gpt-4o.input_tokens',
      quantity,
      timestamp: atMs,
    });
    const count = (events: readonly TestEvent[]): void => {
      for (const e of events) {
        const key = `${e.customer}|gpt-4o.input_tokens|{}`;
        const total = expected.get(key) ?? { quantity: new Decimal(0), events: 0 };
        expected.set(key, { quantity: total.quantity.plus(e.quantity), events: total.events + 1 });
      }
    };
    const send = async (
      events: readonly TestEvent[],
      options: { key?: boolean; json?: boolean } = {},
    ): Promise<void> => {
      const response = await postEvents(base, [...events], {
        ...(options.key === false ? {} : { key: `batch-${keyNo++}` }),
        json: options.json === true,
      });
      expect(response.status, JSON.stringify(response.body)).toBe(202);
      expect(response.body.accepted).toBe(events.length);
    };
    const raterEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
      DRAWDOWN_NATS_URL: nats.url,
      DRAWDOWN_CLICKHOUSE_URL: clickhouse.url,
      DRAWDOWN_PARTITIONS: '2',
      DRAWDOWN_FLUSH_INTERVAL_MS: '50',
      DRAWDOWN_FETCH_MESSAGES_MAX: '2',
      ...extra,
    });
    /** Runs a rater until the stream is empty, then stops it (chDB allows one process at a time). */
    const drainWith = async (rater: ChildService): Promise<string> => {
      try {
        await waitForStreamDrained(nats.url);
      } finally {
        await rater.stop();
      }
      return rater.output();
    };
    const withStore = async <T>(use: (store: Store) => Promise<T>): Promise<T> => {
      const store = await openTestStore(clickhouse.url);
      try {
        return await use(store);
      } finally {
        await store.close();
      }
    };
    const expectTotals = async (): Promise<void> => {
      const totals = await withStore(usageTotals);
      expect(totals).toEqual(new Map([...expected].map(([k, v]) => [k, `${v.quantity.toFixed()}|${v.events}`])));
    };

    beforeAll(async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      ingest = await startDrawdown(testConfig({ natsUrl: nats.url }), {
        ingest: true,
        rater: false,
        settlement: false,
      });
      base = ingest.url!;
    });

    afterAll(async () => {
      await ingest?.stop();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    it('counts each (customer, id) once: repeats under a new key, without a key, as JSON and inside one batch are dropped', async () => {
      // Given 40 events over 8 customers (so over both partitions),
      const events = Array.from({ length: 40 }, (_, i) => event(`cust-${i % 8}`, `evt-${i}`, `${i}.${i % 7}`));
      count(events);
      // and the same id under another customer, which is a different event,
      const otherCustomer = event('someone-else', 'evt-0', '1000');
      count([otherCustomer]);
      // when the batch arrives, then again under a new key, without a key and as JSON,
      await send(events);
      await send(events);
      await send(events, { key: false });
      await send(events.slice(0, 10), { json: true });
      // and a batch repeats one new id inside itself,
      const once = event('cust-3', 'evt-in-batch', '7.5');
      count([once]);
      await send([once, otherCustomer, { ...once, quantity: '999' }]);
      // then ClickHouse holds every distinct event exactly once.
      const output = await drainWith(spawnDrawdown('rater', raterEnv()));
      expect(output).not.toMatch(/"level":(50|60)/);
      await expectTotals();
    });

    it('keeps dropping repeats after a rater crash between writing the ids and the usage, and after restarts', async () => {
      // Given new events, and a rater that dies right after writing a flush's ids, before its usage rows,
      const fresh = Array.from({ length: 30 }, (_, i) => event(`cust-${i % 5}`, `crash-${i}`, `${i + 1}`));
      count(fresh);
      await send(fresh.slice(0, 15));
      await send(fresh.slice(15));
      const doomed = spawnDrawdown('rater', raterEnv({ DRAWDOWN_FAULT: 'after-ids-insert:1' }));
      const exit = await crashed(doomed);
      expect(exit.signal, doomed.output()).toBe('SIGKILL');
      // when the batches are retried under new keys while the rater is down, and a rater then drains the stream,
      await send(fresh);
      await drainWith(spawnDrawdown('rater', raterEnv()));
      // then everything is counted once: the orphaned ids did not hide the events they belonged to;
      await expectTotals();
      // and a restarted rater, rebuilt from ClickHouse, still drops every earlier id.
      await send(fresh);
      await send(Array.from({ length: 40 }, (_, i) => event(`cust-${i % 8}`, `evt-${i}`, '5')));
      await drainWith(spawnDrawdown('rater', raterEnv()));
      await expectTotals();
    });

    it('remembers at least DRAWDOWN_DEDUPE_IDS ids per partition, and forgets ids past twice that', async () => {
      // Given a rater that remembers at least 5 ids per partition, and one customer (so one partition),
      const rater = spawnDrawdown('rater', raterEnv({ DRAWDOWN_DEDUPE_IDS: '5' }));
      const first = event('windowed', 'w-0', '1');
      const later = Array.from({ length: 20 }, (_, i) => event('windowed', `w-${i + 1}`, '1'));
      count([first, ...later]);
      await send([first]);
      await send(later);
      // when the newest id repeats (inside the window) and the oldest repeats (20 ids later, past 2 × 5),
      await send([later[19]!]);
      await send([first]);
      count([first]);
      await drainWith(rater);
      // then the newest repeat is dropped and the oldest is counted again, as documented.
      await expectTotals();
    });

    it('reads remembered ids of committed flushes only, up to the watermark, and drops whole days past retention', async () => {
      await withStore(async (store) => {
        const nowSec = Math.floor(Date.now() / 1000);
        const ids = (n: number, seed: number): Uint32Array =>
          Uint32Array.from({ length: 3 * n }, (_, i) => ((seed * 7919 + i * 104_729) | 1) >>> 0);
        const commit = (label: number): Promise<void> =>
          store.insert(
            'usage_minute',
            usageMinuteFlushColumns,
            flushPayload([['c-ids', 'm', '{}', nowSec - (nowSec % 60), 1n, 1]], 7, label, nowSec, String(label)),
          );
        // Given partition 7's ids for committed flushes 10 and 20, a flush 30 above the watermark, a flush 5 from 10
        // days ago,
        await store.insert('dedupe_ids', dedupeIdsColumns, idsPayload([ids(3, 1)], 7, 10, nowSec));
        await store.insert('dedupe_ids', dedupeIdsColumns, idsPayload([ids(2, 2), ids(2, 3)], 7, 20, nowSec));
        await store.insert('dedupe_ids', dedupeIdsColumns, idsPayload([ids(4, 4)], 7, 30, nowSec));
        await store.insert(
          'dedupe_ids',
          dedupeIdsColumns,
          encodeTsv([
            ['7', '5', '0', tsvDateTime(nowSec - 10 * 86_400), '1', Buffer.from(ids(1, 5).buffer).toString('base64')],
          ]),
        );
        // and ids under label 15 from a flush that died before its usage insert (no usage row carries 15),
        await store.insert('dedupe_ids', dedupeIdsColumns, idsPayload([ids(5, 6)], 7, 15, nowSec));
        for (const label of [5, 10, 20]) await commit(label);
        // when the last 4 ids up to watermark 20 are read, then flush 20's four ids come back, oldest first;
        const recent = await readRecentIds(store, 7, 20, 4);
        expect(recent.map((c) => [...c])).toEqual([[...ids(2, 2), ...ids(2, 3)]]);
        // at least 6 ids reach back to flush 10, and neither the dead flush 15 nor flush 30 ever appears;
        expect((await readRecentIds(store, 7, 20, 6)).map((c) => c.length / 3)).toEqual([3, 4]);
        expect((await readRecentIds(store, 7, 20, 100)).map((c) => c.length / 3)).toEqual([1, 3, 4]);
        // a restarted rater labels its next flush above every label ids were written under, the dead one's included;
        expect(await highestIdsLabel(store, 7)).toBe(30);
        // and retention drops the 10-day-old day and keeps today's.
        expect(await dropExpiredIds(store, 7, nowSec)).toBe(1);
        expect((await readRecentIds(store, 7, 10, 100)).map((c) => c.length / 3)).toEqual([3]);
        expect((await readRecentIds(store, 7, 5, 100)).length).toBe(0);
      });
    });
  });
}
