/**
 * `npm run bench`: ingest and end-to-end throughput of drawdown, measured in
 * the same run as two baselines on the same bytes, so the figures are ratios
 * that survive a noisy machine:
 *   (a) raw JetStream publish of the batch bytes from a plain nats.js client;
 *   (b) a no-op Node HTTP server that only reads the bodies (autocannon, same load).
 * Then drawdown's gateway under the same autocannon load, and the time until
 * the rater has committed everything to ClickHouse, with the totals checked
 * exactly. Results: bench/results/latest.{json,md}, a line in history.md.
 *
 * Flags: --duration-s 10 --batch-events 1000 --connections 16 --backend chdb|server
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Decimal } from 'decimal.js';
import { connect } from '@nats-io/transport-node';
import { DiscardPolicy, jetstream, jetstreamManager, StorageType } from '@nats-io/jetstream';
import { parseArgs } from '../shared/config.js';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { NatsServerProcess } from '../deploy/nats-server.js';
import { procStats } from './proc-stats.js';
import { benchCustomers, makeBatch } from './workload.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const log = (line: string): void => void process.stdout.write(`[bench] ${line}\n`);

function intFlag(flags: Map<string, string>, name: string, fallback: number, min: number, max: number): number {
  const value = Number(flags.get(name) ?? fallback);
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${name} must be an integer ${min}–${max}`);
  return value;
}

async function rawJetStreamBaseline(natsUrl: string, body: Buffer, durationMs: number, inFlight: number): Promise<number> {
  const nc = await connect({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: 'BENCH_RAW', subjects: ['bench.raw'], storage: StorageType.File, max_bytes: 2 * 1024 ** 3, discard: DiscardPolicy.Old });
  const js = jetstream(nc);
  let acked = 0;
  const deadline = Date.now() + durationMs;
  // `inFlight` publishers, each waiting for its ack before the next: the same
  // concurrency autocannon's connections give the gateway.
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (Date.now() < deadline) {
        await js.publish('bench.raw', body);
        acked++;
      }
    }),
  );
  await jsm.streams.delete('BENCH_RAW');
  await nc.close();
  return acked / (durationMs / 1000);
}

function spawnNode(args: string[], readyPattern: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const timer = setTimeout(() => reject(new Error(`not ready within 60 s:\n${output}`)), 60_000);
    const onData = (d: Buffer): void => {
      output += d.toString();
      const match = readyPattern.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve({ child, match });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    child.once('exit', (code) => reject(new Error(`exited with ${code} before ready:\n${output}`)));
  });
}

async function load(url: string, body: Buffer, durationS: number, connections: number): Promise<autocannon.Result> {
  return autocannon({
    url,
    method: 'POST',
    headers: { 'content-type': 'application/msgpack' },
    body,
    connections,
    duration: durationS,
  });
}

/**
 * Batches the stream stored. autocannon's 2xx count misses requests still in
 * flight when its clock ran out, which the gateway did accept; the stream's
 * last sequence counts every accepted batch (duplicates are never stored).
 */
async function storedBatches(natsUrl: string): Promise<number> {
  const nc = await connect({ servers: natsUrl });
  try {
    return (await (await jetstreamManager(nc)).streams.info('DRAWDOWN_EVENTS')).state.last_seq;
  } finally {
    await nc.close();
  }
}

