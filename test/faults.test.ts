/**
 * Faults with real processes, really killed (SPEC §3): each test sends a
 * known workload with an exact total, injects the fault mid-stream, recovers,
 * and checks that ClickHouse holds exactly the accepted events — nothing
 * lost, nothing counted twice.
 */
import { clusteredCasVersionMin, natsVersionBefore } from '../settlement/holds/hold-store.js';
import { Decimal } from 'decimal.js';
import { afterEach, describe, expect, it } from 'vitest';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { freePort } from '../deploy/free-port.js';
import { NatsServerProcess } from '../deploy/nats-server.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import {
  api,
  crashed,
  openTestStore,
  postEvents,
  spawnDrawdown,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type ChildService,
  startNatsCluster,
} from './harness.js';
import { sendUntilAccepted } from './retry-client.js';

/** A workload whose exact per-customer totals are known before it is sent. */
class Workload {
  readonly expected = new Map<string, Decimal>();
  readonly events = new Map<string, number>();
  #batch = 0;
  readonly atMs = Math.floor(Date.now() / 60_000) * 60_000 - 20 * 60_000;

  next(size = 20): { key: string; events: unknown[] } {
    const b = this.#batch++;
    const events = Array.from({ length: size }, (_, i) => {
      const customer = `f${(b * 7 + i) % 6}`;
      const quantity = `${(b * 31 + i * 17) % 1000}.${String((b + i) % 1000).padStart(3, '0')}`;
      this.expected.set(customer, (this.expected.get(customer) ?? new Decimal(0)).plus(quantity));
      this.events.set(customer, (this.events.get(customer) ?? 0) + 1);
      return { id: `b${b}-${i}`, customer, meter: 'gpt-4o.input_tokens', quantity, timestamp: this.atMs + i * 1_000 };
    });
    return { key: `fault-batch-${b}`, events };
  }

