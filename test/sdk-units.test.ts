/**
 * The SDK's own rules, without a gateway: options checked at construction,
 * events checked at track(), retry timing, batch bodies, and what the SDK
 * may import. Requests that do go out go to a port nothing listens on.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unpack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { freePort } from '../deploy/free-port.js';
import { arrayHeader } from '../ingest/sdk/buffer.js';
import { prepareEvent } from '../ingest/sdk/event.js';
import { createClient, DrawdownSdkError, type ClientOptions } from '../ingest/sdk/index.js';
import { isRetryable, parseRetryAfterMs, retryDelayMs } from '../ingest/sdk/retry.js';
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

describe('drawdown/sdk entry point', () => {
  it('imports only node builtins, msgpackr and its own modules, so no server code ships with it', () => {
    const sdkDir = join(repoRoot, 'ingest', 'sdk');
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
  });

  it('resolves as drawdown/sdk from the build', () => {
    const probe = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('drawdown/sdk'); console.log(typeof m.createClient, typeof m.DrawdownSdkError)",
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
