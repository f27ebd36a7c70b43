/**
 * The TypeScript SDK (@drawdown/sdk, sdk/) against the real gateway, nats-server and
 * clickhouse-server: what a customer's backend sees when it streams usage —
 * exact totals, a gateway restart survived, backpressure obeyed, its own bugs
 * reported without being retried, and memory that stays bounded — and when
 * it gates work on credit holds (reserve, usage naming the hold, release).
 */
import { createHash } from 'node:crypto';
import { Decimal } from 'decimal.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { freePort } from '../deploy/free-port.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import {
  createClient,
  DrawdownSdkError,
  type ClientOptions,
  type DrawdownClient,
  type RetryInfo,
  type TrackEvent,
} from '../sdk/src/index.js';
import {
  api,
  openTestStore,
  spawnDrawdown,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type ChildService,
} from './harness.js';

const meter = 'gpt-4o.input_tokens';

/** A fixed workload whose exact per-customer totals are known before it is sent. */
class Workload {
  readonly #expected = new Map<string, { total: Decimal; events: number }>();
  #next = 0;
  constructor(readonly prefix: string) {}

  /** Events without ids (the SDK generates them); some without timestamps (the SDK fills them). */
  take(count: number): TrackEvent[] {
    return Array.from({ length: count }, () => {
      const n = this.#next++;
      const customer = `${this.prefix}-c${n % 5}`;
      const quantity = `${(n * 37) % 1000}.${String((n * 7) % 1000).padStart(3, '0')}`;
      const seen = this.#expected.get(customer) ?? { total: new Decimal(0), events: 0 };
      this.#expected.set(customer, { total: seen.total.plus(quantity), events: seen.events + 1 });
      return n % 2 === 0
        ? { customer, meter, quantity }
        : { customer, meter, quantity, timestamp: Date.now() - 60_000 };
    });
  }

  get count(): number {
    return this.#next;
  }

