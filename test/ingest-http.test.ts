/**
 * The gateway's HTTP contract against a real nats-server: refusals carry a
 * stable code and change nothing in the stream; a full stream answers 429 and
 * an unreachable one 503, both with Retry-After, and never drop a batch.
 */
import { request } from 'node:http';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { packr, postEvents, startNats, streamState, tempDir, testConfig } from './harness.js';

const streamMessagesMax = 6;

describe('ingest gateway over HTTP', () => {
  const dir = tempDir('ingest-http');
  let nats: NatsServerProcess;
  let gateway: Running;
  let base: string;
  const event = (i: number) => ({
    id: `e${i}`,
    customer: 'acme',
    meter: 'gpt-4o.input_tokens',
    quantity: 1,
    timestamp: Date.now(),
  });

  const storedBatches = async (): Promise<number> => (await streamState(nats.url)).messages;

  async function raw(
    body: Buffer | string,
    headers: Record<string, string>,
    path = '/v1/events',
    method = 'POST',
  ): Promise<{ status: number; headers: Headers; body: any }> {
    const response = await fetch(base + path, { method, headers, ...(method === 'GET' ? {} : { body }) });
    return { status: response.status, headers: response.headers, body: await response.json() };
  }

  beforeAll(async () => {
    nats = await startNats(dir.path);
    // No rater: the stream only fills, so its limit can be reached on purpose.
    gateway = await startDrawdown(
      testConfig({
        natsUrl: nats.url,
        bodyBytesMax: 4096,
        batchEventsMax: 20,
        streamMaxMessages: streamMessagesMax,
        publishTimeoutMs: 1000,
      }),
      {
        ingest: true,
        rater: false,
        settlement: false,
      },
    );
    base = gateway.url!;
  });

  afterAll(async () => {
    await gateway?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('refuses bodies it cannot take with a stable code, and publishes nothing', async () => {
    const before = await storedBatches();
    const cases: [Buffer | string, Record<string, string>, number, string][] = [
      [packr.pack([event(1)]), { 'content-type': 'text/plain' }, 415, 'unsupported_media_type'],
      [Buffer.from([0x93, 0x01]), { 'content-type': 'application/msgpack' }, 400, 'body_malformed'],
      [Buffer.from('[{"id":'), { 'content-type': 'application/json' }, 400, 'body_malformed'],
      [packr.pack({ events: [event(1)] }), { 'content-type': 'application/msgpack' }, 400, 'body_not_array'],
      [
        packr.pack(Array.from({ length: 21 }, (_, i) => event(i))),
        { 'content-type': 'application/msgpack' },
        413,
        'batch_too_many_events',
      ],
      [
        packr.pack([event(1)]),
        { 'content-type': 'application/msgpack', 'idempotency-key': 'has space' },
        400,
        'idempotency_key_invalid',
      ],
      [Buffer.alloc(5000, 0x20), { 'content-type': 'application/json' }, 413, 'body_too_large'],
    ];
    for (const [body, headers, status, code] of cases) {
      const response = await raw(body, headers);
      expect({ status: response.status, code: response.body.code }, `${code}`).toEqual({ status, code });
      expect(response.headers.get('content-type')).toBe('application/problem+json');
    }
    expect(await storedBatches()).toBe(before);
  });

  it('stops reading a body without Content-Length as soon as it passes the limit', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        `${base}/v1/events`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (res) => {
          res.resume();
          resolve(res.statusCode!);
        },
      );
      req.on('error', reject);
      // 64 KiB in 1 KiB chunks, far past the 4 KiB limit; the answer comes before the end.
      for (let i = 0; i < 64; i++) req.write(Buffer.alloc(1024, 0x20));
    });
    expect(status).toBe(413);
  });

  it('answers 404 for unknown routes and 405 for wrong methods, and serves health', async () => {
    expect((await raw('', {}, '/v1/nothing', 'GET')).status).toBe(404);
    expect((await raw('', {}, '/v1/events', 'GET')).body.code).toBe('method_not_allowed');
    expect((await raw('', {}, '/healthz', 'GET')).status).toBe(200);
    expect((await raw('', {}, '/readyz', 'GET')).body).toEqual({ status: 'ready', checks: { nats: true } });
    const metrics = await fetch(`${base}/metrics`);
    expect(await metrics.text()).toContain('drawdown_ingest_request_duration_seconds_bucket');
  });

  it('answers 429 with Retry-After when the stream is full, and keeps every stored batch', async () => {
    const before = await storedBatches();
    const statuses: number[] = [];
    for (let i = 0; i < streamMessagesMax - before + 2; i++) {
      const response = await postEvents(base, [event(i)]);
      statuses.push(response.status);
      if (response.status === 429) {
        expect(response.body.code).toBe('stream_full');
      }
    }
    expect(statuses.filter((s) => s === 202)).toHaveLength(streamMessagesMax - before);
    expect(statuses.slice(-2)).toEqual([429, 429]);
    expect(await storedBatches()).toBe(streamMessagesMax);
    const full = await fetch(`${base}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/msgpack' },
      body: packr.pack([event(99)]),
    });
    expect(full.headers.get('retry-after')).toMatch(/^\d+$/);
  });

  it('answers 503 with Retry-After while nats-server is down, and accepts again once it is back', async () => {
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.purge('DRAWDOWN_EVENTS');
    await nc.close();
    await nats.kill();
    const down = await postEvents(base, [event(1)]);
    expect(down.status).toBe(503);
    expect(down.body.code).toBe('stream_unavailable');
    expect((await raw('', {}, '/readyz', 'GET')).status).toBe(503);
    await nats.restart();
    let status = 0;
    for (let attempt = 0; attempt < 50 && status !== 202; attempt++) {
      status = (await postEvents(base, [event(2)], { key: 'after-restart' })).status;
      if (status !== 202) await new Promise((r) => setTimeout(r, 200));
    }
    expect(status).toBe(202);
  });
});
