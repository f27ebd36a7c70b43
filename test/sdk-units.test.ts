/**
 * The SDK's own rules, without a gateway: options checked at construction,
 * events checked at track(), retry timing, batch bodies, credit hold calls,
 * and what the SDK may import. Requests that do go out go to a port nothing
 * listens on, or — for hold calls — to a stand-in that answers as told.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { unpack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { freePort } from '../deploy/free-port.js';
import { arrayHeader } from '../sdk/src/buffer.js';
import { prepareEvent } from '../sdk/src/event.js';
import { canonicalAmount } from '../sdk/src/holds.js';
import { createClient, DrawdownSdkError, type ClientOptions } from '../sdk/src/index.js';
import { isRetryable, parseRetryAfterMs, retryDelayMs, type RetryInfo } from '../sdk/src/retry.js';
import { packr, repoRoot } from './harness.js';

function thrown(run: () => unknown): DrawdownSdkError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(DrawdownSdkError);
    return error as DrawdownSdkError;
  }
  throw new Error('expected a DrawdownSdkError');
}

async function unreachable(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

describe('createClient options', () => {
  it('refuses a bad option at construction, naming it', () => {
    const cases: [Partial<ClientOptions>, string][] = [
      [{ url: 'ftp://example.com' }, 'url'],
      [{ url: 'not a url' }, 'url'],
      [{ batchEventsMax: 0 }, 'batchEventsMax'],
      [{ flushIntervalMs: 1.5 }, 'flushIntervalMs'],
      [{ whenFull: 'wait' as never }, 'whenFull'],
      [{ requestsInFlightMax: 1_000 }, 'requestsInFlightMax'],
      [{ batchEventsMax: 500, bufferedEventsMax: 100 }, 'batchEventsMax'],
      [{ apiKey: 'has space' }, 'apiKey'],
      [{ onError: 'log it' as never }, 'onError'],
    ];
    for (const [options, name] of cases) {
      const error = thrown(() => createClient({ url: 'http://127.0.0.1:8080', ...options }));
      expect({ code: error.code, names: error.message.includes(name) }, name).toEqual({
        code: 'option_invalid',
        names: true,
      });
    }
  });

  it('keeps default batches well under the gateway limits (10,000 events, 4 MiB)', () => {
    const { options } = createClient({ url: 'http://127.0.0.1:8080/' });
    expect(options.eventsUrl).toBe('http://127.0.0.1:8080/v1/events');
    expect(options.batchEventsMax).toBeLessThan(10_000);
    expect(options.batchBytesMax).toBeLessThan(4 * 1024 * 1024);
    expect(options.bufferedEventsMax).toBeGreaterThanOrEqual(options.batchEventsMax);
  });
});

describe('track()', () => {
  it('refuses an event without customer and meter at once, naming each field, and buffers nothing', async () => {
    const sdk = createClient({ url: await unreachable() });
    const error = thrown(() => sdk.track({ quantity: 3 } as never));
    expect(error.code).toBe('event_invalid');
    expect(error.problems.map((p) => p.field)).toEqual(['customer', 'meter']);
    expect(sdk.stats()).toMatchObject({ tracked: 0, bufferedEvents: 0 });
    await sdk.close();
  });

  it('refuses what the gateway would refuse for the whole batch: bad quantities, unknown and hostile fields', () => {
    const base = { customer: 'acme', meter: 'gpt-4o.input_tokens' };
    const cases: [unknown, string][] = [
      [{ ...base, quantity: -1 }, 'quantity'],
      [{ ...base, quantity: '1.0000000001' }, 'quantity'],
      [{ ...base, quantity: 1e-10 }, 'quantity'],
      [{ ...base, quantity: 1e21 }, 'quantity'],
      [{ ...base, quantity: 'twelve' }, 'quantity'],
      [{ ...base, qty: 1 }, 'qty'],
      [JSON.parse('{"customer":"acme","meter":"m","__proto__":{"x":1}}'), '__proto__'],
      [{ ...base, customer: 'has space' }, 'customer'],
      [{ ...base, id: '' }, 'id'],
      [{ ...base, timestamp: 'yesterday' }, 'timestamp'],
      [{ ...base, dimensions: { model: 7 } }, 'dimensions.model'],
    ];
    for (const [event, field] of cases) {
      const error = thrown(() => prepareEvent(event as never, 0));
      expect(
        error.problems.map((p) => p.field),
        JSON.stringify(event),
      ).toEqual([field]);
    }
    // Exact decimals and tiny numbers within 9 fraction digits pass.
    for (const quantity of ['0.000000001', 1e-7, 0.1, '123456789012345678.5', 0])
      expect(() => prepareEvent({ ...base, quantity }, 0)).not.toThrow();
  });

  it('fills a missing id (a UUID, fixed before the first send) and timestamp, without touching the caller’s object', () => {
    const event = { customer: 'acme', meter: 'gpt-4o.input_tokens', quantity: '2.5' };
    const wire = prepareEvent(event, 1_700_000_000_000);
    expect(wire).toEqual({ ...event, id: expect.stringMatching(/^[0-9a-f-]{36}$/), timestamp: 1_700_000_000_000 });
    expect(event).toEqual({ customer: 'acme', meter: 'gpt-4o.input_tokens', quantity: '2.5' });
    expect(prepareEvent({ ...event, id: 'mine', timestamp: 5 }, 9)).toMatchObject({ id: 'mine', timestamp: 5 });
  });

  it('refuses one event that could never fit a batch', async () => {
    const sdk = createClient({ url: await unreachable(), batchBytesMax: 1024 });
    const dimensions = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`key${i}`, 'v'.repeat(128)]));
    expect(thrown(() => sdk.track({ customer: 'acme', meter: 'images', dimensions })).code).toBe('event_too_large');
    await sdk.close();
  });

  it("under 'block', refuses a track past blockedTracksMax instead of queueing without limit", async () => {
    const sdk = createClient({
      url: await unreachable(),
      whenFull: 'block',
      bufferedEventsMax: 1,
      batchEventsMax: 1,
      blockedTracksMax: 1,
      retryAttemptsMax: 1,
    });
    const event = { customer: 'acme', meter: 'gpt-4o.input_tokens' };
    expect(await sdk.track(event)).toBe(true);
    const waiting = sdk.track(event);
    expect(thrown(() => sdk.track(event)).code).toBe('too_many_waiting');
    expect(sdk.stats().waitingTracks).toBe(1);
    await expect(sdk.close()).rejects.toMatchObject({ code: 'retries_exhausted' });
    expect(await waiting).toBe(true);
    expect(sdk.stats()).toMatchObject({ tracked: 2, failed: 2, bufferedEvents: 0, waitingTracks: 0 });
    expect(thrown(() => sdk.track(event)).code).toBe('client_closed');
  });

  it('flush() with nothing tracked resolves at once, and close() twice is one close', async () => {
    const sdk = createClient({ url: await unreachable() });
    await sdk.flush();
    await Promise.all([sdk.close(), sdk.close()]);
  });
});

describe('retry rules', () => {
  it('retries network errors, 408, 429 and 5xx; never another 4xx', () => {
    expect([undefined, 408, 429, 500, 502, 503, 504].map(isRetryable)).toEqual([
      true,
      true,
      true,
      true,
      true,
      true,
      true,
    ]);
    expect([400, 401, 403, 404, 409, 413, 415, 422].map(isRetryable)).toEqual([
      false,
      false,
      false,
      false,
      false,
      false,
      false,
      false,
    ]);
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    const now = Date.parse('2026-11-25T10:00:00Z');
    expect(parseRetryAfterMs('5', now)).toBe(5_000);
    expect(parseRetryAfterMs('Wed, 25 Nov 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfterMs('soon', now)).toBeUndefined();
    expect(parseRetryAfterMs(null, now)).toBeUndefined();
  });

  it('backs off exponentially with jitter, capped, and never sooner than Retry-After (itself capped)', () => {
    const limits = { retryDelayBaseMs: 100, retryDelayMaxMs: 1_000, retryAfterMaxMs: 10_000 };
    const low = () => 0;
    const high = () => 1;
    expect([1, 2, 3, 4, 5, 6].map((a) => retryDelayMs(a, undefined, limits, low))).toEqual([
      50, 100, 200, 400, 500, 500,
    ]);
    expect([1, 2, 3, 4, 5, 6].map((a) => retryDelayMs(a, undefined, limits, high))).toEqual([
      100, 200, 400, 800, 1_000, 1_000,
    ]);
    expect(retryDelayMs(1, 5_000, limits, high)).toBe(5_000);
    expect(retryDelayMs(5, 10, limits, high)).toBe(1_000);
    expect(retryDelayMs(1, 3_600_000, limits, high)).toBe(10_000);
  });
});

describe('batch bodies', () => {
  it('are one MessagePack array of the separately encoded events, at every array header size', () => {
    for (const count of [0, 1, 15, 16, 65_535, 65_536]) {
      const items = Array.from({ length: count }, (_, i) => packr.pack(i % 100));
      const decoded = unpack(Buffer.concat([arrayHeader(count), ...items])) as number[];
      expect(decoded.length, String(count)).toBe(count);
      expect(decoded[count - 1], String(count)).toBe(count === 0 ? undefined : (count - 1) % 100);
    }
  });
});

interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

type FakeAnswer = { status: number; json?: unknown; headers?: Record<string, string> } | 'drop';

/** A stand-in for the holds API on a free port: answers each request as `answer` says, and records it. */
async function fakeApi(answer: (request: SeenRequest, index: number) => FakeAnswer) {
  const requests: SeenRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const seen = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString() };
      requests.push(seen);
      const reply = answer(seen, requests.length - 1);
      if (reply === 'drop') {
        req.socket.destroy();
        return;
      }
      const problem = reply.status >= 400;
      res.writeHead(reply.status, {
        'content-type': problem ? 'application/problem+json' : 'application/json',
        ...reply.headers,
      });
      res.end(reply.json === undefined ? '' : JSON.stringify(reply.json));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const holdJson = {
  id: 'YWNtZQ.Y3JlZGl0cw.jk9sO_93GogwMPQT',
  customer: 'acme',
  unit: 'credits',
  status: 'open',
  amount: '0.5',
  remaining: '0.5',
  consumed: '0',
  created_at: '2026-11-25T10:00:00.000Z',
  expires_at: '2026-11-25T10:02:00.000Z',
  closed_at: null,
  metadata: null,
  spent: '0',
  reserved: '0.5',
};

