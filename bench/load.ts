/**
 * Load for the benchmark: autocannon POSTing fresh-id batches, the raw
 * JetStream publish baseline, and the scraping of drawdown's own counters.
 */
import autocannon from 'autocannon';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { addBaselineStream } from './baseline-stream.js';
import type { BenchBatch } from './workload.js';

export interface LoadOptions {
  url: string;
  batch: BenchBatch;
  durationS: number;
  connections: number;
  /** Requests per second over all connections; unset = as fast as answers come. */
  overallRate?: number;
}

export interface LoadResult {
  requests: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  requestsPerS: number;
}

export async function httpLoad(options: LoadOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: options.url,
    connections: options.connections,
    duration: options.durationS,
    timeout: 30,
    ...(options.overallRate === undefined ? {} : { overallRate: options.overallRate }),
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/msgpack' },
        // A fresh copy with unique event ids for every request (see workload.ts).
        setupRequest: (req) => ({ ...req, body: options.batch.nextBody() }),
      },
    ],
  });
  return {
    requests: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max },
    requestsPerS: result.requests.total / options.durationS,
  };
}

/**
 * `inFlight` publishers of the template bytes to a stream of its own, each
 * awaiting its ack before the next: the concurrency autocannon's connections
 * give the gateway, and the same durability (file storage, acked).
 */
export async function rawJetStreamBaseline(
  natsUrl: string,
  body: Uint8Array,
  durationMs: number,
  inFlight: number,
): Promise<number> {
  const nc = await connect({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  await addBaselineStream(jsm, 'BENCH_RAW', 'bench.raw');
  const js = jetstream(nc);
  let acked = 0;
  const startedAt = Date.now();
  const deadline = startedAt + durationMs;
  await Promise.all(
    Array.from({ length: inFlight }, async (_, i) => {
      // Spread over four subjects like the gateway's four partitions.
      const subject = `bench.raw.${i % 4}`;
      while (Date.now() < deadline) {
        await js.publish(subject, body);
        acked++;
      }
    }),
  );
  const elapsedS = (Date.now() - startedAt) / 1000;
  await jsm.streams.delete('BENCH_RAW');
  await nc.close();
  return acked / elapsedS;
}

/** One Prometheus counter's value (summed over labels matching `labelFilter`). */
export async function scrapeCounter(baseUrl: string, name: string, labelFilter = ''): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (labelFilter !== '' && !rest.includes(labelFilter)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** Events the gateway accepted so far. */
export function acceptedEvents(gatewayUrl: string): Promise<number> {
  return scrapeCounter(gatewayUrl, 'drawdown_ingest_events_total');
}

/**
 * acceptedEvents once the requests still in flight when autocannon stopped
 * have finished. autocannon abandons them at the end of its duration, but the
 * gateway still stores and counts them, a moment later. Read too early, the
 * count misses a batch that ClickHouse will hold. Settled means unchanged for
 * a whole second; the wait stops after `maxMs` (the gateway's publish timeout
 * bounds a request).
 */
export async function settledAcceptedEvents(gatewayUrl: string, maxMs = 10_000): Promise<number> {
  const deadline = Date.now() + maxMs;
  let last = await acceptedEvents(gatewayUrl);
  for (;;) {
    await new Promise((r) => setTimeout(r, 1_000));
    const now = await acceptedEvents(gatewayUrl);
    if (now === last || Date.now() > deadline) return now;
    last = now;
  }
}

/** Batch requests the gateway answered with an error, by outcome (drawdown_ingest_batches_total). */
export async function failedBatches(gatewayUrl: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  const failed = new Map<string, number>();
  for (const match of text.matchAll(/^drawdown_ingest_batches_total\{outcome="([^"]+)"\} (\S+)$/gm)) {
    if (match[1] !== 'accepted' && match[1] !== 'duplicate' && match[1] !== 'empty')
      failed.set(match[1]!, Number(match[2]));
  }
  return failed;
}
