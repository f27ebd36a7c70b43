/**
 * Traces (docs/metrics.md "Traces"): a batch's W3C traceparent travels from
 * the gateway through the JetStream message headers to the rater, and both
 * processes' log lines about it carry its trace_id; with
 * DRAWDOWN_OTLP_TRACES_ENDPOINT set, their spans reach an OTLP/HTTP receiver
 * under that trace. Real nats-server, chDB, and `drawdown ingest` and
 * `drawdown rater` as child processes.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../deploy/free-port.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { partitionOfCustomer } from '../shared/events/partition.js';
import {
  packr,
  repoRoot,
  spawnDrawdown,
  startNats,
  tempDir,
  waitForStreamDrained,
  type ChildService,
} from './harness.js';

type Line = Record<string, unknown>;

function lines(output: string): Line[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Line);
}

async function eventually<T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const hex = (bytes: number): string => randomBytes(bytes).toString('hex');

/** Two customers on different stream partitions (of 2), so a batch of both is published as two parts. */
const customers = ((): [string, string] => {
  const first = 'trace-a';
  for (let i = 0; ; i++) {
    const other = `trace-b${i}`;
    if (partitionOfCustomer(other, 2) !== partitionOfCustomer(first, 2)) return [first, other];
  }
})();

let eventNo = 0;
function batch(): unknown[] {
  return customers.map((customer) => ({
    id: `trace-${eventNo++}`,
    customer,
    meter: 'gpt-4o.input_tokens',
    quantity: 10,
    timestamp: Date.now(),
  }));
}

async function post(base: string, headers: Record<string, string>): Promise<Response> {
  return fetch(`${base}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/msgpack', ...headers },
    body: packr.pack(batch()),
  });
}

/** A gateway and a rater as separate processes against one nats-server, logging at debug. */
async function startPair(
  name: string,
  env: Record<string, string> = {},
): Promise<{
  nats: NatsServerProcess;
  gateway: ChildService;
  rater: ChildService;
  url: string;
  stop(): Promise<void>;
}> {
  const dir = tempDir(name);
  const nats = await startNats(dir.path);
  const port = await freePort();
  const common = { DRAWDOWN_NATS_URL: nats.url, DRAWDOWN_PARTITIONS: '2', DRAWDOWN_LOG_LEVEL: 'debug', ...env };
  const gateway = spawnDrawdown('ingest', { ...common, DRAWDOWN_HTTP_PORT: String(port) });
  const rater = spawnDrawdown('rater', {
    ...common,
    DRAWDOWN_CLICKHOUSE_URL: `chdb:${dir.path}/chdb`,
    DRAWDOWN_RATER_THREADS: '1',
    DRAWDOWN_FLUSH_INTERVAL_MS: '100',
  });
  const url = `http://127.0.0.1:${port}`;
  await eventually('the gateway to listen', () =>
    lines(gateway.output()).some((l) => l.msg === 'listening') ? true : undefined,
  );
  await eventually('both rater partitions', () =>
    lines(rater.output()).filter((l) => l.msg === 'partition consumer ready').length === 2 ? true : undefined,
  );
  return {
    nats,
    gateway,
    rater,
    url,
    async stop() {
      await gateway.stop();
      await rater.stop();
      await nats.stop();
      dir.remove();
    },
  };
}

describe('OpenTelemetry stays unloaded by default', () => {
  it('is imported at run time only by shared/tracing.ts, dynamically, when DRAWDOWN_OTLP_TRACES_ENDPOINT is set', () => {
    const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '*.ts'], {
      cwd: repoRoot,
      encoding: 'utf8',
    })
      .split('\n')
      .filter((f) => f !== '' && !f.startsWith('test/') && !f.endsWith('.test.ts') && !f.startsWith('node_modules/'));
    const loads: string[] = [];
    for (const file of files) {
      const text = readFileSync(`${repoRoot}/${file}`, 'utf8');
      for (const m of text.matchAll(
        /^(import(?! type)[^;]*?from|export[^;]*?from|[^\n]*?import\()\s*['"](@opentelemetry\/[^'"]+)['"]/gm,
      ))
        loads.push(`${file}: ${m[1]!.endsWith('import(') ? 'dynamic' : 'static'} ${m[2]}`);
    }
    expect(loads.length).toBeGreaterThan(0);
    expect(loads.filter((l) => !l.startsWith('shared/tracing.ts: dynamic '))).toEqual([]);
  });
});

