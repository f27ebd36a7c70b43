/**
 * Test harness: real nats-server and clickhouse-server processes (or chDB),
 * drawdown started in-process or as child processes, and small HTTP helpers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { loadConfig, type Config } from '../shared/config.js';
import { openStore } from '../shared/clickhouse/open.js';
import type { Store } from '../shared/clickhouse/store.js';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { NatsServerProcess } from '../deploy/nats-server.js';
import { LaunchError } from '../deploy/server-process.js';
import { freePort } from '../deploy/free-port.js';

export type Backend = 'server' | 'chdb';

export const repoRoot = fileURLToPath(new URL('..', import.meta.url));
export const catalogPath = join(repoRoot, 'deploy', 'demo-catalog.json');
export const cliPath = join(repoRoot, 'dist', 'deploy', 'cli.js');

export const packr = new Packr({ useRecords: false });

/** A small seeded PRNG (mulberry32), so a failing randomised test can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `drawdown-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Where drawdown's ClickHouse lives for a backend: a real server, or a chDB directory. */
export interface ClickHouseTarget {
  url: string;
  server: ClickHouseServerProcess | undefined;
  stop(): Promise<void>;
}

export async function startClickHouse(backend: Backend, dir: string): Promise<ClickHouseTarget> {
  if (backend === 'chdb') return { url: `chdb:${join(dir, 'chdb')}`, server: undefined, stop: async () => {} };
  const server = await ClickHouseServerProcess.start({ dir: join(dir, 'clickhouse') });
  return { url: server.url, server, stop: () => server.stop() };
}

export async function startNats(dir: string): Promise<NatsServerProcess> {
  return NatsServerProcess.start({ dir: join(dir, 'nats') });
}

/**
 * A 3-node JetStream cluster on loopback, nodes named node-0…node-2 (JetStream
 * names a stream's leader by them); `started` is called with each node as it
 * comes up, so the caller can stop it after the test.
 */
export async function startNatsCluster(
  dir: string,
  clusterName: string,
  started: (node: NatsServerProcess) => void,
): Promise<NatsServerProcess[]> {
  // The route ports are fixed for the whole cluster before any node starts, so a port another test took in the
  // meantime cannot be retried node by node: the cluster starts again on fresh ports (and fresh directories).
  for (let attempt = 1; ; attempt++) {
    const clusterPorts = await Promise.all([freePort(), freePort(), freePort()]);
    const routes = clusterPorts.map((p) => `nats-route://127.0.0.1:${p}`);
    const up: NatsServerProcess[] = [];
    const nodes = await Promise.allSettled(
      clusterPorts.map(async (clusterPort, i) => {
        const node = await NatsServerProcess.start({
          dir: join(dir, attempt === 1 ? `nats-${i}` : `nats-${i}-try${attempt}`),
          clusterName,
          clusterPort,
          routes,
          serverName: `node-${i}`,
        });
        up.push(node);
        started(node);
        return node;
      }),
    );
    const failed = nodes.find((n): n is PromiseRejectedResult => n.status === 'rejected');
    if (failed === undefined) return nodes.map((n) => (n as PromiseFulfilledResult<NatsServerProcess>).value);
    await Promise.allSettled(up.map((node) => node.stop()));
    const portInUse = failed.reason instanceof LaunchError && failed.reason.portInUse;
    if (!portInUse || attempt >= 3) throw failed.reason;
  }
}

/** A config as a process would load it, with test-friendly limits on top. */
export function testConfig(overrides: Partial<Record<keyof Config, string | number>>): Config {
  return loadConfig(new Map(), {}, [], {
    catalog: catalogPath,
    httpPort: 0,
    logLevel: 'warn',
    flushIntervalMs: 100,
    partitions: 2,
    raterThreads: 1,
    auth: 'off',
    ...overrides,
  });
}

export function openTestStore(url: string): Promise<Store> {
  return openStore(url);
}

export async function postEvents(
  base: string,
  events: unknown[],
  options: { key?: string; json?: boolean } = {},
): Promise<{ status: number; body: any }> {
  const response = await fetch(`${base}/v1/events`, {
    method: 'POST',
    headers: {
      'content-type': options.json ? 'application/json' : 'application/msgpack',
      ...(options.key ? { 'idempotency-key': options.key } : {}),
    },
    body: options.json ? JSON.stringify(events) : packr.pack(events),
  });
  return { status: response.status, body: await response.json() };
}

/**
 * Posts until the gateway answers `want` (a catalog change reaches a gateway
 * at its next refresh), at most `attemptsMax` times 50 ms apart; returns the
 * last status. `events(attempt)` may vary the batch between attempts.
 */
