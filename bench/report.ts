/** The benchmark's result shape and its Markdown renderings (latest.md, history.md lines). */

/** One round of the four ingest phases, run one after the other. */
export interface SizeRound {
  rawJetStreamEventsPerS: number;
  noopHttpEventsPerS: number;
  forwarderEventsPerS: number;
  gatewayEventsPerS: number;
  rawMachineCpuPerS: number;
  noopMachineCpuPerS: number;
  forwarderMachineCpuPerS: number;
  gatewayMachineCpuPerS: number;
}

/** Events/s are medians over the rounds; ratios are medians of each round's own ratio. */
export interface SizeResult {
  batchEvents: number;
  batchBytes: number;
  phaseS: number;
  rounds: SizeRound[];
  forwarderToRawJetStream: number;
  rawJetStreamEventsPerS: number;
  natsCpuPerS: number | null;
  noopHttpEventsPerS: number;
  noopCpuPerS: number;
  /** Baseline (c), bench/forwarder.ts: HTTP bodies published unchanged to JetStream. */
  forwarderEventsPerS: number;
  forwarderCpuPerS: number;
  ratioToForwarder: number;
  /** Busy CPU seconds per second of the whole machine in each phase (load generator included). */
  rawMachineCpuPerS: number;
  noopMachineCpuPerS: number;
  forwarderMachineCpuPerS: number;
  gatewayMachineCpuPerS: number;
  gatewayEventsPerS: number;
  ratioToRawJetStream: number;
  ratioToNoopHttp: number;
  gatewayLatencyMs: { p50: number; p99: number };
  gatewayCpuPerS: number;
  gatewayNatsCpuPerS: number | null;
  non2xx: number;
  errors: number;
}

interface ProcessResult {
  cpuSeconds: number;
  peakRssMiB: number;
  rssFirst10sMiB: number;
  rssLast10sMiB: number;
  /** Main thread's V8 heap used, averaged the same way. */
  heapFirst10sMiB: number;
  heapLast10sMiB: number;
}

export interface EndToEndResult {
  backend: 'chdb' | 'server';
  /** The rater alone draining a backlog queued while it was stopped. */
  raterAlone: { backlogEvents: number; eventsPerS: number; cpuPerS: number; cpuUsPerEvent: number };
  durationS: number;
  acceptedEvents: number;
  ingestEventsPerS: number;
  eventsPerS: number;
  raterCatchUpS: number;
  totalsExact: boolean;
  latencyMs: { p50: number; p99: number };
  non2xx: number;
  errors: number;
  gateway: ProcessResult;
  rater: ProcessResult;
  natsCpuSeconds: number;
  /** clickhouse-server's own CPU (null on chDB, which runs inside the rater). */
  clickhouseServerCpuSeconds: number | null;
  /** The bench process (autocannon) during the load. */
  loadGeneratorCpuSeconds: number;
  maxLagMessages: number;
  samples: {
    tS: number;
    acceptedEvents: number;
    lagMessages: number;
    lagMiB: number;
    gatewayRssMiB: number;
    raterRssMiB: number;
    gatewayHeapMiB: number;
    raterHeapMiB: number;
  }[];
}

export interface BenchResults {
  date: string;
  machine: { cpus: number; node: string };
  settings: {
    phaseS: number;
    sustainedS: number;
    connections: number;
    headline: number;
    sizes: number[];
    backends: string[];
    quick: boolean;
  };
  bySize: SizeResult[];
  latencyAt80: {
    targetEventsPerS: number;
    achievedEventsPerS: number;
    latencyMs: { p50: number; p90: number; p99: number; max: number };
    non2xx: number;
    errors: number;
  };
  endToEnd: EndToEndResult[];
  gatewayPeakRssMiB: number;
}

const n = (value: number): string => value.toLocaleString('en');

