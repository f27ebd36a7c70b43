/**
 * Poison published straight to the stream (as anything but the gateway
 * could): messages the rater cannot store go to the dead-letter stream with
 * their reason, are acked and counted in a metric, and the partition keeps
 * flowing. Valid messages in the same flush are counted exactly once, also
 * across a restart; a dead-lettered message's event ids are not remembered.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { batchHeaders } from '../shared/nats/stream.js';
import { deadLetterHeaders } from '../rater/dead-letter.js';
import {
  packr,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

const meter = 'gpt-4o.input_tokens';
const refusedCustomer = 'refused-by-clickhouse';

export function defineDeadLetter(backend: Backend): void {
  describe(`poison published straight to the stream (${backend})`, () => {
    const dir = tempDir(`dead-letter-${backend}`);
    let nats: NatsServerProcess | undefined;
    let clickhouse: ClickHouseTarget | undefined;
    let rater: Running | undefined;
    let nc: NatsConnection | undefined;

    afterAll(async () => {
      delete process.env.DRAWDOWN_FAULT_REFUSE_CUSTOMER;
      await rater?.stop();
      await nc?.close();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    const startRater = (more: Record<string, number> = {}): Promise<Running> =>
      startDrawdown(
        testConfig({
          natsUrl: nats!.url,
          clickhouseUrl: clickhouse!.url,
          // One partition, a slow flush and a big fetch: poison and valid messages share flushes.
          partitions: 1,
          flushIntervalMs: 2_000,
          fetchMessagesMax: 64,
          ...more,
        }),
        { ingest: false, rater: true, settlement: false },
      );

    const nowMs = Date.now();
    const event = (customer: string, id: string, quantity: string, timestamp: number = nowMs - 60_000) => ({
      id,
      customer,
      meter,
      quantity,
      timestamp,
    });
    const publish = async (js: JetStreamClient, body: Uint8Array, events: number, msgID: string): Promise<number> => {
      const h = natsHeaders();
      h.set(batchHeaders.events, String(events));
      const ack = await js.publish('drawdown.events.0', body, { headers: h, msgID });
      return ack.seq;
    };

    it('dead-letters what cannot be stored, counts the rest once, and a restart changes nothing', async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      process.env.DRAWDOWN_FAULT_REFUSE_CUSTOMER = refusedCustomer;
      // Given a rater (it creates the stream and the dead-letter stream), stopped again so everything below
      // is published before it fetches: the poison and the valid batches share its flushes.
      rater = await startRater();
      await rater.stop();
      rater = undefined;
      nc = await connect({ servers: nats.url });
      const js = jetstream(nc);
      const jsm = await jetstreamManager(nc);

      // When valid batches and poison are published straight to the stream, interleaved:
      const seqs: Record<string, number> = {};
      seqs.valid1 = await publish(js, packr.pack([event('good-1', 'a1', '10'), event('good-2', 'a2', '1.5')]), 2, 'v1');
      seqs.year2200 = await publish(js, packr.pack([event('good-1', 'p1', '7', Date.UTC(2200, 0, 1))]), 1, 'p1');
      seqs.tooOld = await publish(js, packr.pack([event('good-1', 'p2', '7', nowMs - 30 * 86_400_000)]), 1, 'p2');
      seqs.future = await publish(js, packr.pack([event('good-1', 'p3', '7', nowMs + 3_600_000)]), 1, 'p3');
      seqs.garbage = await publish(js, new Uint8Array([0xc1, 0xff, 0x00]), 1, 'p4');
      // A message ClickHouse refuses (the test fault), carrying a valid event of good-3 too: all of it is refused.
      seqs.refused = await publish(
        js,
        packr.pack([event(refusedCustomer, 'r1', '3'), event('good-3', 'shared-id', '100')]),
        2,
        'p5',
      );
      seqs.valid2 = await publish(js, packr.pack([event('good-1', 'a3', '5'), event('good-2', 'a4', '2.5')]), 2, 'v2');
      rater = await startRater();
      await waitForStreamDrained(nats.url);

      // Then the valid batches are counted once; nothing of the poison is.
      const expected = new Map([
        [`good-1|${meter}|{}`, '15|2'],
        [`good-2|${meter}|{}`, '4|2'],
      ]);
      expect(await usageTotals(rater.store!)).toEqual(expected);

      // And each poison message is in the dead-letter stream once, whole, with its reason.
      const dead = await jsm.streams.info('DRAWDOWN_EVENTS_DEAD');
      expect(dead.state.messages).toBe(5);
      const letters = new Map<number, { cause: string; reason: string; data: Uint8Array }>();
      for (let seq = dead.state.first_seq; seq <= dead.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage('DRAWDOWN_EVENTS_DEAD', { seq });
        letters.set(Number(m!.header.get(deadLetterHeaders.sourceSequence)), {
          cause: m!.header.get(deadLetterHeaders.cause),
          reason: m!.header.get(deadLetterHeaders.reason),
          data: m!.data,
        });
      }
      expect(letters.get(seqs.year2200!)?.cause).toBe('refused');
      expect(letters.get(seqs.year2200!)?.reason).toMatch(/timestamp/);
      expect(letters.get(seqs.tooOld!)?.reason).toMatch(/timestamp is older than the accepted lateness/);
      expect(letters.get(seqs.future!)?.reason).toMatch(/timestamp is further in the future/);
      expect(letters.get(seqs.garbage!)?.cause).toBe('refused');
      expect(letters.get(seqs.refused!)?.cause).toBe('insert_refused');
      expect(letters.get(seqs.refused!)?.reason).toMatch(/ClickHouse refused/);
      expect(Buffer.from(letters.get(seqs.garbage!)!.data)).toEqual(Buffer.from([0xc1, 0xff, 0x00]));
      const metrics = await rater.registry.metrics();
      expect(metrics).toMatch(/^drawdown_rater_dead_letters_total\{partition="0",cause="refused"\} 4$/m);
      expect(metrics).toMatch(/^drawdown_rater_dead_letters_total\{partition="0",cause="insert_refused"\} 1$/m);

      // When good-3's event id from the refused message comes again in a valid batch, it is counted: the
      // dead-lettered message's ids were never remembered.
      await publish(js, packr.pack([event('good-3', 'shared-id', '100')]), 1, 'v3');
      await waitForStreamDrained(nats.url);
      expected.set(`good-3|${meter}|{}`, '100|1');
      expect(await usageTotals(rater.store!)).toEqual(expected);

      // (The refused flush above made the loop resume, so the four refused messages were dead-lettered a second
      // time under the same ids, as after a crash between dead-lettering and the ack: stored and counted once.)
      // When the rater restarts and new poison and a valid batch arrive:
      await rater.stop();
      rater = await startRater();
      await publish(js, packr.pack([event('good-1', 'p6', '7', Date.UTC(2200, 0, 1))]), 1, 'p6');
      await publish(js, packr.pack([event('good-1', 'a5', '1')]), 1, 'v4');
      await waitForStreamDrained(nats.url);
      // Then totals move by the valid batch only, and only the new poison is dead-lettered.
      expected.set(`good-1|${meter}|{}`, '16|3');
      expect(await usageTotals(rater.store!)).toEqual(expected);
      expect((await jsm.streams.info('DRAWDOWN_EVENTS_DEAD')).state.messages).toBe(6);
      const ready = await fetch(`${rater.url}/readyz`);
      expect(ready.status).toBe(200);
    });

    // Only clickhouse-server can be stopped under a running rater (chDB lives in its process): defined there only.
    if (backend === 'server')
      it('given clickhouse-server stopped, the rater retries, turns unready after the bound, dead-letters nothing, and counts the batch once it is back', async () => {
        await rater!.stop();
        rater = await startRater({ storeAttemptsBeforeUnready: 3, retryDelayMaxMs: 200, flushIntervalMs: 100 });
        const js = jetstream(nc!);
        const jsm = await jetstreamManager(nc!);
        const deadBefore = (await jsm.streams.info('DRAWDOWN_EVENTS_DEAD')).state.messages;
        const before = await usageTotals(rater.store!);
        await clickhouse!.server!.stop();
        await publish(js, packr.pack([event('good-5', 'down-1', '4')]), 1, 'down-1');
        const readiness = async (): Promise<{ status: number; rater: unknown }> => {
          const response = await fetch(`${rater!.url}/readyz`);
          const body = (await response.json()) as { checks: { rater?: boolean } };
          return { status: response.status, rater: body.checks.rater };
        };
        let seen = await readiness();
        for (let i = 0; i < 100 && seen.rater !== false; i++) {
          await new Promise((r) => setTimeout(r, 100));
          seen = await readiness();
        }
        expect(seen).toEqual({ status: 503, rater: false });
        // Nothing was dropped: the batch waits in the stream, unacked.
        expect((await jsm.streams.info('DRAWDOWN_EVENTS')).state.messages).toBe(1);

        await clickhouse!.server!.restart();
        await waitForStreamDrained(nats!.url);
        const after = await usageTotals(rater.store!);
        expect(after.get(`good-5|${meter}|{}`)).toBe('4|1');
        expect(after.size).toBe(before.size + 1);
        for (let i = 0; i < 50 && (await readiness()).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
        expect(await readiness()).toEqual({ status: 200, rater: true });
        expect((await jsm.streams.info('DRAWDOWN_EVENTS_DEAD')).state.messages).toBe(deadBefore);
      });
  });
}
