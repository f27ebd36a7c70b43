/**
 * One Idempotency-Key, one batch (issue 16): whatever partitions a body's
 * customers map to, a key already used for one body never stores any part of
 * another, and a retry of the same body counts once. Real nats-server and
 * gateway; the stream is inspected directly, since no rater drains it.
 */
import { JetStreamApiError } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { classifyPublishError } from '../ingest/publisher.js';
import { partitionOfCustomer } from '../shared/events/partition.js';
import { postEvents, startNats, streamState, tempDir, testConfig } from './harness.js';

const partitions = 4;

/** Customers `k0`, `k1`, … picked so each named partition gets one. */
function customerIn(partition: number): string {
  for (let i = 0; ; i++) if (partitionOfCustomer(`k${i}`, partitions) === partition) return `k${i}`;
}

// One instant for every body, so a body built twice is the same bytes.
const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 60_000;
const events = (customers: string[], tag: string): unknown[] =>
  customers.map((customer, i) => ({
    id: `${tag}-${i}`,
    customer,
    meter: 'gpt-4o.input_tokens',
    quantity: 1 + i,
    timestamp: atMs,
  }));

describe('an Idempotency-Key stands for one batch', () => {
  const dir = tempDir('ingest-idempotency');
  let nats: NatsServerProcess;
  let gateway: Running;
  const stored = async (): Promise<number> => (await streamState(nats.url)).messages;

  beforeAll(async () => {
    nats = await startNats(dir.path);
    gateway = await startDrawdown(testConfig({ natsUrl: nats.url, partitions }), {
      ingest: true,
      rater: false,
      settlement: false,
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('given a key used for a body on partitions 0 and 1, then a body on partitions 2 and 3 under it is refused with 409 and stores nothing, and the first body retried is a duplicate', async () => {
    const before = await stored();
    const first = await postEvents(gateway.url!, events([customerIn(0), customerIn(1)], 'a'), { key: 'one-key' });
    expect(first.status).toBe(202);
    expect(first.body).toMatchObject({ accepted: 2, duplicate: false, parts: 2 });
    expect(await stored()).toBe(before + 2);

    const other = await postEvents(gateway.url!, events([customerIn(2), customerIn(3)], 'b'), { key: 'one-key' });
    expect(other.status).toBe(409);
    expect(other.body.code).toBe('idempotency_key_reused');
    expect(await stored()).toBe(before + 2);

    // The same body again, and a body overlapping the first's partitions: still one batch.
    const retry = await postEvents(gateway.url!, events([customerIn(0), customerIn(1)], 'a'), { key: 'one-key' });
    expect(retry.status).toBe(202);
    expect(retry.body).toMatchObject({ accepted: 2, duplicate: true });
    const overlapping = await postEvents(gateway.url!, events([customerIn(0), customerIn(2)], 'c'), { key: 'one-key' });
    expect(overlapping.status).toBe(409);
    expect(await stored()).toBe(before + 2);
  });

  it('given the same key sent at once with two different bodies, many times over, then exactly one body is stored per key and the other is refused', async () => {
    for (let round = 0; round < 10; round++) {
      const before = await stored();
      const key = `race-${round}`;
      const [x, y] = await Promise.all([
        postEvents(gateway.url!, events([customerIn(0), customerIn(1)], `x${round}`), { key }),
        postEvents(gateway.url!, events([customerIn(2), customerIn(3), customerIn(1)], `y${round}`), { key }),
      ]);
      expect([x.status, y.status].sort()).toEqual([202, 409]);
      const winner = x.status === 202 ? x : y;
      expect(await stored()).toBe(before + winner.body.parts);
    }
  });

  it('given a batch without a key, then it is stored each time it is sent (event-id dedupe in the rater is what protects it)', async () => {
    const before = await stored();
    for (let i = 0; i < 2; i++)
      expect((await postEvents(gateway.url!, events([customerIn(0)], 'nokey'))).status).toBe(202);
    expect(await stored()).toBe(before + 2);
  });
});

describe('publish errors', () => {
  it('JetStream\'s "insufficient resources" while it recovers is 503 stream_unavailable, not 429 stream_full; a full stream is still 429', () => {
    const recovering = classifyPublishError(
      new JetStreamApiError({ code: 503, err_code: 10023, description: 'insufficient resources' }),
    );
    expect([recovering.status, recovering.code]).toEqual([503, 'stream_unavailable']);
    expect(recovering.retryAfterSeconds).toBeGreaterThan(0);
    const full = classifyPublishError(
      new JetStreamApiError({ code: 503, err_code: 10077, description: 'maximum messages exceeded' }),
    );
    expect([full.status, full.code]).toEqual([429, 'stream_full']);
  });
});