async function rejection(promise: Promise<unknown>): Promise<DrawdownSdkError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DrawdownSdkError);
  return error as DrawdownSdkError;
}

describe('credit holds', () => {
  const fast = { retryDelayBaseMs: 1, retryDelayMaxMs: 5 };

  it('hold() refuses what the API would refuse before sending anything, naming each field', async () => {
    const api = await fakeApi(() => ({ status: 500 }));
    const sdk = createClient({ url: api.url });
    const cases: [string, unknown, string][] = [
      ['has space', { unit: 'credits', amount: 1 }, 'customer'],
      ['acme', { unit: '', amount: 1 }, 'unit'],
      ['acme', { unit: 'credits', amount: 0 }, 'amount'],
      ['acme', { unit: 'credits', amount: '-1' }, 'amount'],
      ['acme', { unit: 'credits', amount: '0.0000000001' }, 'amount'],
      ['acme', { unit: 'credits', amount: 1e21 }, 'amount'],
      ['acme', { unit: 'credits', amount: '1e3' }, 'amount'],
      ['acme', { unit: 'credits', amount: 1, ttlMs: 1.5 }, 'ttlMs'],
      ['acme', { unit: 'credits', amount: 1, metadata: { request: 7 } }, 'metadata.request'],
      ['acme', { unit: 'credits', amount: 1, metadata: { 'has space': 'x' } }, 'metadata.has space'],
      ['acme', { unit: 'credits', amount: 1, idempotencyKey: 'ünïcode' }, 'idempotencyKey'],
    ];
    for (const [customer, request, field] of cases) {
      const error = await rejection(sdk.hold(customer, request as never));
      expect({ code: error.code, fields: error.problems.map((p) => p.field) }, JSON.stringify(request)).toEqual({
        code: 'argument_invalid',
        fields: [field],
      });
    }
    expect((await rejection(sdk.release('no/slashes'))).code).toBe('argument_invalid');
    expect((await rejection(sdk.entitlement('acme', 'credits', -1))).code).toBe('argument_invalid');
    expect(api.requests).toEqual([]);
    await sdk.close();
    await api.close();
  });

  it('reads amounts exactly as the API does: canonical decimals, numbers by their shortest text', () => {
    expect(
      ['0.50', '007', 0.1, 1e-7, '123456789012345678.123456789', 12, '1.000000000000'].map(canonicalAmount),
    ).toEqual(['0.5', '7', '0.1', '0.0000001', '123456789012345678.123456789', '12', '1']);
    for (const bad of ['1234567890123456789', '0.0000000001', '1e3', ' 1', -1, Number.NaN, null])
      expect(canonicalAmount(bad), String(bad)).toBeUndefined();
  });

  it('given 503s and a dropped connection, when hold() is retried, then every attempt carries the one key it chose, and the hold is returned', async () => {
    const api = await fakeApi((_, i) =>
      i === 0
        ? { status: 503, json: { code: 'holds_unavailable' } }
        : i === 1
          ? 'drop'
          : { status: 201, json: { hold: holdJson, created: true, available: '87.5' } },
    );
    const retries: RetryInfo[] = [];
    const sdk = createClient({
      url: 'http://127.0.0.1:9',
      holdsUrl: `${api.url}/`,
      ...fast,
      onRetry: (r) => retries.push(r),
    });
    const hold = await sdk.hold('acme:eu@x', {
      unit: 'credits',
      amount: '0.50',
      ttlMs: 120_000,
      metadata: { request: 'r-1' },
    });
    expect(hold).toEqual({ ...holdJson, created: true, available: '87.5' });
    expect(api.requests).toHaveLength(3);
    const keys = new Set(api.requests.map((r) => r.headers['idempotency-key']));
    expect(keys.size).toBe(1);
    expect([...keys][0]).toMatch(/^sdk-hold-[0-9a-f-]{36}$/);
    for (const request of api.requests) {
      expect(request).toMatchObject({ method: 'POST', url: '/v1/customers/acme%3Aeu%40x/holds' });
      expect(JSON.parse(request.body)).toEqual({
        unit: 'credits',
        amount: '0.5',
        ttl_ms: 120_000,
        metadata: { request: 'r-1' },
      });
    }
    expect(retries.map((r) => [r.operation, r.status, r.idempotencyKey])).toEqual([
      ['hold', 503, [...keys][0]],
      ['hold', undefined, [...keys][0]],
    ]);
    // The caller's own key is the one sent.
    await sdk.hold('acme', { unit: 'credits', amount: 1, idempotencyKey: 'req-42' });
    expect(api.requests.at(-1)!.headers['idempotency-key']).toBe('req-42');
    await sdk.close();
    await api.close();
  });

  it('given 402, then hold() rejects at once with insufficient_credits and the figures, not retried', async () => {
    const api = await fakeApi(() => ({
      status: 402,
      json: {
        type: 'https://drawdown.dev/errors/insufficient_credits',
        status: 402,
        code: 'insufficient_credits',
        detail: 'acme has 0.2 credits available',
        customer: 'acme',
        unit: 'credits',
        amount: '0.5',
        available: '0.2',
        allowance: '0',
      },
    }));
    const retries: RetryInfo[] = [];
    const sdk = createClient({ url: api.url, ...fast, onRetry: (r) => retries.push(r) });
    const error = await rejection(sdk.hold('acme', { unit: 'credits', amount: '0.5', idempotencyKey: 'req-1' }));
    expect({
      code: error.code,
      status: error.status,
      credits: error.credits,
      key: error.idempotencyKey,
      problem: error.problem?.code,
    }).toEqual({
      code: 'insufficient_credits',
      status: 402,
      credits: { customer: 'acme', unit: 'credits', amount: '0.5', available: '0.2', allowance: '0' },
      key: 'req-1',
      problem: 'insufficient_credits',
    });
    expect({ requests: api.requests.length, retries }).toEqual({ requests: 1, retries: [] });
    await sdk.close();
    await api.close();
  });

  it('given another 4xx, then the call rejects with request_rejected and the problem, not retried; a 404 route names holdsUrl', async () => {
    const api = await fakeApi((request) =>
      request.url.startsWith('/v1/holds/')
        ? { status: 404, json: { code: 'hold_not_found', detail: 'no open or recently closed hold' } }
        : { status: 404, json: { code: 'not_found', detail: 'no route' } },
    );
    const sdk = createClient({ url: api.url, ...fast });
    const missing = await rejection(sdk.release(holdJson.id));
    expect({ code: missing.code, status: missing.status, problem: missing.problem?.code }).toEqual({
      code: 'request_rejected',
      status: 404,
      problem: 'hold_not_found',
    });
    expect(api.requests.map((r) => [r.method, r.url])).toEqual([['POST', `/v1/holds/${holdJson.id}/release`]]);
    const unrouted = await rejection(sdk.hold('acme', { unit: 'credits', amount: 1 }));
    expect(unrouted.code).toBe('request_rejected');
    expect(unrouted.message).toContain('holdsUrl');
    expect(api.requests).toHaveLength(2);
    await sdk.close();
    await api.close();
  });

  it('given no answer within callRetryElapsedMaxMs, then hold() rejects with retries_exhausted and the key to retry it with', async () => {
    const api = await fakeApi(() => ({ status: 503, json: { code: 'holds_contended' } }));
    // A budget of several round trips even on a loaded machine, so the test sees retries before it runs out.
    const sdk = createClient({ url: api.url, ...fast, callRetryElapsedMaxMs: 1_000, retryAttemptsMax: 1_000 });
    const startedMs = Date.now();
    const error = await rejection(sdk.hold('acme', { unit: 'credits', amount: 1, idempotencyKey: 'req-9' }));
    expect({ code: error.code, status: error.status, key: error.idempotencyKey }).toEqual({
      code: 'retries_exhausted',
      status: 503,
      key: 'req-9',
    });
    expect(Date.now() - startedMs).toBeLessThan(5_000);
    expect(api.requests.length).toBeGreaterThan(1);
    expect(new Set(api.requests.map((r) => r.headers['idempotency-key']))).toEqual(new Set(['req-9']));
    await sdk.close();
    await api.close();
  });

  it('release() and entitlement() send what the API reads, and return its answer', async () => {
    const entitlement = {
      customer: 'acme',
      unit: 'credits',
      amount: '0.5',
      allowed: true,
      available: '88',
      allowance: '0',
      held: '0',
      as_of: '2026-11-25T10:00:00.000Z',
    };
    const api = await fakeApi((request) =>
      request.method === 'GET'
        ? { status: 200, json: entitlement }
        : { status: 200, json: { hold: { ...holdJson, status: 'released', reserved: '0' }, released: true } },
    );
    const sdk = createClient({ url: api.url, apiKey: 'key-1' });
    expect(await sdk.entitlement('acme', 'credits', '0.50')).toEqual(entitlement);
    await sdk.entitlement('acme', 'credits');
    const released = await sdk.release(holdJson.id);
    expect({ released: released.released, status: released.hold.status }).toEqual({
      released: true,
      status: 'released',
    });
    expect(api.requests.map((r) => [r.method, r.url, r.headers.authorization, r.headers['idempotency-key']])).toEqual([
      ['GET', '/v1/customers/acme/entitlement?unit=credits&amount=0.5', 'Bearer key-1', undefined],
      ['GET', '/v1/customers/acme/entitlement?unit=credits&amount=0', 'Bearer key-1', undefined],
      ['POST', `/v1/holds/${holdJson.id}/release`, 'Bearer key-1', undefined],
    ]);
    await sdk.close();
    await api.close();
  });

  it('given a 2xx that is not the documented body (a proxy page), then the call rejects with response_invalid', async () => {
    const api = await fakeApi(() => ({ status: 200, json: { hello: 'proxy' } }));
    const sdk = createClient({ url: api.url });
    expect((await rejection(sdk.hold('acme', { unit: 'credits', amount: 1 }))).code).toBe('response_invalid');
    await sdk.close();
    await api.close();
  });

  it('after close(), hold() is refused but release() still gives holds back', async () => {
    const api = await fakeApi(() => ({ status: 200, json: { hold: holdJson, released: false } }));
    const sdk = createClient({ url: api.url });
    await sdk.close();
    expect((await rejection(sdk.hold('acme', { unit: 'credits', amount: 1 }))).code).toBe('client_closed');
    expect((await sdk.release(holdJson.id)).released).toBe(false);
    expect(api.requests).toHaveLength(1);
    await api.close();
  });

  it('refuses a bad holdsUrl or callRetryElapsedMaxMs at construction', () => {
    expect(thrown(() => createClient({ url: 'http://127.0.0.1:8080', holdsUrl: 'ftp://x' })).message).toContain(
      'holdsUrl',
    );
    expect(thrown(() => createClient({ url: 'http://127.0.0.1:8080', callRetryElapsedMaxMs: -1 })).message).toContain(
      'callRetryElapsedMaxMs',
    );
    expect(createClient({ url: 'http://127.0.0.1:8080/' }).options.holdsUrl).toBe('http://127.0.0.1:8080');
  });

  it('track() carries `hold` as given, and refuses a malformed one naming the field', () => {
    const base = { customer: 'acme', meter: 'gpt-4o.input_tokens', quantity: 3 };
    expect(prepareEvent({ ...base, hold: holdJson.id }, 0)).toMatchObject({ hold: holdJson.id });
    expect(prepareEvent(base, 0)).not.toHaveProperty('hold');
    for (const hold of ['', 'has space', 'x'.repeat(401), 7])
      expect(
        thrown(() => prepareEvent({ ...base, hold } as never, 0)).problems.map((p) => p.field),
        String(hold),
      ).toEqual(['hold']);
  });
});