describe('trace ids in the logs (export off, the default)', () => {
  let pair: Awaited<ReturnType<typeof startPair>>;

  beforeAll(async () => {
    pair = await startPair('traces-logs');
  }, 60_000);

  afterAll(async () => {
    await pair?.stop();
  });

  it('given a batch with a traceparent, when it is rated, then the gateway and the rater log its trace_id for it', async () => {
    const traceId = hex(16);
    const response = await post(pair.url, {
      traceparent: `00-${traceId}-${hex(8)}-01`,
      tracestate: 'congo=t61rcWkgMzE',
      'x-request-id': 'traced-1',
    });
    expect(response.status).toBe(202);
    expect(((await response.json()) as { parts: number }).parts).toBe(2);
    await waitForStreamDrained(pair.nats.url);

    const gatewayLines = lines(pair.gateway.output()).filter((l) => l.requestId === 'traced-1');
    expect(gatewayLines).toContainEqual(
      expect.objectContaining({ msg: 'request completed', status: 202, trace_id: traceId }),
    );
    // Both parts, one per partition, carried the header: each partition's flush names the trace.
    const flushes = await eventually('a flush line per partition', () => {
      const found = lines(pair.rater.output()).filter((l) => l.msg === 'flush committed' && l.trace_id === traceId);
      return new Set(found.map((l) => l.partition)).size === 2 ? found : undefined;
    });
    expect(flushes.map((l) => l.partition).sort()).toEqual([0, 1]);
  });

  it('given a request without a traceparent, then no trace is invented: its log lines carry none', async () => {
    const response = await post(pair.url, { 'x-request-id': 'untraced-1' });
    expect(response.status).toBe(202);
    const logged = await eventually('the request’s log line', () =>
      lines(pair.gateway.output()).find((l) => l.requestId === 'untraced-1' && l.msg === 'request completed'),
    );
    expect(logged).not.toHaveProperty('trace_id');
  });

  it('given an invalid traceparent, when sent, then it is ignored: 202, and no log line of the gateway or the rater has a trace id for it', async () => {
    await waitForStreamDrained(pair.nats.url);
    const raterBefore = pair.rater.output().length;
    const invalid = [
      `00-${'0'.repeat(32)}-${hex(8)}-01`,
      `00-${hex(16).toUpperCase()}-${hex(8)}-01`,
      `ff-${hex(16)}-${hex(8)}-01`,
      `00-${hex(16)}-${hex(8)}`,
    ];
    for (const [i, traceparent] of invalid.entries()) {
      const response = await post(pair.url, { traceparent, tracestate: 'congo=1', 'x-request-id': `invalid-${i}` });
      expect(response.status, traceparent).toBe(202);
    }
    await waitForStreamDrained(pair.nats.url);
    const flushed = await eventually('the flushes of the invalid-traceparent batches', () => {
      const found = lines(pair.rater.output().slice(raterBefore)).filter((l) => l.msg === 'flush committed');
      return found.reduce((sum, l) => sum + (l.messages as number), 0) >= invalid.length * 2 ? found : undefined;
    });
    expect(flushed.filter((l) => 'trace_id' in l || 'trace_ids' in l)).toEqual([]);
    const gatewayLines = await eventually('a request line each', () => {
      const found = lines(pair.gateway.output()).filter((l) => String(l.requestId).startsWith('invalid-'));
      return found.length === invalid.length ? found : undefined;
    });
    expect(gatewayLines.filter((l) => 'trace_id' in l)).toEqual([]);
  });
});

interface ExportedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  links: { traceId: string; spanId: string }[];
  attributes: Record<string, unknown>;
}

/** An OTLP/HTTP JSON receiver: what an OpenTelemetry collector's otlphttp receiver accepts on /v1/traces. */
interface Receiver {
  server: Server;
  url: string;
  spans: ExportedSpan[];
  contentTypes: Set<string>;
}