async function waitDrained(natsUrl: string, timeoutMs: number): Promise<number> {
  const nc = await connect({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + timeoutMs;
  let lastReport = 0;
  try {
    for (;;) {
      const { messages } = (await jsm.streams.info('DRAWDOWN_EVENTS')).state;
      if (messages === 0) return Date.now();
      if (Date.now() > deadline) throw new Error(`stream still holds ${messages} batches after ${timeoutMs} ms`);
      if (Date.now() - lastReport > 2_000) {
        log(`  rater catching up: ${messages} batches left in the stream`);
        lastReport = Date.now();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await nc.close();
  }
}

async function main(): Promise<void> {
  const { flags } = parseArgs(process.argv.slice(2));
  const durationS = intFlag(flags, '--duration-s', 10, 1, 600);
  const batchEvents = intFlag(flags, '--batch-events', 1000, 1, 10_000);
  const connections = intFlag(flags, '--connections', 16, 1, 512);
  const backend = flags.get('--backend') ?? 'chdb';
  if (backend !== 'chdb' && backend !== 'server') throw new RangeError('--backend must be chdb or server');

  const dir = mkdtempSync(join(tmpdir(), 'drawdown-bench-'));
  const children: ChildProcess[] = [];
  let nats: NatsServerProcess | undefined;
  let clickhouse: ClickHouseServerProcess | undefined;
  try {
    const batch = makeBatch(batchEvents, Date.now() - 120_000);
    log(`batch: ${batchEvents} events, ${batch.body.length} bytes of MessagePack; ${durationS} s per phase, ${connections} connections, ClickHouse back end: ${backend}`);
    nats = await NatsServerProcess.start({ dir: join(dir, 'nats'), maxPayloadBytes: 16 * 1024 * 1024 });

    log('(a) raw JetStream publish of the same bytes …');
    const rawBatchesPerS = await rawJetStreamBaseline(nats.url, batch.body, durationS * 1000, connections);

    log('(b) no-op HTTP server reading the same bodies …');
    const noop = await spawnNode(
      ['-e', "const s=require('http').createServer((q,r)=>{q.on('data',()=>{});q.on('end',()=>{r.writeHead(202,{'content-type':'application/json'});r.end('{}')})});s.listen(0,'127.0.0.1',()=>console.log('port '+s.address().port))"],
      /port (\d+)/,
    );
    children.push(noop.child);
    const noopResult = await load(`http://127.0.0.1:${noop.match[1]}/v1/events`, batch.body, durationS, connections);
    noop.child.kill('SIGTERM');

    let clickhouseUrl: string[] = [];
    if (backend === 'server') {
      clickhouse = await ClickHouseServerProcess.start({ dir: join(dir, 'clickhouse') });
      clickhouseUrl = ['--clickhouse-url', clickhouse.url];
    }
    log('(c) drawdown gateway + rater (all-in-one process) under the same load …');
    const drawdown = await spawnNode(
      [join(repoRoot, 'dist/deploy/cli.js'), 'start', '--nats-url', nats.url, '--data-dir', join(dir, 'drawdown'), '--http-port', '0', '--log-level', 'warn', ...clickhouseUrl],
      /running at (http:\/\/[^\s]+)/,
    );
    children.push(drawdown.child);
    const base = drawdown.match[1]!;
    const startedAt = Date.now();
    const ingest = await load(`${base}/v1/events`, batch.body, durationS, connections);
    const ingestDoneAt = Date.now();
    const drainedAt = await waitDrained(nats.url, 10 * 60_000);
    const acceptedBatches = await storedBatches(nats.url);

    log('verifying totals in ClickHouse …');
    let exact = true;
    for (let c = 0; c < benchCustomers; c++) {
      const customer = `cust-${c}`;
      const response = await fetch(`${base}/v1/customers/${customer}/usage?granularity=day&from=0`);
      const usage = ((await response.json()) as { usage: { meter: string; quantity: string }[] }).usage;
      const tokens = usage.filter((u) => u.meter === 'gpt-4o.input_tokens').reduce((sum, u) => sum.plus(u.quantity), new Decimal(0));
      const want = (batch.tokensPerCustomer.get(customer) ?? new Decimal(0)).times(acceptedBatches);
      if (!tokens.equals(want)) {
        exact = false;
        log(`  MISMATCH ${customer}: ClickHouse has ${tokens.toFixed()} tokens, ${want.toFixed()} were accepted`);
      }
    }
    const stats = procStats(drawdown.child.pid!);
    const natsStats = nats.pid === undefined ? undefined : procStats(nats.pid);
    drawdown.child.kill('SIGTERM');

    const gatewayEventsPerS = (acceptedBatches * batchEvents) / ((ingestDoneAt - startedAt) / 1000);
    const results = {
      date: new Date().toISOString(),
      machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
      settings: { durationS, batchEvents, batchBytes: batch.body.length, connections, backend },
      baselines: {
        rawJetStreamEventsPerS: Math.round(rawBatchesPerS * batchEvents),
        noopHttpEventsPerS: Math.round(noopResult.requests.average * batchEvents),
      },
      gateway: {
        eventsPerS: Math.round(gatewayEventsPerS),
        acceptedBatches,
        rejected: ingest.non2xx,
        errors: ingest.errors,
        latencyMs: { p50: ingest.latency.p50, p99: ingest.latency.p99 },
        ratioToRawJetStream: Number((gatewayEventsPerS / (rawBatchesPerS * batchEvents)).toFixed(3)),
        ratioToNoopHttp: Number((gatewayEventsPerS / (noopResult.requests.average * batchEvents)).toFixed(3)),
      },
      endToEnd: {
        eventsPerS: Math.round((acceptedBatches * batchEvents) / ((drainedAt - startedAt) / 1000)),
        raterCatchUpS: Number(((drainedAt - ingestDoneAt) / 1000).toFixed(2)),
        totalsExact: exact,
      },
      drawdownProcess: { cpuSeconds: stats.cpuSeconds, peakRssMiB: Math.round(stats.peakRssBytes / 1024 / 1024) },
      natsServer: natsStats ? { cpuSeconds: natsStats.cpuSeconds, peakRssMiB: Math.round(natsStats.peakRssBytes / 1024 / 1024) } : null,
    };
    const resultsDir = join(repoRoot, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
    const md = [
      `# Benchmark ${results.date}`,
      '',
      `${results.machine.cpus} CPUs, Node ${results.machine.node}; ${batchEvents}-event batches (${batch.body.length} B), ${connections} connections, ${durationS} s per phase, ClickHouse: ${backend}.`,
      '',
      '| measure | events/s | ratio |',
      '|---|---:|---:|',
      `| (a) raw JetStream publish, same bytes | ${results.baselines.rawJetStreamEventsPerS.toLocaleString('en')} | 1 |`,
      `| (b) no-op HTTP server, same bodies | ${results.baselines.noopHttpEventsPerS.toLocaleString('en')} | |`,
      `| gateway: HTTP → JetStream acked | ${results.gateway.eventsPerS.toLocaleString('en')} | ${results.gateway.ratioToRawJetStream} of (a), ${results.gateway.ratioToNoopHttp} of (b) |`,
      `| end to end: HTTP → aggregated in ClickHouse | ${results.endToEnd.eventsPerS.toLocaleString('en')} | totals exact: ${exact} |`,
      '',
      `Gateway latency p50 ${results.gateway.latencyMs.p50} ms, p99 ${results.gateway.latencyMs.p99} ms; ${results.gateway.rejected} non-2xx, ${results.gateway.errors} errors. Rater caught up ${results.endToEnd.raterCatchUpS} s after the load stopped. drawdown process: ${results.drawdownProcess.cpuSeconds} CPU s, peak RSS ${results.drawdownProcess.peakRssMiB} MiB.`,
      '',
    ].join('\n');
    writeFileSync(join(resultsDir, 'latest.md'), md);
    appendFileSync(
      join(resultsDir, 'history.md'),
      `| ${results.date.slice(0, 16)} | ${backend} | ${batchEvents} | ${results.gateway.eventsPerS} | ${results.gateway.ratioToRawJetStream} | ${results.gateway.ratioToNoopHttp} | ${results.endToEnd.eventsPerS} | ${results.gateway.latencyMs.p99} | ${exact} |\n`,
    );
    process.stdout.write(`\n${md}`);
    if (!exact) process.exitCode = 1;
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await clickhouse?.stop();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
