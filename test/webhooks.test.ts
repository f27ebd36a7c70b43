/**
 * Webhooks end to end (issue 15, docs/notices.md): endpoints registered
 * through the admin API, notices delivered to a real local HTTP receiver
 * (node:http) that answers, fails, times out and recovers; every delivery
 * verified with the `standardwebhooks` package (not drawdown's signer);
 * retries on a short schedule (the default spans 27.6 h); the delivery log;
 * an endpoint disabled after its schedule is spent with no success, with a
 * webhook.endpoint_disabled notice; manual redelivery after re-enabling.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { api, startNats, tempDir, testConfig } from './harness.js';

interface Received {
  headers: Record<string, string>;
  body: string;
  atMs: number;
}

type Behaviour = 'ok' | 'fail' | 'hang';

/** A receiver whose answer to each request is the next behaviour of its plan (then `after`, forever). */
class Receiver {
  readonly received: Received[] = [];
  #plan: Behaviour[] = [];
  #after: Behaviour = 'ok';
  #server: Server | undefined;
  url = '';

  async start(path: string): Promise<void> {
    this.#server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const headers = Object.fromEntries(
          Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : (v ?? '')]),
        );
        this.received.push({ headers, body: Buffer.concat(chunks).toString('utf8'), atMs: Date.now() });
        const behaviour = this.#plan.shift() ?? this.#after;
        if (behaviour === 'ok') res.writeHead(204).end();
        else if (behaviour === 'fail') res.writeHead(500, { 'content-type': 'text/plain' }).end('down');
        // hang: never answers; drawdown's timeout gives up on it.
      });
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}${path}`;
  }

  behave(plan: Behaviour[], after: Behaviour): void {
    this.#plan = plan;
    this.#after = after;
  }

  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise((resolve) => this.#server?.close(resolve));
  }
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('webhooks', () => {
  const dir = tempDir('webhooks');
  let nats: NatsServerProcess;
  let drawdown: Running;
  let base: string;
  const good = new Receiver();
  const flaky = new Receiver();
  const dead = new Receiver();
  const watcher = new Receiver();

  beforeAll(async () => {
    nats = await startNats(dir.path);
    await Promise.all([good.start('/hooks'), flaky.start('/flaky'), dead.start('/dead'), watcher.start('/watch')]);
    drawdown = await startDrawdown(
      testConfig({
        natsUrl: nats.url,
        clickhouseUrl: `chdb:${dir.path}/chdb`,
        // Short on purpose: four attempts over ~0.7 s; 300 ms per attempt.
        webhookRetryScheduleMs: '100,200,400',
        webhookTimeoutMs: 300,
      }),
      { ingest: false, rater: false, settlement: true },
    );
    base = drawdown.url!;
  });

  afterAll(async () => {
    await drawdown?.stop();
    await Promise.all([good.stop(), flaky.stop(), dead.stop(), watcher.stop()]);
    await nats?.stop();
    dir.remove();
  });

  const register = async (url: string, events: string[]) => {
    const created = await api(base, 'POST', '/v1/webhooks', { url, events, description: 'test' });
    expect(created.status).toBe(201);
    expect(created.body.secret).toMatch(/^whsec_/);
    return created.body as { id: string; secret: string };
  };
  const buy = (customer: string, key: string) =>
    api(base, 'POST', `/v1/customers/${customer}/purchases`, { package: 'credits-100' }, { 'idempotency-key': key });

  it('given an endpoint, when a purchase is posted, then its receiver gets purchase.posted within seconds, signed per Standard Webhooks', async () => {
    const endpoint = await register(good.url, ['purchase.posted']);
    const listed = await api(base, 'GET', '/v1/webhooks');
    expect(listed.body.endpoints.map((e: { id: string }) => e.id)).toContain(endpoint.id);
    expect(JSON.stringify(listed.body)).not.toContain(endpoint.secret);

    const sentMs = Date.now();
    expect((await buy('hook-a', 'hook-a-1')).status).toBe(201);
    const got = await until('the delivery', () => good.received[0]);
    // Verified by the standardwebhooks package: it checks the HMAC and that the timestamp is recent.
    const payload = new Webhook(endpoint.secret).verify(got.body, got.headers) as {
      id: string;
      type: string;
      data: Record<string, unknown>;
    };
    expect(payload).toMatchObject({
      type: 'purchase.posted',
      data: { customer: 'hook-a', unit: 'credits', amount: '100' },
    });
    expect(got.headers['webhook-id']).toBe(payload.id);
    expect(got.atMs - sentMs).toBeLessThan(10_000);
    // A signature under another secret is refused by the same library.
    expect(() =>
      new Webhook('whsec_' + Buffer.alloc(24, 1).toString('base64')).verify(got.body, got.headers),
    ).toThrow();

    // A retried purchase (same key) publishes the same notice id: the stream holds it once, so one delivery.
    expect((await buy('hook-a', 'hook-a-1')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(good.received.filter((r) => r.headers['webhook-id'] === payload.id)).toHaveLength(1);

    const log = await api(base, 'GET', `/v1/webhooks/${endpoint.id}/deliveries`);
    expect(log.status).toBe(200);
    expect(log.body.deliveries).toEqual([
      expect.objectContaining({ id: payload.id, status: 'delivered', attempts: 1, notice_type: 'purchase.posted' }),
    ]);
  });

  it('given a receiver that fails, then times out, then recovers, then the third attempt delivers, with the same webhook-id and a fresh signature each time', async () => {
    const endpoint = await register(flaky.url, ['purchase.posted']);
    flaky.behave(['fail', 'hang'], 'ok');
    expect((await buy('hook-b', 'hook-b-1')).status).toBe(201);
    const log = await until('delivered after retries', async () => {
      const answer = await api(base, 'GET', `/v1/webhooks/${endpoint.id}/deliveries`);
      const record = answer.body.deliveries[0];
      return record?.status === 'delivered' ? record : undefined;
    });
    expect(log).toMatchObject({ attempts: 3 });
    expect(log.last_attempts.map((a: { status_code: number | null }) => a.status_code)).toEqual([500, null, 204]);
    expect(log.last_attempts[1].error).toMatch(/no answer within 300 ms/);
    const ids = new Set(flaky.received.map((r) => r.headers['webhook-id']));
    expect(ids.size).toBe(1);
    for (const r of flaky.received) expect(() => new Webhook(endpoint.secret).verify(r.body, r.headers)).not.toThrow();
  });

  it('given a receiver that never answers 2xx, when a delivery spends its schedule, then it is failed, the endpoint is disabled with a webhook.endpoint_disabled notice, and after re-enabling a redelivery succeeds', async () => {
    const watching = await register(watcher.url, ['webhook.endpoint_disabled']);
    const endpoint = await register(dead.url, ['purchase.posted']);
    dead.behave([], 'fail');
    expect((await buy('hook-c', 'hook-c-1')).status).toBe(201);
    const failed = await until('the delivery failed', async () => {
      const answer = await api(base, 'GET', `/v1/webhooks/${endpoint.id}/deliveries?status=failed`);
      return answer.body.deliveries[0];
    });
    expect(failed.attempts).toBe(4);
    expect(dead.received).toHaveLength(4);
    const disabled = await until('the endpoint disabled', async () => {
      const answer = await api(base, 'GET', `/v1/webhooks/${endpoint.id}`);
      return answer.body.disabled ? answer.body : undefined;
    });
    expect(disabled.disabled_reason).toMatch(/no 2xx answer/);
    const notice = await until('the disabled notice', () => watcher.received[0]);
    expect(new Webhook(watching.secret).verify(notice.body, notice.headers)).toMatchObject({
      type: 'webhook.endpoint_disabled',
      data: { endpoint: endpoint.id, url: dead.url },
    });

    // Disabled: new notices are not sent to it; redelivery is refused until it is enabled again.
    expect((await buy('hook-c', 'hook-c-2')).status).toBe(201);
    const refused = await api(base, 'POST', `/v1/webhooks/${endpoint.id}/deliveries/${failed.id}/redeliver`);
    expect(refused.status).toBe(400);
    dead.behave([], 'ok');
    const enabled = await api(base, 'PATCH', `/v1/webhooks/${endpoint.id}`, { disabled: false });
    expect(enabled.body).toMatchObject({ disabled: false, disabled_at: null });
    const redelivered = await api(base, 'POST', `/v1/webhooks/${endpoint.id}/deliveries/${failed.id}/redeliver`);
    expect(redelivered.status).toBe(202);
    const delivered = await until('the redelivery', async () => {
      const answer = await api(base, 'GET', `/v1/webhooks/${endpoint.id}/deliveries?status=delivered`);
      return answer.body.deliveries.find((d: { id: string }) => d.id === failed.id);
    });
    expect(delivered).toMatchObject({ attempts: 5, redeliveries: 1 });
    expect(dead.received.filter((r) => r.headers['webhook-id'] === failed.id)).toHaveLength(5);

    const removed = await api(base, 'DELETE', `/v1/webhooks/${endpoint.id}`);
    expect(removed.body).toEqual({ id: endpoint.id, deleted: true });
    expect((await api(base, 'GET', `/v1/webhooks/${endpoint.id}`)).status).toBe(404);
    expect((await api(base, 'DELETE', `/v1/webhooks/${endpoint.id}`)).body).toEqual({
      id: endpoint.id,
      deleted: false,
    });
  });

  it('refuses bad endpoints, naming the field', async () => {
    const bad = await api(base, 'POST', '/v1/webhooks', { url: 'ftp://x', events: ['balance.lo'], evnts: [] });
    expect(bad.status).toBe(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['events[0]', 'evnts', 'url']);
  });
});
