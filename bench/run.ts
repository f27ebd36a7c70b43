/**
 * `npm run bench`: drawdown's ingest and end-to-end throughput, measured in
 * the same run as two baselines on the same bytes, so the figures are ratios
 * that survive a noisy, shared machine:
 *   (a) raw JetStream publish of the batch bytes from a plain nats.js client;
 *   (b) a no-op Node HTTP server that only reads the bodies (same autocannon load);
 *   (c) a minimal HTTP → JetStream forwarder (bench/forwarder.ts): bodies
 *       published unchanged, nothing checked — the ceiling for any Node gateway.
 * The gateway (`drawdown ingest`) and the rater (`drawdown rater`) run as
 * separate child processes, so CPU and memory are reported per process.
 *
 * Phases:
 *   1. per batch size: baselines (a), (b), (c) and the gateway's peak (rater
 *      not running: ingest alone), with the machine's busy CPU in each (is
 *      the machine the limit, or one process?); the headline size runs them
 *      alternately over --rounds rounds and reports the median of each
 *      round's ratios, so drifting load on the shared machine cancels out;
 *   2. gateway latency at 80 % of the headline peak (autocannon overallRate);
 *   3. per ClickHouse back end: the rater alone draining a queued backlog, then
 *      a sustained end-to-end phase (gateway + rater),
 *      RSS and stream lag sampled every second, events/s from the first
 *      request until the rater committed everything, totals checked exactly.
 * Results: bench/results/latest.{json,md}, lines in history.md.
 *
 * Flags: --quick (3 s phases, 10 s sustained, 1 round), --phase-s 10, --rounds 3, --sustained-s 60,
 * --connections 16, --backend chdb|server|both|none (none: ingest phases only), --sizes 1,100,1000,10000,
 * --headline 1000, --profile gateway,rater (node --cpu-prof into
 * bench/results/profiles/), --no-history (a scratch run: print only, leave
 * latest.* and history.md alone), --note TEXT (added to the history lines).
 */
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decimal } from 'decimal.js';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { parseArgs } from '../shared/config.js';
import { openStore } from '../shared/clickhouse/open.js';
import { sqlString } from '../shared/sql.js';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { NatsServerProcess } from '../deploy/nats-server.js';
import { repoRoot, startDrawdown, startForwarder, startNoopServer, type Child } from './children.js';
import {
  acceptedEvents,
  failedBatches,
  httpLoad,
  rawJetStreamBaseline,
  scrapeCounter,
  settledAcceptedEvents,
  type LoadResult,
} from './load.js';
import { machineCpuSeconds, mib, procStats, procStatsIfAlive, threadCpuSeconds } from './proc-stats.js';
import { benchCustomers, makeBatch, type BenchBatch } from './workload.js';
import {
  renderMarkdown,
  historyLines,
  type BenchResults,
  type EndToEndResult,
  type SizeResult,
  type SizeRound,
} from './report.js';

const log = (line: string): void =>
  void process.stdout.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const streamName = 'DRAWDOWN_EVENTS';

function intFlag(flags: Map<string, string>, name: string, fallback: number, min: number, max: number): number {
  const value = Number(flags.get(name) ?? fallback);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new RangeError(`${name} must be an integer ${min}–${max}`);
  return value;
}

async function streamState(jsm: JetStreamManager): Promise<{ messages: number; bytes: number }> {
  try {
    const { messages, bytes } = (await jsm.streams.info(streamName)).state;
    return { messages, bytes };
  } catch {
    return { messages: 0, bytes: 0 };
  }
}

async function purgeStream(jsm: JetStreamManager): Promise<void> {
  try {
    await jsm.streams.purge(streamName);
  } catch {
    // No stream yet: nothing to purge.
  }
}