async function startReceiver(): Promise<Receiver> {
  const spans: ExportedSpan[] = [];
  const contentTypes = new Set<string>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      contentTypes.add(String(req.headers['content-type']));
      if (req.url !== '/v1/traces' || req.headers['content-type'] !== 'application/json') {
        res.writeHead(415).end();
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans: {
          resource: { attributes: { key: string; value: { stringValue?: string } }[] };
          scopeSpans: { spans: (Omit<ExportedSpan, 'service' | 'attributes' | 'links'> & Record<string, any>)[] }[];
        }[];
      };
      for (const resource of body.resourceSpans) {
        const service = resource.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
        for (const scope of resource.scopeSpans)
          for (const span of scope.spans)
            spans.push({
              service,
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? '',
              name: span.name,
              kind: span.kind,
              links: (span.links ?? []).map((l: { traceId: string; spanId: string }) => ({
                traceId: l.traceId,
                spanId: l.spanId,
              })),
              attributes: Object.fromEntries(
                (span.attributes ?? []).map((a: { key: string; value: Record<string, unknown> }) => [
                  a.key,
                  Object.values(a.value)[0],
                ]),
              ),
            });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/v1/traces`, spans, contentTypes };
}

// OTLP span kinds.
const server = 2;
const client = 3;
const producer = 4;
const consumer = 5;

describe('span export over OTLP/HTTP (DRAWDOWN_OTLP_TRACES_ENDPOINT)', () => {
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let pair: Awaited<ReturnType<typeof startPair>>;

  beforeAll(async () => {
    receiver = await startReceiver();
    // A short export delay so the test need not wait out the SDK's default 5 s.
    pair = await startPair('traces-otlp', {
      DRAWDOWN_OTLP_TRACES_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '200',
    });
  }, 60_000);

  afterAll(async () => {
    await pair?.stop();
    await new Promise((r) => receiver?.server.close(r));
  });

  it('given a traced batch, then the gateway span is the caller’s child, and the publish and the rater’s spans are in the same trace', async () => {
    const traceId = hex(16);
    const parentId = hex(8);
    const response = await post(pair.url, { traceparent: `00-${traceId}-${parentId}-01` });
    expect(response.status).toBe(202);

    const spans = await eventually('the gateway’s and the rater’s spans', () => {
      const inTrace = receiver.spans.filter((s) => s.traceId === traceId);
      const flushes = inTrace.filter((s) => s.name === 'INSERT usage_minute');
      return flushes.length === 2 && inTrace.filter((s) => s.kind === consumer).length === 2 ? inTrace : undefined;
    });
    const request = spans.find((s) => s.name === 'POST /v1/events')!;
    expect(request).toMatchObject({ service: 'drawdown-ingest', kind: server, parentSpanId: parentId });
    expect(request.attributes['http.response.status_code']).toBe(202);
    const publish = spans.find((s) => s.kind === producer)!;
    expect(publish).toMatchObject({ service: 'drawdown-ingest', parentSpanId: request.spanId });
    // One consumer span per part (partition), each under the publish; each flush under its batch's span.
    const batches = spans.filter((s) => s.kind === consumer);
    expect(batches.map((s) => ({ service: s.service, parent: s.parentSpanId }))).toEqual([
      { service: 'drawdown-rater', parent: publish.spanId },
      { service: 'drawdown-rater', parent: publish.spanId },
    ]);
    expect(batches.map((s) => s.attributes['drawdown.partition']).sort()).toEqual([0, 1]);
    for (const flush of spans.filter((s) => s.name === 'INSERT usage_minute')) {
      expect(flush).toMatchObject({ service: 'drawdown-rater', kind: client });
      expect(batches.map((s) => s.spanId)).toContain(flush.parentSpanId);
      expect(flush.links).toEqual([{ traceId, spanId: flush.parentSpanId }]);
    }
    expect([...receiver.contentTypes]).toEqual(['application/json']);
  });

  it('given no traceparent, when export is on, then the gateway starts a trace and its log lines carry that trace id', async () => {
    const response = await post(pair.url, { 'x-request-id': 'otlp-untraced' });
    expect(response.status).toBe(202);
    const logged = await eventually('the request’s log line', () =>
      lines(pair.gateway.output()).find((l) => l.requestId === 'otlp-untraced' && l.msg === 'request completed'),
    );
    expect(logged.trace_id).toMatch(/^[0-9a-f]{32}$/);
    const root = await eventually('the request’s span', () =>
      receiver.spans.find((s) => s.traceId === logged.trace_id && s.name === 'POST /v1/events'),
    );
    expect(root.parentSpanId).toBe('');
    await eventually('the rater’s span in the new trace', () =>
      receiver.spans.find((s) => s.traceId === logged.trace_id && s.service === 'drawdown-rater'),
    );
  });
});
