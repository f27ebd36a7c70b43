/**
 * The rater decides what was counted by the record its flushes keep, never by
 * sequence numbers (docs/exactly-once.md §2). Each test lays out, with a real
 * nats-server and chDB, the state a lost delivery or a lost ack leaves
 * behind, then starts a rater and checks what it counts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { startDrawdown, streamSettings, type Running } from '../deploy/processes.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import {
  ensureStream,
  lowestPartitionSequence,
  partitionSubject,
  recreatePartitionConsumer,
} from '../shared/nats/stream.js';
import { flushPayload } from '../rater/flush.js';
import type { AggregateRow } from '../rater/aggregate.js';
import {
  openTestStore,
  postEvents,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
} from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const meter = 'gpt-4o.input_tokens';
const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;

/** Batch b: one event of `quantity` for customer `r<b>`, so totals show which batches were counted. */
function batch(b: number, quantity: number): unknown[] {
  return [{ id: `rec-${b}`, customer: `r${b}`, meter, quantity, timestamp: atMs }];
}

async function setUp(
  name: string,
): Promise<{ natsUrl: string; chdbUrl: string; config: ReturnType<typeof testConfig> }> {
  const dir = tempDir(name);
  cleanups.push(dir.remove);
  const nats = await startNats(dir.path);
  cleanups.push(() => nats.stop());
  const chdbUrl = `chdb:${dir.path}/chdb`;
  const config = testConfig({ natsUrl: nats.url, clickhouseUrl: chdbUrl, partitions: 1 });
  return { natsUrl: nats.url, chdbUrl, config };
}

async function start(
  config: ReturnType<typeof testConfig>,
  parts: { ingest: boolean; rater: boolean },
): Promise<Running> {
  const running = await startDrawdown(config, { ...parts, settlement: false });
  cleanups.push(() => running.stop());
  return running;
}

/** Batches 1-3 (customers r1-r3, 10/20/30) stored through a gateway, no rater yet. */
async function storeThreeBatches(config: ReturnType<typeof testConfig>): Promise<void> {
  const gateway = await start(config, { ingest: true, rater: false });
  for (const b of [1, 2, 3])
    expect((await postEvents(gateway.url!, batch(b, b * 10), { key: `rec-${b}` })).status).toBe(202);
  await gateway.stop();
}

/** One flush as a rater would have written it: rows of the given customers at `atMs`, its label and record. */
async function writeFlushRows(chdbUrl: string, customers: number[], label: number, messageSeqs: string): Promise<void> {
  const store = await openTestStore(chdbUrl);
  await ensureSchema(store);
  const minuteSec = atMs / 1000;
  const rows = customers.map((b): AggregateRow => [
    `r${b}`,
    meter,
    '{}',
    minuteSec,
    BigInt(b * 10) * 1_000_000_000n,
    1,
  ]);
  await store.insert('usage_minute', usageMinuteFlushColumns, flushPayload(rows, 0, label, minuteSec, messageSeqs));
  await store.close();
}

/** Starts a rater, lets it drain the stream, and returns what ClickHouse holds (and its watermark). */
async function rateAll(
  config: ReturnType<typeof testConfig>,
  natsUrl: string,
  chdbUrl: string,
): Promise<{ totals: Map<string, string>; watermark: number }> {
  const rater = await start(config, { ingest: false, rater: true });
  await waitForStreamDrained(natsUrl);
  await rater.stop();
  const check = await openTestStore(chdbUrl);
  try {
    const [[watermark]] = (await check.query('SELECT max(flush_seq) FROM usage_minute')) as [[string]];
    return { totals: await usageTotals(check), watermark: Number(watermark) };
  } finally {
    await check.close();
  }
}

/** Each of batches 1-3 counted exactly once. */
const eachOnce = new Map([
  [`r1|${meter}|{}`, '10|1'],
  [`r2|${meter}|{}`, '20|1'],
  [`r3|${meter}|{}`, '30|1'],
]);

describe('the record of counted messages decides, not sequence numbers', () => {
  it('given batches 1 and 3 never counted and batch 2 counted with its ack lost, all below the watermark, then 1 and 3 are counted and 2 is not counted again', async () => {
    const { natsUrl, chdbUrl, config } = await setUp('record-gap');
    await storeThreeBatches(config);
    // A flush labelled 3 (the watermark covers sequences 1-3) that counted only sequence 2.
    await writeFlushRows(chdbUrl, [2], 3, '2');
    const { totals, watermark } = await rateAll(config, natsUrl, chdbUrl);
    expect(totals).toEqual(eachOnce);
    // The late flush got a label of its own above the watermark, so settlement takes it as new usage.
    expect(watermark).toBeGreaterThan(3);
  });

  it('given flushes written before flushes kept a record, then what their watermark covers is taken as counted, as it was then, and newer batches are counted', async () => {
    const { natsUrl, chdbUrl, config } = await setUp('record-legacy');
    await storeThreeBatches(config);
    // The old rater counted 1 and 2 (one flush labelled 2, no record) and died before acking them.
    await writeFlushRows(chdbUrl, [1, 2], 2, '');
    expect((await rateAll(config, natsUrl, chdbUrl)).totals).toEqual(eachOnce);
  });
});

describe('partition consumers on a real nats-server', () => {
  it("knows each partition's lowest sequence still in the stream, and a recreated consumer delivers every unacked message again, purging none", async () => {
    const { natsUrl, config } = await setUp('record-stream');
    const settings = { ...streamSettings(config), partitions: 2 };
    const nc = await connect({ servers: natsUrl });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm, settings);
    const js = jsm.jetstream();
    for (const p of [0, 1, 0, 0]) await js.publish(partitionSubject(settings, p), new Uint8Array([p]));
    // Sequences: 1 → p0, 2 → p1, 3 → p0, 4 → p0.
    expect(await lowestPartitionSequence(jsm, settings, 0)).toBe(1);
    expect(await lowestPartitionSequence(jsm, settings, 1)).toBe(2);

    const limits = { ackWaitMs: 60_000, maxAckPending: 100 };
    let consumer = await js.consumers.get(settings.name, await recreatePartitionConsumer(jsm, settings, 0, limits));
    const first: number[] = [];
    for await (const m of await consumer.fetch({ max_messages: 3, expires: 2_000 })) {
      first.push(m.seq);
      if (m.seq === 1) await m.ackAck();
      if (first.length === 3) break;
    }
    expect(first).toEqual([1, 3, 4]);
    expect(await lowestPartitionSequence(jsm, settings, 0)).toBe(3);

    // 3 and 4 were delivered but never acked: a recreated consumer hands both over again at once.
    consumer = await js.consumers.get(settings.name, await recreatePartitionConsumer(jsm, settings, 0, limits));
    const again: number[] = [];
    for await (const m of await consumer.fetch({ max_messages: 2, expires: 2_000 })) {
      again.push(m.seq);
      await m.ackAck();
      if (again.length === 2) break;
    }
    expect(again).toEqual([3, 4]);
    expect(await lowestPartitionSequence(jsm, settings, 0)).toBeUndefined();
    expect(await lowestPartitionSequence(jsm, settings, 1)).toBe(2);
  });
});