async function waitDrained(jsm: JetStreamManager, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let lastReport = Date.now();
  for (;;) {
    const { messages } = await streamState(jsm);
    if (messages === 0) return Date.now();
    if (Date.now() > deadline) throw new Error(`stream still holds ${messages} batches after ${timeoutMs} ms`);
    if (Date.now() - lastReport > 5_000) {
      log(`  rater catching up: ${messages} stream messages left`);
      lastReport = Date.now();
    }
    await sleep(100);
  }
}

const round = (n: number, digits = 0): number => Number(n.toFixed(digits));

async function main(): Promise<void> {
  const { flags } = parseArgs(process.argv.slice(2));
  const quick = flags.has('--quick');
  const phaseS = intFlag(flags, '--phase-s', quick ? 3 : 10, 1, 600);
  const sustainedS = intFlag(flags, '--sustained-s', quick ? 10 : 60, 1, 3_600);
  const connections = intFlag(flags, '--connections', 16, 1, 512);
  const headline = intFlag(flags, '--headline', 1000, 1, 10_000);
  const sizes = (flags.get('--sizes') ?? '1,100,1000,10000').split(',').map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s < 1 || s > 10_000))
    throw new RangeError('--sizes must be integers 1–10000');
  if (!sizes.includes(headline)) sizes.push(headline);
  const backendFlag = flags.get('--backend') ?? 'both';
  if (!['chdb', 'server', 'both', 'none'].includes(backendFlag))
    throw new RangeError('--backend must be chdb, server, both or none');
  // none: the ingest phases only (baselines, gateway peak, latency), for quick A/B runs of the gateway.
  const backends = (backendFlag === 'both' ? ['chdb', 'server'] : backendFlag === 'none' ? [] : [backendFlag]) as (
    'chdb' | 'server'
  )[];
  const profile = (flags.get('--profile') ?? '').split(',').filter((p) => p !== '');
  if (profile.some((p) => p !== 'gateway' && p !== 'rater'))
    throw new RangeError('--profile must be gateway, rater or gateway,rater');
  const profileDir = join(repoRoot, 'bench', 'results', 'profiles');
  const profileFlags = (who: string): string[] =>
    profile.includes(who)
      ? (mkdirSync(profileDir, { recursive: true }), ['--cpu-prof', '--cpu-prof-dir', profileDir])
      : [];
  // Phases for sizes other than the headline are short: they show the shape, the headline gets the time.
  const sizePhaseS = (size: number): number => (size === headline ? phaseS : Math.max(2, Math.round(phaseS / 3)));
  // The headline's phases alternate over rounds (see below); together they last about 1.5 × phaseS each.
  const headlineRounds = intFlag(flags, '--rounds', quick ? 1 : 3, 1, 20);
  const headlinePhaseS = headlineRounds === 1 ? phaseS : Math.max(2, Math.round(phaseS / 2));

  const dir = mkdtempSync(join(tmpdir(), 'drawdown-bench-'));
  const children: Child[] = [];
  let nats: NatsServerProcess | undefined;
  let clickhouse: ClickHouseServerProcess | undefined;
  let nc: Awaited<ReturnType<typeof connect>> | undefined;
  try {
    const atMs = Date.now() - 120_000;
    const batches = new Map<number, BenchBatch>(sizes.map((size, i) => [size, makeBatch(size, atMs, i)]));
    const head = batches.get(headline)!;
    log(
      `batch sizes ${sizes.join(', ')} (headline ${headline}: ${head.body.length} B); ${phaseS} s headline phases, ${sustainedS} s sustained; ${connections} connections; back ends: ${backends.join(', ')}`,
    );
    nats = await NatsServerProcess.start({
      dir: join(dir, 'nats'),
      maxPayloadBytes: 16 * 1024 * 1024,
      jetstreamMaxFileBytes: 64 * 1024 ** 3,
      logFile: false,
    });
    nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);

    const bySize = new Map<number, SizeResult>();
    // The HTTP baselines and the gateway run side by side, idle but for their phase.
    const noop = await startNoopServer();
    children.push(noop);
    const forwarder = await startForwarder(nats.url);
    children.push(forwarder);
    // Gateway alone: ingest capacity without the rater competing for the cores.
    const gateway = await startDrawdown('ingest', { natsUrl: nats.url, nodeFlags: profileFlags('gateway') });
    children.push(gateway);
    const gatewayUrl = gateway.ready;
    const cores = cpus().length;

    /** One HTTP phase against `pid`'s server: events/s (by autocannon's count), its CPU and the machine's. */
    async function httpPhase(
      url: string,
      pid: number,
      batch: BenchBatch,
      durationS: number,
    ): Promise<{ eventsPerS: number; cpuPerS: number; machineCpuPerS: number; load: LoadResult }> {
      const before = procStats(pid);
      const machineBefore = machineCpuSeconds();
      const load = await httpLoad({ url, batch, durationS, connections });
      const machineAfter = machineCpuSeconds();
      const after = procStats(pid);
      return {
        eventsPerS: round(load.requestsPerS * batch.events),
        cpuPerS: round((after.cpuSeconds - before.cpuSeconds) / durationS, 2),
        machineCpuPerS: round((machineAfter - machineBefore) / durationS, 2),
        load,
      };
    }

    for (const size of sizes) {
      const batch = batches.get(size)!;
      // The headline size alternates its four phases over several rounds, and its
      // ratios are the median of each round's own: the machine's other load drifts
      // over a minute, and a ratio of phases run next to each other cancels most of it.
      const rounds = size === headline ? headlineRounds : 1;
      const durationS = size === headline ? headlinePhaseS : sizePhaseS(size);
      const perRound: SizeRound[] = [];
      let last:
        | {
            gatewayLoad: LoadResult;
            gatewayCpuPerS: number;
            natsCpuPerS: number | null;
            rawNatsCpuPerS: number | null;
            noopCpuPerS: number;
            forwarderCpuPerS: number;
          }
        | undefined;
      for (let round_ = 1; round_ <= rounds; round_++) {
        const tag = rounds > 1 ? ` (round ${round_} of ${rounds})` : '';
        log(`${size}-event batches${tag}, ${durationS} s per phase:`);
        // (a) raw JetStream
        const rawNatsBefore = procStatsIfAlive(nats.pid);
        const rawMachineBefore = machineCpuSeconds();
        const rawPerS = round((await rawJetStreamBaseline(nats.url, batch.body, durationS * 1000, connections)) * size);
        const rawMachine = round((machineCpuSeconds() - rawMachineBefore) / durationS, 2);
        const rawNatsAfter = procStatsIfAlive(nats.pid);
        log(
          `    (a) raw JetStream publish: ${rawPerS.toLocaleString('en')} events/s; machine busy ${rawMachine} of ${cores} CPU s/s`,
        );
        // (b) no-op HTTP
        const noopRun = await httpPhase(`http://127.0.0.1:${noop.ready}/v1/events`, noop.pid, batch, durationS);
        log(
          `    (b) no-op HTTP: ${noopRun.eventsPerS.toLocaleString('en')} events/s; machine busy ${noopRun.machineCpuPerS} CPU s/s`,
        );
        // (c) HTTP → JetStream forwarder: bodies published unchanged, nothing checked.
        const forwardRun = await httpPhase(
          `http://127.0.0.1:${forwarder.ready}/v1/events`,
          forwarder.pid,
          batch,
          durationS,
        );
        await jsm.streams.purge('BENCH_FORWARD').catch(() => undefined);
        log(
          `    (c) forwarder: ${forwardRun.eventsPerS.toLocaleString('en')} events/s = ${round(forwardRun.eventsPerS / rawPerS, 3)} × raw; forwarder ${forwardRun.cpuPerS} CPU s/s; machine busy ${forwardRun.machineCpuPerS} CPU s/s`,
        );
        // The gateway, by its own count of accepted events.
        await purgeStream(jsm);
        const before = await acceptedEvents(gatewayUrl);
        const cpuBefore = procStats(gateway.pid);
        const natsBefore = procStatsIfAlive(nats.pid);
        const machineBefore = machineCpuSeconds();
        const startedAt = Date.now();
        const gatewayLoad = await httpLoad({ url: `${gatewayUrl}/v1/events`, batch, durationS, connections });
        const elapsedS = (Date.now() - startedAt) / 1000;
        const machineAfter = machineCpuSeconds();
        const accepted = (await acceptedEvents(gatewayUrl)) - before;
        const cpuAfter = procStats(gateway.pid);
        const natsAfter = procStatsIfAlive(nats.pid);
        const gatewayPerS = round(accepted / elapsedS);
        const gatewayCpuPerS = round((cpuAfter.cpuSeconds - cpuBefore.cpuSeconds) / elapsedS, 2);
        const gatewayMachine = round((machineAfter - machineBefore) / elapsedS, 2);
        perRound.push({
          rawJetStreamEventsPerS: rawPerS,
          noopHttpEventsPerS: noopRun.eventsPerS,
          forwarderEventsPerS: forwardRun.eventsPerS,
          gatewayEventsPerS: gatewayPerS,
          rawMachineCpuPerS: rawMachine,
          noopMachineCpuPerS: noopRun.machineCpuPerS,
          forwarderMachineCpuPerS: forwardRun.machineCpuPerS,
          gatewayMachineCpuPerS: gatewayMachine,
        });
        const gatewayThreads = [...threadCpuSeconds(gateway.pid)]
          .filter(([, cpu]) => cpu >= 0.05)
          .sort((a, b) => b[1] - a[1]);
        log(
          `    gateway: ${gatewayPerS.toLocaleString('en')} events/s = ${round(gatewayPerS / rawPerS, 3)} × raw JetStream, ${round(gatewayPerS / noopRun.eventsPerS, 3)} × no-op HTTP, ${round(gatewayPerS / forwardRun.eventsPerS, 3)} × forwarder; p99 ${gatewayLoad.latencyMs.p99} ms; gateway ${gatewayCpuPerS} CPU s/s; machine busy ${gatewayMachine} CPU s/s; ${gatewayLoad.non2xx} non-2xx, ${gatewayLoad.errors} errors`,
        );
        log(
          `    gateway CPU by thread (whole life so far): ${gatewayThreads.map(([name, cpu]) => `${name} ${cpu.toFixed(1)} s`).join(', ')}`,
        );
        last = {
          gatewayLoad,
          gatewayCpuPerS,
          natsCpuPerS:
            natsBefore && natsAfter ? round((natsAfter.cpuSeconds - natsBefore.cpuSeconds) / elapsedS, 2) : null,
          rawNatsCpuPerS:
            rawNatsBefore && rawNatsAfter
              ? round((rawNatsAfter.cpuSeconds - rawNatsBefore.cpuSeconds) / durationS, 2)
              : null,
          noopCpuPerS: noopRun.cpuPerS,
          forwarderCpuPerS: forwardRun.cpuPerS,
        };
      }
      const median = (pick: (r: SizeRound) => number): number => {
        const xs = perRound.map(pick).sort((a, b) => a - b);
        return xs.length % 2 === 1 ? xs[(xs.length - 1) / 2]! : (xs[xs.length / 2 - 1]! + xs[xs.length / 2]!) / 2;
      };
      const result: SizeResult = {
        batchEvents: size,
        batchBytes: batch.body.length,
        phaseS: durationS,
        rounds: perRound,
        rawJetStreamEventsPerS: round(median((r) => r.rawJetStreamEventsPerS)),
        natsCpuPerS: last!.rawNatsCpuPerS,
        noopHttpEventsPerS: round(median((r) => r.noopHttpEventsPerS)),
        noopCpuPerS: last!.noopCpuPerS,
        forwarderEventsPerS: round(median((r) => r.forwarderEventsPerS)),
        forwarderCpuPerS: last!.forwarderCpuPerS,
        gatewayEventsPerS: round(median((r) => r.gatewayEventsPerS)),
        ratioToRawJetStream: round(
          median((r) => r.gatewayEventsPerS / r.rawJetStreamEventsPerS),
          3,
        ),
        ratioToNoopHttp: round(
          median((r) => r.gatewayEventsPerS / r.noopHttpEventsPerS),
          3,
        ),
        ratioToForwarder: round(
          median((r) => r.gatewayEventsPerS / r.forwarderEventsPerS),
          3,
        ),
        forwarderToRawJetStream: round(
          median((r) => r.forwarderEventsPerS / r.rawJetStreamEventsPerS),
          3,
        ),
        rawMachineCpuPerS: round(
          median((r) => r.rawMachineCpuPerS),
          2,
        ),
        noopMachineCpuPerS: round(
          median((r) => r.noopMachineCpuPerS),
          2,
        ),
        forwarderMachineCpuPerS: round(
          median((r) => r.forwarderMachineCpuPerS),
          2,
        ),
        gatewayMachineCpuPerS: round(
          median((r) => r.gatewayMachineCpuPerS),
          2,
        ),
        gatewayLatencyMs: { p50: last!.gatewayLoad.latencyMs.p50, p99: last!.gatewayLoad.latencyMs.p99 },
        gatewayCpuPerS: last!.gatewayCpuPerS,
        gatewayNatsCpuPerS: last!.natsCpuPerS,
        non2xx: last!.gatewayLoad.non2xx,
        errors: last!.gatewayLoad.errors,
      };
      bySize.set(size, result);
      if (rounds > 1)
        log(
          `    median of ${rounds} rounds: gateway ${result.gatewayEventsPerS.toLocaleString('en')} events/s = ${result.ratioToRawJetStream} × raw JetStream, ${result.ratioToForwarder} × forwarder (forwarder ${result.forwarderToRawJetStream} × raw)`,
        );
    }
    await noop.stop();
    await forwarder.stop();

    // Latency at 80 % of the headline peak.
    await purgeStream(jsm);
    const peak = bySize.get(headline)!.gatewayEventsPerS;
    const targetRate = Math.max(1, Math.round((0.8 * peak) / headline));
    log(`gateway latency at 80 % of peak: ${targetRate} requests/s of ${headline} events, ${phaseS} s …`);
    const latencyBefore = await acceptedEvents(gatewayUrl);
    const latencyStart = Date.now();
    const latencyRun: LoadResult = await httpLoad({
      url: `${gatewayUrl}/v1/events`,
      batch: head,
      durationS: phaseS,
      connections,
      overallRate: targetRate,
    });
    const latencyAchieved = ((await acceptedEvents(gatewayUrl)) - latencyBefore) / ((Date.now() - latencyStart) / 1000);
    log(
      `    achieved ${round(latencyAchieved).toLocaleString('en')} events/s; p50 ${latencyRun.latencyMs.p50} ms, p99 ${latencyRun.latencyMs.p99} ms`,
    );
    await purgeStream(jsm);

    const endToEnd: EndToEndResult[] = [];
    for (const [index, backend] of backends.entries()) {
      let clickhouseUrl: string;
      if (backend === 'server') {
        log('starting clickhouse-server …');
        clickhouse = await ClickHouseServerProcess.start({ dir: join(dir, 'clickhouse') });
        clickhouseUrl = clickhouse.url;
      } else {
        clickhouseUrl = `chdb:${join(dir, `chdb-${index}`)}`;
      }
      // Rater alone: a backlog queued with no rater running, then drained — its capacity without the gateway competing.
      const totalsBefore = await acceptedEvents(gatewayUrl);
      log(
        `rater drain on ${backend}: ${phaseS} s of ${headline}-event batches queued, then the rater alone drains them …`,
      );
      await httpLoad({ url: `${gatewayUrl}/v1/events`, batch: head, durationS: phaseS, connections });
      const backlogAtEnd = (await acceptedEvents(gatewayUrl)) - totalsBefore;
      const backlog = (await settledAcceptedEvents(gatewayUrl)) - totalsBefore;
      if (backlog !== backlogAtEnd)
        log(
          `    ${(backlog - backlogAtEnd).toLocaleString('en')} events were stored by requests still in flight when the load stopped`,
        );
      const rater = await startDrawdown('rater', {
        natsUrl: nats.url,
        clickhouseUrl,
        nodeFlags: profileFlags('rater'),
      });
      children.push(rater);
      const drainStart = Date.now();
      const drainCpu0 = procStats(rater.pid).cpuSeconds;
      await waitDrained(jsm, 15 * 60_000);
      const drainS = (Date.now() - drainStart) / 1000;
      const drainCpuS = procStats(rater.pid).cpuSeconds - drainCpu0;
      const threads = [...threadCpuSeconds(rater.pid)].filter(([, cpu]) => cpu >= 0.05).sort((a, b) => b[1] - a[1]);
      log(
        `    rater CPU by thread (whole life so far): ${threads.map(([name, cpu]) => `${name} ${cpu.toFixed(1)} s`).join(', ')}`,
      );
      const raterAlone = {
        backlogEvents: backlog,
        eventsPerS: round(backlog / drainS),
        cpuPerS: round(drainCpuS / drainS, 2),
        cpuUsPerEvent: round((drainCpuS * 1e6) / backlog, 2),
      };
      log(
        `    ${raterAlone.eventsPerS.toLocaleString('en')} events/s drained by the rater alone (${raterAlone.cpuPerS} CPU s/s, ${raterAlone.cpuUsPerEvent} µs CPU per event)`,
      );
      log(
        `end to end on ${backend}: ${sustainedS} s of ${headline}-event batches at full speed, then until the rater committed everything …`,
      );
      const samples: EndToEndResult['samples'] = [];
      const gatewayCpu0 = procStats(gateway.pid).cpuSeconds;
      const raterCpu0 = procStats(rater.pid).cpuSeconds;
      const natsCpu0 = procStatsIfAlive(nats.pid)?.cpuSeconds ?? 0;
      // chDB runs inside the rater; clickhouse-server is a process of its own.
      const clickhouseCpu0 = procStatsIfAlive(clickhouse?.pid)?.cpuSeconds ?? 0;
      const before = await acceptedEvents(gatewayUrl);
      const startedAt = Date.now();
      const loadCpu0 = process.cpuUsage();
      let sampling = true;
      const sampler = (async () => {
        let next = startedAt + 1000;
        while (sampling) {
          await sleep(Math.max(0, next - Date.now()));
          next += 1000;
          if (!sampling) break;
          const g = procStatsIfAlive(gateway.pid);
          const r = procStatsIfAlive(rater.pid);
          const s = await streamState(jsm);
          const accepted = (await acceptedEvents(gatewayUrl).catch(() => before)) - before;
          // The main threads' V8 heaps, to tell JavaScript memory from native (chDB, buffers, worker threads).
          const heapMiB = async (url: string): Promise<number> =>
            mib(await scrapeCounter(url, 'drawdown_nodejs_heap_size_used_bytes').catch(() => 0));
          const sample = {
            tS: Math.round((Date.now() - startedAt) / 1000),
            acceptedEvents: accepted,
            lagMessages: s.messages,
            lagMiB: mib(s.bytes),
            gatewayRssMiB: g ? mib(g.rssBytes) : 0,
            raterRssMiB: r ? mib(r.rssBytes) : 0,
            gatewayHeapMiB: await heapMiB(gatewayUrl),
            raterHeapMiB: await heapMiB(rater.ready),
          };
          samples.push(sample);
          if (sample.tS % 5 === 0)
            log(
              `    t=${sample.tS}s accepted ${accepted.toLocaleString('en')} events; stream lag ${s.messages} messages (${sample.lagMiB} MiB); RSS gateway ${sample.gatewayRssMiB} MiB, rater ${sample.raterRssMiB} MiB`,
            );
        }
      })();
      const load = await httpLoad({ url: `${gatewayUrl}/v1/events`, batch: head, durationS: sustainedS, connections });
      const ingestDoneAt = Date.now();
      const countAtEnd = await acceptedEvents(gatewayUrl);
      // This process: autocannon plus the once-a-second sampling.
      const loadCpu = process.cpuUsage(loadCpu0);
      // Requests autocannon abandoned at the end still publish a moment later: the rater
      // must have those too. If one landed after the stream first looked drained, wait again.
      const [settled, firstDrainedAt] = await Promise.all([
        settledAcceptedEvents(gatewayUrl),
        waitDrained(jsm, 15 * 60_000),
      ]);
      if (settled !== countAtEnd)
        log(
          `    ${(settled - countAtEnd).toLocaleString('en')} events were stored by requests still in flight when the load stopped`,
        );
      const drainedAt = settled === countAtEnd ? firstDrainedAt : await waitDrained(jsm, 15 * 60_000);
      sampling = false;
      await sampler;
      const accepted = (await acceptedEvents(gatewayUrl)) - before;
      const gatewayStats = procStats(gateway.pid);
      const raterStats = procStats(rater.pid);
      const natsCpu = (procStatsIfAlive(nats.pid)?.cpuSeconds ?? 0) - natsCpu0;
      const clickhouseCpu =
        clickhouse === undefined
          ? null
          : round((procStatsIfAlive(clickhouse.pid)?.cpuSeconds ?? 0) - clickhouseCpu0, 1);
      await rater.stop();

      log(`  verifying totals in ClickHouse (${backend}) …`);
      const store = await openStore(clickhouseUrl);
      let exact = true;
      try {
        const rows = await store.query(
          `SELECT customer, toString(sum(quantity)) FROM usage_minute WHERE meter = ${sqlString('gpt-4o.input_tokens')} GROUP BY customer`,
        );
        const got = new Map(rows.map(([customer, sum]) => [customer!, new Decimal(sum!)]));
        const requests = (accepted + backlog) / headline;
        for (let c = 0; c < benchCustomers; c++) {
          const customer = `cust-${c}`;
          const want = (head.tokensPerCustomer.get(customer) ?? new Decimal(0)).times(requests);
          const have = got.get(customer) ?? new Decimal(0);
          if (!have.equals(want)) {
            exact = false;
            log(`  MISMATCH ${customer}: ClickHouse has ${have.toFixed()} tokens, ${want.toFixed()} were accepted`);
          }
        }
        const [[events]] = (await store.query('SELECT toString(sum(events)) FROM usage_minute')) as [[string]];
        if (Number(events) !== accepted + backlog) {
          exact = false;
          // A batch answered with an error may still be stored (a retry with its key would complete it once);
          // autocannon never retries.
          const failed = [...(await failedBatches(gatewayUrl))].map(([outcome, n]) => `${outcome} ${n}`).join(', ');
          log(
            `  MISMATCH: ClickHouse counted ${events} events, the gateway accepted ${accepted + backlog} (${(Number(events) - accepted - backlog) / headline} batches apart; batches answered with an error so far: ${failed || 'none'})`,
          );
        }
      } finally {
        await store.close();
      }
      await clickhouse?.stop();
      clickhouse = undefined;

      const loadSamples = samples.filter((s) => s.tS <= sustainedS);
      const avg = (
        list: typeof samples,
        key: 'gatewayRssMiB' | 'raterRssMiB' | 'gatewayHeapMiB' | 'raterHeapMiB',
      ): number => (list.length === 0 ? 0 : round(list.reduce((sum, s) => sum + s[key], 0) / list.length));
      const first = loadSamples.slice(0, 10);
      const last = loadSamples.slice(-10);
      const e2e: EndToEndResult = {
        backend,
        raterAlone,
        durationS: sustainedS,
        acceptedEvents: accepted,
        ingestEventsPerS: round(accepted / ((ingestDoneAt - startedAt) / 1000)),
        eventsPerS: round(accepted / ((drainedAt - startedAt) / 1000)),
        raterCatchUpS: round((drainedAt - ingestDoneAt) / 1000, 2),
        totalsExact: exact,
        latencyMs: { p50: load.latencyMs.p50, p99: load.latencyMs.p99 },
        non2xx: load.non2xx,
        errors: load.errors,
        gateway: {
          cpuSeconds: round(gatewayStats.cpuSeconds - gatewayCpu0, 1),
          peakRssMiB: mib(gatewayStats.peakRssBytes),
          rssFirst10sMiB: avg(first, 'gatewayRssMiB'),
          rssLast10sMiB: avg(last, 'gatewayRssMiB'),
          heapFirst10sMiB: avg(first, 'gatewayHeapMiB'),
          heapLast10sMiB: avg(last, 'gatewayHeapMiB'),
        },
        rater: {
          cpuSeconds: round(raterStats.cpuSeconds - raterCpu0, 1),
          peakRssMiB: mib(raterStats.peakRssBytes),
          rssFirst10sMiB: avg(first, 'raterRssMiB'),
          rssLast10sMiB: avg(last, 'raterRssMiB'),
          heapFirst10sMiB: avg(first, 'raterHeapMiB'),
          heapLast10sMiB: avg(last, 'raterHeapMiB'),
        },
        natsCpuSeconds: round(natsCpu, 1),
        clickhouseServerCpuSeconds: clickhouseCpu,
        loadGeneratorCpuSeconds: round((loadCpu.user + loadCpu.system) / 1e6, 1),
        maxLagMessages: samples.reduce((m, s) => Math.max(m, s.lagMessages), 0),
        samples,
      };
      endToEnd.push(e2e);
      log(
        `    ${e2e.eventsPerS.toLocaleString('en')} events/s end to end (ingest ${e2e.ingestEventsPerS.toLocaleString('en')}/s, rater caught up ${e2e.raterCatchUpS} s after the load); totals exact: ${exact}`,
      );
      await purgeStream(jsm);
    }
    await gateway.stop();

    const results: BenchResults = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, node: process.version },
      settings: { phaseS, sustainedS, connections, headline, sizes, backends, quick },
      bySize: sizes.map((s) => bySize.get(s)!),
      latencyAt80: {
        targetEventsPerS: targetRate * headline,
        achievedEventsPerS: round(latencyAchieved),
        latencyMs: latencyRun.latencyMs,
        non2xx: latencyRun.non2xx,
        errors: latencyRun.errors,
      },
      endToEnd,
      gatewayPeakRssMiB: mib(procStatsIfAlive(gateway.pid)?.peakRssBytes ?? 0),
    };
    const resultsDir = join(repoRoot, 'bench', 'results');
    const md = renderMarkdown(results);
    // A scratch run (--no-history) only prints: latest.* and history.md keep the last recorded run.
    if (!flags.has('--no-history')) {
      mkdirSync(resultsDir, { recursive: true });
      writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
      writeFileSync(join(resultsDir, 'latest.md'), md);
      const historyPath = join(resultsDir, 'history.md');
      // Re-read right before appending: another bench appends its own lines here.
      const existing = readFileSync(historyPath, 'utf8');
      appendFileSync(
        historyPath,
        `${existing.endsWith('\n') ? '' : '\n'}${historyLines(results, flags.get('--note') ?? '').join('\n')}\n`,
      );
    }
    process.stdout.write(`\n${md}`);
    if (endToEnd.some((e) => !e.totalsExact)) process.exitCode = 1;
  } finally {
    await nc?.close().catch(() => undefined);
    for (const child of children) await child.stop(5_000).catch(() => undefined);
    await clickhouse?.stop();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