  /** What ClickHouse must hold, in `usageTotals` form. */
  want(): Map<string, string> {
    return new Map(
      [...this.expected].map(([customer, total]) => [
        `${customer}|gpt-4o.input_tokens|{}`,
        `${total.toFixed()}|${this.events.get(customer)}`,
      ]),
    );
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function clickhouse(dir: string): Promise<ClickHouseServerProcess> {
  const server = await ClickHouseServerProcess.start({ dir: `${dir}/clickhouse` });
  cleanups.push(() => server.stop());
  return server;
}

async function nats(dir: string): Promise<NatsServerProcess> {
  const server = await NatsServerProcess.start({ dir: `${dir}/nats` });
  cleanups.push(() => server.stop());
  return server;
}

async function drawdown(
  config: Parameters<typeof testConfig>[0],
  parts = { ingest: true, rater: true, settlement: true },
): Promise<Running> {
  const running = await startDrawdown(testConfig({ ackWaitMs: 5_000, retryDelayMaxMs: 500, ...config }), parts);
  cleanups.push(() => running.stop());
  return running;
}

async function expectExact(clickhouseUrl: string, workload: Workload): Promise<void> {
  const store = await openTestStore(clickhouseUrl);
  try {
    expect(await usageTotals(store)).toEqual(workload.want());
  } finally {
    await store.close();
  }
}

describe('faults', () => {
  it('nats-server killed and restarted mid-stream: file storage keeps every batch, totals exact', async () => {
    const dir = tempDir('fault-nats');
    cleanups.push(dir.remove);
    const [ch, ns] = await Promise.all([clickhouse(dir.path), nats(dir.path)]);
    const dd = await drawdown({ natsUrl: ns.url, clickhouseUrl: ch.url });
    const workload = new Workload();
    let restarted: Promise<void> = Promise.resolve();
    for (let b = 0; b < 60; b++) {
      if (b === 20) {
        await ns.kill();
        // Back after 1.5 s; meanwhile the client keeps retrying batch 20 under its key.
        restarted = new Promise((r) => setTimeout(r, 1_500)).then(() => ns.restart());
      }
      const { key, events } = workload.next();
      await sendUntilAccepted(() => dd.url!, events, key);
    }
    await restarted;
    await waitForStreamDrained(ns.url);
    await expectExact(ch.url, workload);
  });

  it('clickhouse-server stopped: the stream buffers, the gateway answers 429 when it is full, and everything drains after', async () => {
    const dir = tempDir('fault-ch');
    cleanups.push(dir.remove);
    const [ch, ns] = await Promise.all([clickhouse(dir.path), nats(dir.path)]);
    const dd = await drawdown({ natsUrl: ns.url, clickhouseUrl: ch.url, streamMaxMessages: 15 });
    const workload = new Workload();
    for (let b = 0; b < 5; b++) {
      const { key, events } = workload.next();
      await sendUntilAccepted(() => dd.url!, events, key);
    }
    await ch.stop();
    // While ClickHouse is away the gateway keeps accepting until the stream is full.
    const statuses: number[] = [];
    const pending: { key: string; events: unknown[] }[] = [];
    for (let b = 0; b < 20; b++) {
      const batch = workload.next();
      const response = await postEvents(dd.url!, batch.events, { key: batch.key });
      statuses.push(response.status);
      if (response.status !== 202) {
        expect(response.body.code).toBe('stream_full');
        pending.push(batch);
      }
    }
    expect(statuses.filter((s) => s === 202).length).toBeGreaterThan(0);
    expect(statuses).toContain(429);
    await ch.restart();
    for (const batch of pending) await sendUntilAccepted(() => dd.url!, batch.events, batch.key);
    await waitForStreamDrained(ns.url);
    await expectExact(ch.url, workload);
  });

  it('gateway killed with requests in flight: clients retry under the same key and every batch counts once', async () => {
    const dir = tempDir('fault-gateway');
    cleanups.push(dir.remove);
    const [ch, ns] = await Promise.all([clickhouse(dir.path), nats(dir.path)]);
    await drawdown({ natsUrl: ns.url, clickhouseUrl: ch.url }, { ingest: false, rater: true, settlement: false });
    const port = await freePort();
    const gatewayEnv = { DRAWDOWN_NATS_URL: ns.url, DRAWDOWN_PARTITIONS: '2', DRAWDOWN_HTTP_PORT: String(port) };
    let gateway: ChildService = spawnDrawdown('ingest', gatewayEnv);
    cleanups.push(() => gateway.stop());
    const base = `http://127.0.0.1:${port}`;
    const workload = new Workload();
    const batches = Array.from({ length: 80 }, () => workload.next());
    let sent = 0;
    const senders = Array.from({ length: 8 }, async () => {
      while (sent < batches.length) {
        const batch = batches[sent++]!;
        await sendUntilAccepted(() => base, batch.events, batch.key);
      }
    });
    const killer = (async () => {
      while (sent < 20) await new Promise((r) => setTimeout(r, 10));
      gateway.child.kill('SIGKILL');
      await gateway.exited;
      await new Promise((r) => setTimeout(r, 300));
      gateway = spawnDrawdown('ingest', gatewayEnv);
    })();
    await Promise.all([...senders, killer]);
    await waitForStreamDrained(ns.url);
    await expectExact(ch.url, workload);
  });

  it('settlement killed between its ledger insert and its run record: the re-run posts nothing twice', async () => {
    const dir = tempDir('fault-settle');
    cleanups.push(dir.remove);
    const [ch, ns] = await Promise.all([clickhouse(dir.path), nats(dir.path)]);
    const dd = await drawdown({ natsUrl: ns.url, clickhouseUrl: ch.url });
    const workload = new Workload();
    for (let b = 0; b < 10; b++) {
      const { key, events } = workload.next();
      await sendUntilAccepted(() => dd.url!, events, key);
    }
    await waitForStreamDrained(ns.url);
    const env = { DRAWDOWN_CLICKHOUSE_URL: ch.url };
    const doomed = spawnDrawdown('settle', { ...env, DRAWDOWN_FAULT: 'settle-after-ledger' });
    const exit = await crashed(doomed);
    expect(exit.signal, doomed.output()).toBe('SIGKILL');
    const rerun = spawnDrawdown('settle', env);
    expect((await rerun.exited).code, rerun.output()).toBe(0);
    // The re-run may start in a later minute; it finishes the interrupted window first, posting nothing twice.
    const store = await openTestStore(ch.url);
    cleanups.push(() => store.close());
    const [[rows, ids]] = (await store.query(
      "SELECT count(), uniqExact(entry_id) FROM ledger_entries WHERE kind = 'usage'",
    )) as [[string, string]];
    expect([Number(rows), Number(ids)]).toEqual([workload.expected.size, workload.expected.size]);
    for (const [customer, tokens] of workload.expected) {
      const balance = await api(dd.url!, 'GET', `/v1/customers/${customer}/balance`);
      // 5.00 credits per 1,000,000 tokens, exactly.
      expect(balance.body.units[0].settled).toBe(tokens.times(5).dividedBy(1_000_000).negated().toFixed());
    }
  });
});

describe('faults on a JetStream cluster', () => {
  it('a 3-node cluster with an R3 stream loses nothing when one node is killed during ingest', async () => {
    const dir = tempDir('fault-cluster');
    cleanups.push(dir.remove);
    const ch = await clickhouse(dir.path);
    const nodes = await startNatsCluster(dir.path, 'drawdown-test', (node) => cleanups.push(() => node.stop()));
    const urls = nodes.map((n) => n.url).join(',');
    // The stream needs a JetStream meta leader; creating it can fail for a moment after the cluster forms.
    let dd: Running | undefined;
    for (let attempt = 0; dd === undefined; attempt++) {
      try {
        dd = await drawdown({ natsUrl: urls, clickhouseUrl: ch.url, streamReplicas: 3 });
      } catch (error) {
        if (attempt >= 50) throw error;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const workload = new Workload();
    for (let b = 0; b < 60; b++) {
      if (b === 20) await nodes[1]!.kill();
      const { key, events } = workload.next();
      await sendUntilAccepted(() => dd!.url!, events, key);
    }
    await waitForStreamDrained(nodes[0]!.url);
    await expectExact(ch.url, workload);

    // Settlement still serves balances; credit holds say why they are off when nats-server cannot decide them safely.
    const version = dd!.nats!.nc.info!.version;
    const check = await api(dd!.url!, 'GET', '/v1/customers/c1/entitlement?unit=credits&amount=1');
    if (natsVersionBefore(version, clusteredCasVersionMin)) {
      expect(check.status).toBe(503);
      expect(check.body.code).toBe('holds_unavailable');
      expect(check.body.detail).toContain('nats-server#4320');
    } else expect(check.status).toBe(200);
    expect((await api(dd!.url!, 'GET', '/v1/customers/c1/balance')).status).toBe(200);
  });
});