export async function postEventsUntil(
  base: string,
  want: number,
  events: (attempt: number) => unknown[],
  options: { key?: string; attemptsMax?: number } = {},
): Promise<number> {
  let status = 0;
  for (let attempt = 0; attempt < (options.attemptsMax ?? 200) && status !== want; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 50));
    status = (await postEvents(base, events(attempt), options.key === undefined ? {} : { key: options.key })).status;
  }
  return status;
}

export async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any }> {
  const response = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: await response.json() };
}

/**
 * Waits until the stream holds no messages: with work-queue retention a batch
 * leaves the stream only when the rater acked it, which it does only after
 * ClickHouse holds the batch. So an empty stream means everything is committed.
 */
export async function waitForStreamDrained(
  natsUrl: string,
  stream = 'DRAWDOWN_EVENTS',
  timeoutMs = 60_000,
): Promise<void> {
  const nc = await connect({ servers: natsUrl.split(',') });
  try {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer yet';
    for (;;) {
      try {
        // Asked anew each time: after a node failure the JetStream API can time out until a leader is elected.
        const info = await (await jetstreamManager(nc, { timeout: 2_000 })).streams.info(stream);
        if (info.state.messages === 0) return;
        last = `${info.state.messages} messages`;
      } catch (error) {
        last = (error as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`stream not drained after ${timeoutMs} ms (last: ${last})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await nc.close();
  }
}

/** The event stream's current state: batches held now, and the last sequence ever stored. */
export async function streamState(
  natsUrl: string,
  stream = 'DRAWDOWN_EVENTS',
): Promise<{ messages: number; lastSeq: number }> {
  const nc = await connect({ servers: natsUrl });
  try {
    const { state } = await (await jetstreamManager(nc)).streams.info(stream);
    return { messages: state.messages, lastSeq: state.last_seq };
  } finally {
    await nc.close();
  }
}

/** Usage totals straight from ClickHouse, keyed "customer|meter|dimensions". */
export async function usageTotals(store: Store): Promise<Map<string, string>> {
  const rows = await store.query(
    'SELECT customer, meter, dimensions, toString(sum(quantity)), sum(events) FROM usage_minute GROUP BY customer, meter, dimensions ORDER BY customer, meter, dimensions',
  );
  // Normalise 18.16's zero padding so both engines compare equal.
  return new Map(
    rows.map(([c, m, d, q, e]) => [
      `${c}|${m}|${d}`,
      `${q!.includes('.') ? q!.replace(/0+$/, '').replace(/\.$/, '') : q}|${e}`,
    ]),
  );
}

/**
 * Waits for a child that is meant to die by itself (a DRAWDOWN_FAULT crash
 * point); one that has not within `timeoutMs` is killed, and the test fails
 * saying so instead of hanging.
 */
export async function crashed(
  service: ChildService,
  timeoutMs = 60_000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
  const outcome = await Promise.race([service.exited, deadline]);
  clearTimeout(timer);
  if (outcome !== 'timeout') return outcome;
  service.child.kill('SIGKILL');
  await service.exited;
  throw new Error(`the process did not reach its crash point within ${timeoutMs} ms; output:\n${service.output()}`);
}

export interface ChildService {
  child: ChildProcess;
  /** stdout and stderr as they arrived, interleaved. */
  output: () => string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

/** Runs `drawdown <command>` from the compiled build as a real child process. */
/**
 * Children still running. A test that fails or times out part-way must not
 * leave a rater consuming the machine: whatever is left is killed when the
 * test process exits.
 */
const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

/** Waits until a drawdown child answers 200 on /readyz; fails with its output if it exits or takes too long. */
export async function waitReady(base: string, child: ChildService, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.child.exitCode !== null) throw new Error(`drawdown at ${base} exited early:\n${child.output()}`);
    const ok = await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`drawdown at ${base} did not become ready within ${timeoutMs} ms:\n${child.output()}`);
}

export function spawnDrawdown(command: string, env: Record<string, string>): ChildService {
  const child = spawn(process.execPath, [cliPath, command], {
    env: {
      ...process.env,
      DRAWDOWN_CATALOG: catalogPath,
      DRAWDOWN_HTTP_PORT: '0',
      DRAWDOWN_LOG_LEVEL: 'warn',
      DRAWDOWN_AUTH: 'off',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveChildren.add(child);
  let output = '';
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    output += d.toString();
    stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    output += d.toString();
    stderr += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      resolve({ code, signal });
    }),
  );
  return {
    child,
    output: () => output,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
