/**
 * What each kind of drawdown process gives the tools users already run, as
 * child processes of the compiled build: the all-in-one `start` (its own
 * nats-server and chDB), and `ingest`, `rater` and `settlement` against a real
 * nats-server and clickhouse-server. Each serves a /metrics that Prometheus's
 * own linter (`promtool check metrics`, Debian's `prometheus` package) passes
 * without a word, and every line it writes on stdout and stderr, from start-up
 * through requests refused and accepted to shutdown, is one JSON object.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBinary } from '../deploy/server-process.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  api,
  postEvents,
  spawnDrawdown,
  startClickHouse,
  startNats,
  tempDir,
  waitForStreamDrained,
  type ChildService,
  type ClickHouseTarget,
} from './harness.js';

const startTimeoutMs = 90_000;

/** Every non-empty line of `text`, parsed; a line that is not one JSON object fails the test, naming it. */
function jsonLines(text: string, where: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        throw new Error(`${where}: not a JSON line: ${line}`);
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        throw new Error(`${where}: not a JSON object: ${line}`);
      return parsed as Record<string, unknown>;
    });
}

/** Waits for the log line with message `msg` (the process is up) and returns it. */
async function logLine(service: ChildService, msg: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    const complete = service.stdout().slice(0, service.stdout().lastIndexOf('\n') + 1);
    const found = jsonLines(complete, 'stdout').find((line) => line.msg === msg || String(line.msg).startsWith(msg));
    if (found) return found;
    if (service.child.exitCode !== null || Date.now() > deadline)
      throw new Error(`no "${msg}" line; output:\n${service.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('every process: metrics promtool accepts, and nothing but JSON lines', () => {
  const dir = tempDir('process-output');
  const promtool = findBinary('promtool');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  const processes: { kind: string; service: ChildService; url: string }[] = [];
  const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 5 * 60_000;

  async function launch(kind: string, env: Record<string, string>, readyMsg: string): Promise<string> {
    const service = spawnDrawdown(kind, { DRAWDOWN_LOG_LEVEL: 'info', ...env });
    const ready = await logLine(service, readyMsg);
    const url = String(ready.url);
    processes.push({ kind, service, url });
    return url;
  }

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    const shared = { DRAWDOWN_NATS_URL: nats.url, DRAWDOWN_CLICKHOUSE_URL: clickhouse.url };
    const allInOne = await launch('start', { DRAWDOWN_DATA_DIR: `${dir.path}/all-in-one` }, 'drawdown is running at');
    const gateway = await launch('ingest', shared, 'listening');
    await launch('rater', shared, 'listening');
    const settlement = await launch('settlement', shared, 'listening');

    // Traffic, so labelled series and histograms are served too: accepted and refused batches, a settlement run.
    const batch = [
      {
        id: 'e1',
        customer: 'acme',
        meter: 'images',
        quantity: 1,
        timestamp: atMs,
        dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
      },
    ];
    for (const base of [allInOne, gateway]) {
      expect((await postEvents(base, batch)).status).toBe(202);
      expect((await postEvents(base, [{ id: 'bad', customer: 'acme', meter: 'nope', timestamp: atMs }])).status).toBe(
        422,
      );
    }
    await waitForStreamDrained(nats.url);
    for (const base of [allInOne, settlement])
      expect(
        (await api(base, 'POST', '/v1/settlements', { until: new Date(atMs + 60_000).toISOString() })).status,
      ).toBe(200);
  }, 4 * startTimeoutMs);

  afterAll(async () => {
    for (const { service } of processes) await service.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it.each(['start', 'ingest', 'rater', 'settlement'])(
    'given %s, when promtool checks its /metrics, then it exits 0 and says nothing',
    async (kind) => {
      const { url } = processes.find((p) => p.kind === kind)!;
      const response = await fetch(`${url}/metrics`);
      expect(response.status).toBe(200);
      const body = await response.text();
      expect(body).toContain('drawdown_http_requests_total');
      const check = spawnSync(promtool, ['check', 'metrics'], { input: body, encoding: 'utf8', timeout: 30_000 });
      expect({ status: check.status, stdout: check.stdout, stderr: check.stderr }).toEqual({
        status: 0,
        stdout: '',
        stderr: '',
      });
    },
  );

  it('given start, then its banner is a pino line at info with the URL, in the message and as a field', () => {
    const { service, url } = processes.find((p) => p.kind === 'start')!;
    const banner = jsonLines(service.stdout(), 'start stdout').find((l) =>
      String(l.msg).startsWith('drawdown is running'),
    );
    expect(banner).toMatchObject({ level: 30, url, dataDir: `${dir.path}/all-in-one` });
    expect(String(banner!.msg)).toContain(url);
  });

  it('given every process, when it has served, refused and stopped, then every line of its stdout and stderr is one JSON object with a level, a time and a message', async () => {
    for (const { service } of processes) await service.stop();
    for (const { kind, service } of processes) {
      const lines = [
        ...jsonLines(service.stdout(), `${kind} stdout`),
        ...jsonLines(service.stderr(), `${kind} stderr`),
      ];
      expect(lines.length).toBeGreaterThan(2);
      for (const line of lines)
        expect({ kind, line }).toMatchObject({
          kind,
          line: { level: expect.any(Number), time: expect.any(Number), msg: expect.any(String) },
        });
      // The refused batch is in the log at info, so the request id a client was given can be found.
      if (kind === 'start' || kind === 'ingest')
        expect(lines).toContainEqual(expect.objectContaining({ level: 30, msg: 'request rejected', status: 422 }));
      expect(lines).toContainEqual(expect.objectContaining({ msg: 'stopping', signal: 'SIGTERM' }));
    }
  });
});