describe('@drawdown/sdk entry point', () => {
  it('imports only node builtins, msgpackr and its own modules, so no server code ships with it', () => {
    const sdkDir = join(repoRoot, 'sdk', 'src');
    const imports = readdirSync(sdkDir)
      .filter((file) => file.endsWith('.ts'))
      .flatMap((file) =>
        [...readFileSync(join(sdkDir, file), 'utf8').matchAll(/^import\s(?:type\s)?[^'"]*['"]([^'"]+)['"]/gm)].map(
          (m) => m[1]!,
        ),
      );
    expect(imports.length).toBeGreaterThan(0);
    const foreign = imports.filter(
      (specifier) => !specifier.startsWith('node:') && specifier !== 'msgpackr' && !/^\.\/[a-z-]+\.js$/.test(specifier),
    );
    expect(foreign).toEqual([]);
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'sdk', 'package.json'), 'utf8'));
    expect(Object.keys(manifest.dependencies)).toEqual(['msgpackr']);
  });

  it('resolves as @drawdown/sdk (the workspace) from the build', () => {
    const probe = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('@drawdown/sdk'); console.log(typeof m.createClient, typeof m.DrawdownSdkError)",
      ],
      {
        cwd: repoRoot,
        encoding: 'utf8',
      },
    );
    expect(probe.stderr).toBe('');
    expect(probe.stdout.trim()).toBe('function function');
  });
});