  want(): Map<string, string> {
    return new Map(
      [...this.#expected]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([customer, { total, events }]) => [`${customer}|${meter}|{}`, `${total.toFixed()}|${events}`]),
    );
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('SDK against the real gateway', () => {
  const dir = tempDir('sdk');
  let clickhouse: ClickHouseServerProcess;

  beforeAll(async () => {
    clickhouse = await ClickHouseServerProcess.start({ dir: `${dir.path}/clickhouse` });
  });
  afterAll(async () => {
    await clickhouse?.stop();
    dir.remove();
  });

  /**
   * A fresh nats-server and ClickHouse database per test: the rater resumes
   * from watermarks kept in ClickHouse per stream partition, so a new stream
   * must not meet an old test's watermarks.
   */
  async function backends(name: string): Promise<{ natsUrl: string; clickhouseUrl: string }> {
    const server = await startNats(`${dir.path}/${name}`);
    cleanups.push(() => server.stop());
    const store = await openTestStore(clickhouse.url);
    try {
      await store.command(`CREATE DATABASE IF NOT EXISTS sdk_${name}`);
    } finally {
      await store.close();
    }
    return { natsUrl: server.url, clickhouseUrl: `${clickhouse.url}/sdk_${name}` };
  }

  async function drawdown(
    config: Parameters<typeof testConfig>[0],
    parts: { ingest: boolean; rater: boolean },
  ): Promise<Running> {
    const running = await startDrawdown(testConfig({ ackWaitMs: 5_000, retryDelayMaxMs: 500, ...config }), {
      ...parts,
      settlement: false,
    });
    cleanups.push(() => running.stop());
    return running;
  }

  function client(options: ClientOptions): DrawdownClient {
    const sdk = createClient(options);
    // A test that failed half-way must not leave timers or retries running.
    cleanups.push(() => sdk.close().catch(() => {}));
    return sdk;
  }

  /** Usage in ClickHouse for one workload's customers. */
  async function totals(clickhouseUrl: string, prefix: string): Promise<Map<string, string>> {
    const store = await openTestStore(clickhouseUrl);
    try {
      return new Map([...(await usageTotals(store))].filter(([key]) => key.startsWith(`${prefix}-`)));
    } finally {
      await store.close();
    }
  }

  async function until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('given a known workload, when it is streamed through the SDK, then ClickHouse holds exactly its totals', async () => {
    const ns = await backends('exact');
    const dd = await drawdown({ ...ns }, { ingest: true, rater: true });
    const errors: DrawdownSdkError[] = [];
    const sdk = client({
      url: dd.url!,
      batchEventsMax: 50,
      batchBytesMax: 2048,
      flushIntervalMs: 50,
      onError: (e) => errors.push(e),
    });
    const workload = new Workload('exact');
    for (const event of workload.take(600)) await sdk.track(event);
    await sdk.flush();

    const stats = sdk.stats();
    expect(errors).toEqual([]);
    expect({
      acknowledged: stats.acknowledged,
      failed: stats.failed,
      dropped: stats.dropped,
      bufferedEvents: stats.bufferedEvents,
    }).toEqual({
      acknowledged: 600,
      failed: 0,
      dropped: 0,
      bufferedEvents: 0,
    });
    // Batches were cut by size: by count (≤ 50) and, with ~100-byte events, by bytes (≤ 2 KiB).
    expect(stats.batchesAcknowledged).toBeGreaterThan(600 / 50);
    await waitForStreamDrained(ns.natsUrl);
    expect(await totals(ns.clickhouseUrl, 'exact')).toEqual(workload.want());
  });

  it('given a few events and no flush(), when flushIntervalMs passes, then they are sent on their own', async () => {
    const ns = await backends('timer');
    const dd = await drawdown({ ...ns }, { ingest: true, rater: true });
    const sdk = client({ url: dd.url!, flushIntervalMs: 50 });
    const workload = new Workload('timer');
    for (const event of workload.take(3)) await sdk.track(event);
    await until(() => sdk.stats().acknowledged === 3, 'the timer to send 3 events');
    await waitForStreamDrained(ns.natsUrl);
    expect(await totals(ns.clickhouseUrl, 'timer')).toEqual(workload.want());
  });

  it('given the gateway is SIGKILLed mid-stream and restarted on its port, then totals are exact: nothing lost, nothing counted twice', async () => {
    const ns = await backends('restart');
    await drawdown({ ...ns }, { ingest: false, rater: true });
    const port = await freePort();
    const env = { DRAWDOWN_NATS_URL: ns.natsUrl, DRAWDOWN_PARTITIONS: '2', DRAWDOWN_HTTP_PORT: String(port) };
    let gateway: ChildService = spawnDrawdown('ingest', env);
    cleanups.push(() => gateway.stop());
    const base = `http://127.0.0.1:${port}`;
    await waitForHealth(base);

    const errors: DrawdownSdkError[] = [];
    const sdk = client({
      url: base,
      batchEventsMax: 20,
      flushIntervalMs: 10,
      retryDelayBaseMs: 50,
      retryAttemptsMax: 30,
      onError: (e) => errors.push(e),
    });
    const workload = new Workload('restart');
    for (let round = 0; round < 40; round++) {
      if (round === 15) {
        gateway.child.kill('SIGKILL');
        await gateway.exited;
        // Restarted a little later on the same port; meanwhile the SDK keeps tracking and retrying.
        setTimeout(() => {
          gateway = spawnDrawdown('ingest', env);
        }, 300);
      }
      for (const event of workload.take(20)) await sdk.track(event);
      await new Promise((r) => setTimeout(r, 15));
    }
    await sdk.flush();

    expect(errors).toEqual([]);
    expect(sdk.stats().acknowledged).toBe(workload.count);
    expect(sdk.stats().retries).toBeGreaterThan(0);
    await waitForStreamDrained(ns.natsUrl);
    expect(await totals(ns.clickhouseUrl, 'restart')).toEqual(workload.want());
  });

  it('given a full stream, when the gateway answers 429 with Retry-After, then the SDK waits at least that long and delivers everything once raters catch up', async () => {
    const ns = await backends('429');
    // No rater at first: the stream fills after a few batches.
    const gateway = await drawdown({ ...ns, streamMaxMessages: 3 }, { ingest: true, rater: false });
    const retries: RetryInfo[] = [];
    const sdk = client({
      url: gateway.url!,
      batchEventsMax: 10,
      flushIntervalMs: 10,
      requestsInFlightMax: 2,
      onRetry: (info) => retries.push(info),
    });
    const workload = new Workload('backpressure');
    for (const event of workload.take(80)) await sdk.track(event);
    const flushed = sdk.flush();
    await until(() => retries.some((r) => r.status === 429), 'a 429');
    await drawdown({ ...ns }, { ingest: false, rater: true });
    await flushed;

    const refusals = retries.filter((r) => r.status === 429);
    expect(refusals.length).toBeGreaterThan(0);
    for (const refusal of refusals) {
      expect(refusal.retryAfterMs).toBeGreaterThan(0);
      expect(refusal.delayMs).toBeGreaterThanOrEqual(refusal.retryAfterMs!);
    }
    expect(sdk.stats()).toMatchObject({ acknowledged: 80, failed: 0 });
    await waitForStreamDrained(ns.natsUrl);
    expect(await totals(ns.clickhouseUrl, 'backpressure')).toEqual(workload.want());
  });

  it('given one event the gateway refuses (unknown meter), then its batch fails once with index and field, is not retried, and other batches are stored', async () => {
    const ns = await backends('4xx');
    const dd = await drawdown({ ...ns }, { ingest: true, rater: true });
    const errors: DrawdownSdkError[] = [];
    const retries: RetryInfo[] = [];
    const sdk = client({
      url: dd.url!,
      batchEventsMax: 5,
      flushIntervalMs: 10_000,
      onError: (e) => errors.push(e),
      onRetry: (r) => retries.push(r),
    });
    const kept = new Workload('refused');
    const refused = new Workload('rejected');
    // Batches of 5: [kept × 5] [refused, refused, BAD, refused, refused] [kept × 5]; the bad event's index in its
    // batch is 2.
    for (const event of kept.take(5)) await sdk.track(event);
    const middle = refused.take(4);
    for (const event of middle.slice(0, 2)) await sdk.track(event);
    await sdk.track({ customer: 'rejected-c0', meter: 'no.such.meter', quantity: 1 });
    for (const event of middle.slice(2)) await sdk.track(event);
    for (const event of kept.take(5)) await sdk.track(event);

    const failure = await sdk.flush().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(DrawdownSdkError);
    const error = failure as DrawdownSdkError;
    expect({ code: error.code, status: error.status, gatewayCode: error.problem?.code }).toEqual({
      code: 'batch_rejected',
      status: 422,
      gatewayCode: 'event_invalid',
    });
    expect(error.problems).toContainEqual(expect.objectContaining({ index: 2, field: 'meter' }));
    expect(error.batch).toMatchObject({ eventCount: 5, attempts: 1 });
    expect(errors).toEqual([error]);
    expect(retries).toEqual([]);
    expect(sdk.stats()).toMatchObject({ acknowledged: 10, failed: 5, batchesFailed: 1 });

    await waitForStreamDrained(ns.natsUrl);
    expect(await totals(ns.clickhouseUrl, 'refused')).toEqual(kept.want());
    expect(await totals(ns.clickhouseUrl, 'rejected')).toEqual(new Map());
  });

  it('given API keys are required, then the SDK sends its key as a Bearer token, and a missing or out-of-scope key is refused once, not retried', async () => {
    const ns = await backends('auth');
    const keys = { ingest: 'sdk-test-ingest-key-1', read: 'sdk-test-read-key-1' };
    const keyTable = Object.entries(keys).map(([scope, key]) => ({
      id: scope,
      sha256: createHash('sha256').update(key).digest('hex'),
      scopes: [scope],
    }));
    const gateway = await drawdown(
      { ...ns, auth: 'required', apiKeys: JSON.stringify(keyTable) },
      { ingest: true, rater: false },
    );
    const outcome = async (apiKey: string | undefined) => {
      const retries: RetryInfo[] = [];
      const sdk = client({
        url: gateway.url!,
        ...(apiKey === undefined ? {} : { apiKey }),
        onRetry: (r) => retries.push(r),
      });
      for (const event of new Workload('auth').take(3)) await sdk.track(event);
      const failure = await sdk.flush().then(
        () => undefined,
        (error: DrawdownSdkError) => error,
      );
      return {
        code: failure?.code,
        status: failure?.status,
        acknowledged: sdk.stats().acknowledged,
        retries: retries.length,
      };
    };
    expect(await outcome(keys.ingest)).toEqual({ code: undefined, status: undefined, acknowledged: 3, retries: 0 });
    expect(await outcome(keys.read)).toEqual({ code: 'batch_rejected', status: 403, acknowledged: 0, retries: 0 });
    expect(await outcome(undefined)).toEqual({ code: 'batch_rejected', status: 401, acknowledged: 0, retries: 0 });
  });

  it("given the gateway is unreachable and whenFull 'drop', then events past bufferedEventsMax are dropped and counted, and close() reports the undelivered rest", async () => {
    const port = await freePort();
    const errors: DrawdownSdkError[] = [];
    const sdk = client({
      url: `http://127.0.0.1:${port}`,
      whenFull: 'drop',
      bufferedEventsMax: 10,
      batchEventsMax: 5,
      retryAttemptsMax: 3,
      retryDelayBaseMs: 10,
      onError: (e) => errors.push(e),
    });
    const results: boolean[] = [];
    for (const event of new Workload('drop').take(25)) results.push(await sdk.track(event));

    expect(results.filter((kept) => kept)).toHaveLength(10);
    expect(sdk.stats()).toMatchObject({ tracked: 25, dropped: 15, bufferedEvents: 10 });
    expect(sdk.stats().bufferedEvents).toBeLessThanOrEqual(10);
    const closing = await sdk.close().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect((closing as DrawdownSdkError).code).toBe('retries_exhausted');
    expect(errors.map((e) => [e.code, e.batch?.attempts])).toEqual([
      ['retries_exhausted', 3],
      ['retries_exhausted', 3],
    ]);
    expect(sdk.stats()).toMatchObject({ failed: 10, bufferedEvents: 0 });
    expect(() => sdk.track({ customer: 'drop-c0', meter })).toThrow(expect.objectContaining({ code: 'client_closed' }));
  });

  it("given the gateway is unreachable and whenFull 'block', then track() waits for room, and close() delivers everything once the gateway is up", async () => {
    const port = await freePort();
    const ns = await backends('block');
    await drawdown({ ...ns }, { ingest: false, rater: true });
    const sdk = client({
      url: `http://127.0.0.1:${port}`,
      whenFull: 'block',
      bufferedEventsMax: 10,
      batchEventsMax: 5,
      retryDelayBaseMs: 20,
      retryDelayMaxMs: 200,
      retryAttemptsMax: 200,
    });
    const workload = new Workload('block');
    const events = workload.take(12);
    for (const event of events.slice(0, 10)) expect(await sdk.track(event)).toBe(true);
    let admitted = 0;
    const waiting = events.slice(10).map((event) => sdk.track(event).then(() => admitted++));

    await until(() => sdk.stats().retries >= 4, 'retries while the gateway is down');
    expect(admitted).toBe(0);
    expect(sdk.stats()).toMatchObject({ bufferedEvents: 10, waitingTracks: 2, acknowledged: 0 });

    await drawdown({ ...ns, httpPort: port }, { ingest: true, rater: false });
    await Promise.all(waiting);
    await sdk.close();
    expect(sdk.stats()).toMatchObject({ acknowledged: 12, failed: 0, bufferedEvents: 0, waitingTracks: 0 });
    await waitForStreamDrained(ns.natsUrl);
    expect(await totals(ns.clickhouseUrl, 'block')).toEqual(workload.want());
  });
  it('given bought credits, when a backend reserves a hold, sends usage naming it and releases it, then available never reads high and settlement posts exactly the usage', async () => {
    const ns = await backends('holds');
    const dd = await startDrawdown(testConfig({ ackWaitMs: 5_000, retryDelayMaxMs: 500, ...ns }), {
      ingest: true,
      rater: true,
      settlement: true,
    });
    cleanups.push(() => dd.stop());
    const customer = 'sdk-holds-c0';
    const bought = await api(
      dd.url!,
      'POST',
      `/v1/customers/${customer}/purchases`,
      { package: 'credits-100' },
      {
        'idempotency-key': 'sdk-holds-1',
      },
    );
    expect(bought.status).toBe(201);
    const sdk = client({ url: dd.url!, flushIntervalMs: 20 });

    const hold = await sdk.hold(customer, { unit: 'credits', amount: '10', ttlMs: 600_000, idempotencyKey: 'req-1' });
    expect(hold).toMatchObject({ status: 'open', amount: '10', reserved: '10', created: true, available: '90' });
    // A retry under the key is the same hold, not a second reservation.
    const again = await sdk.hold(customer, { unit: 'credits', amount: '10', ttlMs: 600_000, idempotencyKey: 'req-1' });
    expect({ id: again.id, created: again.created }).toEqual({ id: hold.id, created: false });
    expect(await sdk.entitlement(customer, 'credits', '90')).toMatchObject({
      allowed: true,
      available: '90',
      held: '10',
    });
    expect((await sdk.entitlement(customer, 'credits', '90.000000001')).allowed).toBe(false);
    const refused = await sdk.hold(customer, { unit: 'credits', amount: 91 }).then(
      () => undefined,
      (error: DrawdownSdkError) => error,
    );
    expect({ code: refused?.code, available: refused?.credits?.available }).toEqual({
      code: 'insufficient_credits',
      available: '90',
    });

    // Two images at 3 credits, named by the hold; stamped two minutes back so that the settlement below takes them.
    await sdk.track({
      customer,
      meter: 'images',
      quantity: 2,
      timestamp: Date.now() - 120_000,
      dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
      hold: hold.id,
    });
    await sdk.flush();
    // Until the rater commits the usage the hold reserves all of it; after, the usage is pending and the hold
    // reserves the rest. Either way 90 is available — lower for a moment at most, never higher.
    const seen: string[] = [];
    const deadline = Date.now() + 30_000;
    for (;;) {
      const balance = (await api(dd.url!, 'GET', `/v1/customers/${customer}/balance`)).body as {
        units: { unit: string; pending: string; held: string; available: string }[];
      };
      const credits = balance.units.find((u) => u.unit === 'credits')!;
      seen.push(credits.available);
      if (credits.pending === '6' && credits.held === '4') break;
      if (Date.now() > deadline) throw new Error(`usage naming the hold not seen: ${JSON.stringify(credits)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(seen.filter((available) => new Decimal(available).greaterThan(90))).toEqual([]);
    expect(seen.at(-1)).toBe('90');
    const got = (await api(dd.url!, 'GET', `/v1/holds/${hold.id}`)).body as { spent: string; reserved: string };
    expect(got).toMatchObject({ spent: '6', reserved: '4' });

    // Released: it counts for the release grace (usage sent just before may be on its way) …
    const released = await sdk.release(hold.id);
    expect({ released: released.released, status: released.hold.status }).toEqual({
      released: true,
      status: 'releasing',
    });
    expect((await sdk.release(hold.id)).released).toBe(false);
    // … and, its usage being in, it may end now.
    const ended = await sdk.release(hold.id, { waitForUsage: false });
    expect({ released: ended.released, status: ended.hold.status }).toEqual({ released: true, status: 'released' });
    expect(await sdk.entitlement(customer, 'credits')).toMatchObject({ allowed: true, available: '94', held: '0' });

    // Holds post nothing: settlement deducts exactly the usage.
    const settled = await api(dd.url!, 'POST', '/v1/settlements', {});
    expect(settled.status).toBe(200);
    expect(settled.body.customers[customer].deducted).toEqual({ credits: '6' });
    const balance = (await api(dd.url!, 'GET', `/v1/customers/${customer}/balance`)).body as {
      units: { unit: string }[];
    };
    expect(balance.units).toEqual([
      expect.objectContaining({ unit: 'credits', settled: '94', pending: '0', held: '0', available: '94' }),
    ]);
  });
});

async function waitForHealth(base: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${base} did not come up`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