export function renderMarkdown(r: BenchResults): string {
  const lines = [
    `# Benchmark ${r.date}`,
    '',
    `${r.machine.cpus} CPUs (shared; the load generator runs on them too), Node ${r.machine.node}; ${r.settings.connections} connections; headline ${r.settings.headline}-event batches for ${r.settings.phaseS} s, other sizes shorter; gateway and rater are separate processes.`,
    '',
    '## Ingest: gateway alone (HTTP → JetStream acked), same bytes as the baselines',
    '',
    '| events/batch | bytes | (a) raw JetStream events/s | (b) no-op HTTP events/s | (c) forwarder events/s | gateway events/s | ÷ (a) | ÷ (b) | ÷ (c) | (c) ÷ (a) | p50 / p99 ms | gateway CPU s/s | gateway µs CPU/event | nats CPU s/s | machine busy CPU s/s: (a) / (b) / (c) / gateway |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ...r.bySize.map(
      (s) =>
        `| ${n(s.batchEvents)} | ${n(s.batchBytes)} | ${n(s.rawJetStreamEventsPerS)} | ${n(s.noopHttpEventsPerS)} | ${n(s.forwarderEventsPerS)} | ${n(s.gatewayEventsPerS)} | ${s.ratioToRawJetStream} | ${s.ratioToNoopHttp} | ${s.ratioToForwarder} | ${s.forwarderToRawJetStream} | ${s.gatewayLatencyMs.p50} / ${s.gatewayLatencyMs.p99} | ${s.gatewayCpuPerS} | ${s.gatewayEventsPerS > 0 ? ((s.gatewayCpuPerS * 1e6) / s.gatewayEventsPerS).toFixed(2) : '–'} | ${s.gatewayNatsCpuPerS ?? '–'} | ${s.rawMachineCpuPerS} / ${s.noopMachineCpuPerS} / ${s.forwarderMachineCpuPerS} / ${s.gatewayMachineCpuPerS} |`,
    ),
    '',
    ...r.bySize
      .filter((s) => s.rounds.length > 1)
      .map(
        (s) =>
          `${n(s.batchEvents)}-event batches, each round (a / (b) / (c) / gateway events/s, gateway ÷ (a)): ${s.rounds.map((x) => `${n(x.rawJetStreamEventsPerS)} / ${n(x.noopHttpEventsPerS)} / ${n(x.forwarderEventsPerS)} / ${n(x.gatewayEventsPerS)} (${(x.gatewayEventsPerS / x.rawJetStreamEventsPerS).toFixed(3)})`).join('; ')}. The table gives medians; ratios are medians of each round's own.`,
      ),
    '',
    "(c) is bench/forwarder.ts: a minimal Node server that publishes each body unchanged to a JetStream stream of the same kind and answers 202 on the ack — no validation, no routing, one message per request. It is the ceiling for any Node HTTP gateway in front of JetStream on this machine; ÷ (c) is what drawdown's own work costs.",
    '',
    `Latency at 80 % of the ${r.settings.headline}-event peak (${n(r.latencyAt80.targetEventsPerS)} events/s asked, ${n(r.latencyAt80.achievedEventsPerS)} achieved): p50 ${r.latencyAt80.latencyMs.p50} ms, p90 ${r.latencyAt80.latencyMs.p90} ms, p99 ${r.latencyAt80.latencyMs.p99} ms, max ${r.latencyAt80.latencyMs.max} ms; ${r.latencyAt80.non2xx} non-2xx, ${r.latencyAt80.errors} errors.`,
    '',
    `## End to end: HTTP → aggregated in ClickHouse (${r.settings.sustainedS} s of load at full speed, then until committed)`,
    '',
    '| ClickHouse | events/s end to end | ingest events/s | rater catch-up s | totals exact | p50 / p99 ms | gateway CPU s / peak RSS MiB / RSS first→last 10 s | rater CPU s / peak RSS MiB / RSS first→last 10 s | nats CPU s | clickhouse-server CPU s | autocannon CPU s | max lag (messages) |',
    '|---|---:|---:|---:|---|---:|---|---|---:|---:|---:|---:|',
    ...r.endToEnd.map(
      (e) =>
        `| ${e.backend} | ${n(e.eventsPerS)} | ${n(e.ingestEventsPerS)} | ${e.raterCatchUpS} | ${e.totalsExact} | ${e.latencyMs.p50} / ${e.latencyMs.p99} | ${e.gateway.cpuSeconds} / ${e.gateway.peakRssMiB} / ${e.gateway.rssFirst10sMiB}→${e.gateway.rssLast10sMiB} | ${e.rater.cpuSeconds} / ${e.rater.peakRssMiB} / ${e.rater.rssFirst10sMiB}→${e.rater.rssLast10sMiB} | ${e.natsCpuSeconds} | ${e.clickhouseServerCpuSeconds ?? 'in rater'} | ${e.loadGeneratorCpuSeconds} | ${n(e.maxLagMessages)} |`,
    ),
    '',
    ...r.endToEnd.map(
      (e) =>
        `Main-thread V8 heap used on ${e.backend}, first → last 10 s: gateway ${e.gateway.heapFirst10sMiB} → ${e.gateway.heapLast10sMiB} MiB, rater ${e.rater.heapFirst10sMiB} → ${e.rater.heapLast10sMiB} MiB (the rest of RSS is native: buffers, worker threads, the id sets${e.backend === 'chdb' ? ', chDB' : ''}).`,
    ),
    '',
    ...r.endToEnd.map(
      (e) =>
        `Rater alone on ${e.backend} (draining ${n(e.raterAlone.backlogEvents)} queued events): ${n(e.raterAlone.eventsPerS)} events/s, ${e.raterAlone.cpuPerS} CPU s/s, ${e.raterAlone.cpuUsPerEvent} µs CPU per event.`,
    ),
    '',
    'Rater lag over time (stream messages not yet committed, every 5 s):',
    '',
    ...r.endToEnd.map(
      (e) =>
        `- ${e.backend}: ${e.samples
          .filter((s) => s.tS % 5 === 0)
          .map((s) => `${s.tS}s ${s.lagMessages}`)
          .join(', ')}`,
    ),
    '',
  ];
  return lines.join('\n');
}

/** One line per back end, in history.md's columns. */
export function historyLines(r: BenchResults, note: string): string[] {
  const head = r.bySize.find((s) => s.batchEvents === r.settings.headline)!;
  // The forwarder baseline came after the table's columns were fixed; it leads the note.
  const fullNote = `÷ forwarder ${head.ratioToForwarder} (forwarder ${head.forwarderToRawJetStream} × raw)${note === '' ? '' : `; ${note}`}`;
  if (r.endToEnd.length === 0) {
    return [
      `| ${r.date.slice(0, 16)} | – | ${r.settings.headline} | ${head.gatewayEventsPerS} | ${head.ratioToRawJetStream} | ${head.ratioToNoopHttp} | – | ${r.latencyAt80.latencyMs.p99} | – | ingest only; ${fullNote} |`,
    ];
  }
  return r.endToEnd.map(
    (e) =>
      `| ${r.date.slice(0, 16)} | ${e.backend} | ${r.settings.headline} | ${head.gatewayEventsPerS} | ${head.ratioToRawJetStream} | ${head.ratioToNoopHttp} | ${e.eventsPerS} | ${r.latencyAt80.latencyMs.p99} | ${e.totalsExact} | ${fullNote} |`,
  );
}
