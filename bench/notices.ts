/**
 * `npm run bench:notices`: how long from the change that crosses a threshold
 * to the notice on the stream, and from there to the webhook's first attempt
 * (issue 15: p99 < 1 s under 500k events/s of background load; first webhook
 * attempt within 1 s of the notice).
 *
 * One all-in-one drawdown (`drawdown start`, chDB) against a nats-server this
 * bench starts, so it can subscribe to `drawdown.notices.>` itself (core NATS
 * sees each stream message as it is stored). Three probes, each run on an
 * idle pipeline (the baseline) and again under autocannon background load,
 * in the same run:
 *   hold   — reserve a hold that takes a customer below its threshold: from
 *            the request to balance.low on the stream; its release (no grace)
 *            to balance.recovered is a second sample;
 *   usage  — a fresh customer (100 credits, threshold 98) sends one 3-credit
 *            event: from the 202 to balance.low (the rater's flush, the
 *            usage watch's poll, the evaluation);
 *   webhook — for each notice a local receiver registered for balance.low
 *            gets: from the notice on the stream to the request's arrival.
 *
 * Flags: --probes 40, --rate 500000, --batch 1000, --connections 8, --load-s 90 (seconds of load), --no-save.
 * Results: bench/results/notices.{json,md}.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { NatsServerProcess } from '../deploy/nats-server.js';
import { parseArgs, settings } from '../shared/config.js';
import { inheritedSetting, repoRoot, spawnNode } from './children.js';
import { acceptedEvents, httpLoad, type LoadResult } from './load.js';
import { makeBatch } from './workload.js';

const { flags } = parseArgs(process.argv.slice(2));
const probes = Number(flags.get('--probes') ?? 40);
const rate = Number(flags.get('--rate') ?? 500_000);
const batchEvents = Number(flags.get('--batch') ?? 1_000);
const connections = Number(flags.get('--connections') ?? 8);
const loadSeconds = Number(flags.get('--load-s') ?? 90);
const save = !flags.has('--no-save');

interface Stats {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function summary(samples: readonly number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
  return { n: sorted.length, p50: at(50), p90: at(90), p99: at(99), max: sorted[sorted.length - 1] ?? NaN };
}

/** The histograms that say where the time goes (/metrics, cumulative since start). */
const timings = {
  evaluation: 'drawdown_notices_evaluation_duration_seconds',
  liveRead: 'drawdown_live_balance_read_duration_seconds',
  insert: 'drawdown_clickhouse_insert_duration_seconds',
  look: 'drawdown_notices_usage_look_duration_seconds',
} as const;
type Timings = Record<keyof typeof timings, { count: number; sumS: number }>;

async function readTimings(base: string): Promise<Timings> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const value = (name: string, suffix: string) =>
    Number(new RegExp(`^${name}_${suffix}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  const entries = Object.entries(timings).map(([key, name]) => [
    key,
    { count: value(name, 'count'), sumS: value(name, 'sum') },
  ]);
  return Object.fromEntries(entries) as Timings;
}

/** Mean seconds and count of each timing between two readings. */
function timingMeans(from: Timings | undefined, to: Timings): Record<keyof Timings, { count: number; meanS: number }> {
  const means = {} as Record<keyof Timings, { count: number; meanS: number }>;
  for (const key of Object.keys(timings) as (keyof Timings)[]) {
    const count = to[key].count - (from?.[key].count ?? 0);
    means[key] = { count, meanS: (to[key].sumS - (from?.[key].sumS ?? 0)) / count };
  }
  return means;
}

function timingLine(
  name: string,
  idle: { count: number; meanS: number },
  loaded: { count: number; meanS: number },
): string {
  return `${name} ${(idle.meanS * 1000).toFixed(0)} / ${(loaded.meanS * 1000).toFixed(0)} ms (${idle.count} / ${loaded.count})`;
}

/** Whether this run met issue 15's latency targets, at the load it reached. */
function verdict(loaded: { hold: Stats; usage: Stats; webhook: Stats }, acceptedPerS: number): string {
  const worst = Math.max(loaded.hold.p99, loaded.usage.p99);
  const notice = worst < 1_000 ? 'below 1 s' : 'not below 1 s';
  const webhook = loaded.webhook.p99 < 1_000 ? 'within 1 s' : 'not within 1 s';
  const load =
    acceptedPerS >= 500_000
      ? 'at the target load'
      : `at ${Math.round(acceptedPerS).toLocaleString('en-US')} events/s, ${((acceptedPerS / 500_000) * 100).toFixed(0)} % of the target load, so the 500k target is not shown by this run either way`;
  return `This run, ${load}: change → notice p99 ${worst.toFixed(0)} ms (${notice}); notice → first webhook attempt p99 ${loaded.webhook.p99.toFixed(0)} ms (${webhook}).`;
}

interface Seen {
  type: string;
  customer: string;
  id: string;
  atMs: number;
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'drawdown-bench-notices-'));
  // Room for the 8 GiB events stream the load needs, next to the notices and delivery streams.
  const nats = await NatsServerProcess.start({
    dir: join(dataDir, 'nats'),
    maxPayloadBytes: 8 * 1024 * 1024,
    jetstreamMaxFileBytes: 16 * 1024 ** 3,
  });
  const nc = await connect({ servers: nats.url });
  const seen: Seen[] = [];
  const waiters: { match: (s: Seen) => boolean; resolve: (s: Seen) => void }[] = [];
  const sub = nc.subscribe('drawdown.notices.>');
  void (async () => {
    for await (const message of sub) {
      const notice = message.json<{ id: string; type: string; data: { customer: string } }>();
      const s = { type: notice.type, customer: notice.data.customer, id: notice.id, atMs: performance.now() };
      seen.push(s);
      for (let i = waiters.length - 1; i >= 0; i--) if (waiters[i]!.match(s)) waiters.splice(i, 1)[0]!.resolve(s);
    }
  })();
  const wait = (match: (s: Seen) => boolean, what: string, timeoutMs = 30_000): Promise<Seen> => {
    const found = seen.find(match);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
      waiters.push({ match, resolve: (s) => (clearTimeout(timer), resolve(s)) });
    });
  };

  // The webhook receiver: when each notice id first arrived.
  const webhookAt = new Map<string, number>();
  const receiver = createServer((req, res) => {
    const id = String(req.headers['webhook-id']);
    if (!webhookAt.has(id)) webhookAt.set(id, performance.now());
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));

  const drawdown = await spawnNode(
    [join(repoRoot, 'dist', 'deploy', 'cli.js'), 'start'],
    /drawdown is running at (http:\/\/\S+)/,
    {
      DRAWDOWN_DATA_DIR: dataDir,
      DRAWDOWN_NATS_URL: nats.url,
      DRAWDOWN_HTTP_PORT: '0',
      DRAWDOWN_LOG_LEVEL: 'info',
      DRAWDOWN_LIVE_BALANCE_CACHE_MS: '0',
      DRAWDOWN_STREAM_MAX_BYTES: String(8 * 1024 ** 3),
      DRAWDOWN_STREAM_MAX_MESSAGES: String(10_000_000),
    },
    120_000,
  );
  const base = drawdown.ready;
  const call = async (method: string, path: string, body?: unknown, key?: string) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (response.status >= 300) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
    return JSON.parse(text) as Record<string, unknown>;
  };
  let serial = 0;

  /**
   * A customer with 100 credits and balance.low at `threshold`, which the notices have seen above it: notices
   * follow the balance as evaluations see it, so a probe sent before the purchase's evaluation ran would find
   * the customer below the threshold all along (0, then 97), a balance that crossed nothing as far as they know.
   */
  const prepare = async (customer: string, threshold: string): Promise<void> => {
    await call('PUT', `/v1/customers/${customer}/notice-settings`, { units: { credits: { low: [threshold] } } });
    await call('POST', `/v1/customers/${customer}/purchases`, { package: 'credits-100' }, `buy-${customer}`);
    await wait((s) => s.customer === customer && s.type === 'purchase.posted', `purchase.posted for ${customer}`);
    const deadline = performance.now() + 180_000;
    for (;;) {
      const settings = (await call('GET', `/v1/customers/${customer}/notice-settings`)) as {
        units: Record<string, { below: unknown[] }>;
      };
      if ((settings.units.credits?.below.length ?? 1) === 0) break;
      if (performance.now() > deadline) throw new Error(`${customer}: the notices never saw the purchase`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  const prepared = new Set<string>();
  async function holdProbes(label: string, count: number, stillLoaded: () => boolean): Promise<number[]> {
    const customer = `hold-${label}`;
    if (!prepared.has(customer)) await prepare(customer, '50');
    prepared.add(customer);
    const lags: number[] = [];
    for (let i = 0; i < count && stillLoaded(); i++) {
      const before = seen.length;
      const started = performance.now();
      const held = await call(
        'POST',
        `/v1/customers/${customer}/holds`,
        { unit: 'credits', amount: '60' },
        `h${serial++}`,
      );
      const low = await wait(
        (s) => s.customer === customer && s.type === 'balance.low' && seen.indexOf(s) >= before,
        `balance.low for ${customer}`,
      );
      lags.push(low.atMs - started);
      const releasing = performance.now();
      const hold = held.hold as { id: string };
      await call('POST', `/v1/holds/${hold.id}/release`, { wait_for_usage: false });
      const up = await wait(
        (s) => s.customer === customer && s.type === 'balance.recovered' && seen.indexOf(s) >= before,
        `balance.recovered for ${customer}`,
      );
      lags.push(up.atMs - releasing);
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
    return lags;
  }

  /** available (credits) of one customer, now. */
  const availableOf = async (customer: string): Promise<number> => {
    const body = await call('GET', `/v1/customers/${customer}/balance`);
    const units = body.units as { unit: string; available: string }[];
    return Number(units.find((u) => u.unit === 'credits')?.available ?? '0');
  };

  /** Event → notice, and event → available showing it (the live-balance lag: the baseline notices add to). */
  async function usageProbes(
    label: string,
    count: number,
    stillLoaded: () => boolean,
  ): Promise<{ notice: number[]; balance: number[] }> {
    const notice: number[] = [];
    const balance: number[] = [];
    for (let i = 0; i < count && stillLoaded(); i++) {
      const customer = `usage-${label}-${i}`;
      await prepare(customer, '98');
      const response = await fetch(`${base}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify([
          {
            id: `u-${customer}`,
            customer,
            meter: 'images',
            timestamp: Date.now(),
            dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
          },
        ]),
      });
      if (response.status !== 202) throw new Error(`probe event answered ${response.status}`);
      const accepted = performance.now();
      // The customer was below 98 before its purchase (a first notice); this is the crossing the event causes.
      const low = wait(
        (s) => s.customer === customer && s.type === 'balance.low' && s.atMs >= accepted,
        `usage balance.low for ${customer}`,
        180_000,
      );
      for (;;) {
        if ((await availableOf(customer)) <= 97) break;
        if (performance.now() - accepted > 180_000) throw new Error(`${customer}: available never showed the event`);
        await new Promise((r) => setTimeout(r, 25));
      }
      balance.push(performance.now() - accepted);
      notice.push((await low).atMs - accepted);
      process.stderr.write(
        `${label} usage probe ${customer}: 202 at ${new Date().toISOString()}, balance +${Math.round(balance.at(-1)!)} ms, notice +${Math.round(notice.at(-1)!)} ms\n`,
      );
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
    return { notice, balance };
  }

  const webhookLags = (from: number): number[] => {
    const out: number[] = [];
    for (const s of seen.slice(from)) {
      if (s.type !== 'balance.low') continue;
      const at = webhookAt.get(s.id);
      if (at !== undefined) out.push(at - s.atMs);
    }
    return out;
  };

  try {
    await call('POST', '/v1/webhooks', {
      url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`,
      events: ['balance.low'],
    });
    process.stderr.write(`idle: ${probes} probes of each kind\n`);
    await holdProbes('warmup', 3, () => true);
    const idleFrom = seen.length;
    const idleHold = await holdProbes('idle', probes, () => true);
    const idleUsage = await usageProbes('idle', probes, () => true);
    await new Promise((r) => setTimeout(r, 1_000));
    const idleWebhook = webhookLags(idleFrom);
    const idleTimings = await readTimings(base);

    const loadS = loadSeconds;
    process.stderr.write(`loaded: ${rate} events/s for ${loadS} s\n`);
    const acceptedBefore = await acceptedEvents(base);
    const started = performance.now();
    const loadPromise: Promise<LoadResult> = httpLoad({
      url: `${base}/v1/events`,
      batch: makeBatch(batchEvents, Date.now()),
      durationS: loadS,
      connections,
      overallRate: Math.max(1, Math.round(rate / batchEvents)),
    });
    await new Promise((r) => setTimeout(r, 3_000));
    const loaded = () => performance.now() - started < (loadS - 3) * 1000;
    const loadedFrom = seen.length;
    // Interleaved, so both kinds sample the whole load window.
    const loadedHold: number[] = [];
    const loadedUsage: number[] = [];
    const loadedBalance: number[] = [];
    for (let i = 0; i < probes && loaded(); i++) {
      loadedHold.push(...(await holdProbes('loaded', 1, loaded)));
      if (!loaded()) break;
      const usage = await usageProbes(`loaded${i}`, 1, loaded);
      loadedUsage.push(...usage.notice);
      loadedBalance.push(...usage.balance);
    }
    const loadedTimings = await readTimings(base);
    const loadAverage = (await import('node:os'))
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
    const load = await loadPromise;
    const acceptedDuring = (await acceptedEvents(base)) - acceptedBefore;
    await new Promise((r) => setTimeout(r, 1_000));
    const loadedWebhook = webhookLags(loadedFrom);

    const result = {
      at: new Date().toISOString(),
      machine: `${(await import('node:os')).cpus().length} cores`,
      idle: {
        hold: summary(idleHold),
        usage: summary(idleUsage.notice),
        balance: summary(idleUsage.balance),
        webhook: summary(idleWebhook),
      },
      loaded: {
        hold: summary(loadedHold),
        usage: summary(loadedUsage),
        balance: summary(loadedBalance),
        webhook: summary(loadedWebhook),
      },
      // Mean seconds and count of each of `timings`: idle, then under load only.
      means: { idle: timingMeans(undefined, idleTimings), loaded: timingMeans(idleTimings, loadedTimings) },
      loadAverage,
      // What the drawdown child ran with (the environment it inherits, else the defaults).
      settings: {
        flushIntervalMs: inheritedSetting(settings.flushIntervalMs),
        noticesPollMs: inheritedSetting(settings.noticesPollMs),
      },
      background: {
        askedEventsPerS: rate,
        acceptedEventsPerS: Math.round(acceptedDuring / ((performance.now() - started) / 1000)),
        non2xx: load.non2xx,
        errors: load.errors,
        requestP99Ms: load.latencyMs.p99,
      },
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    if (save) {
      writeFileSync(join(repoRoot, 'bench', 'results', 'notices.json'), `${JSON.stringify(result, null, 2)}\n`);
      const row = (name: string, idle: Stats, busy: Stats) =>
        `| ${name} | ${idle.n} / ${busy.n} | ${idle.p50.toFixed(0)} / ${busy.p50.toFixed(0)} | ${idle.p99.toFixed(0)} / ${busy.p99.toFixed(0)} | ${idle.max.toFixed(0)} / ${busy.max.toFixed(0)} | ${(busy.p99 / idle.p99).toFixed(2)} |`;
      writeFileSync(
        join(repoRoot, 'bench', 'results', 'notices.md'),
        [
          '# Notice latency (`npm run bench:notices`)',
          '',
          `${result.at}, ${result.machine}, all-in-one (chDB) with its own nats-server; background load asked ${rate} events/s in ${batchEvents}-event batches, ${result.background.acceptedEventsPerS} accepted (non-2xx ${load.non2xx}, errors ${load.errors}).`,
          'Figures are idle (baseline, same run) / under background load, in ms.',
          '',
          '| from → to | samples | p50 | p99 | max | loaded p99 ÷ idle p99 |',
          '|---|---|---|---|---|---|',
          row(
            'hold reserve/release request → balance.low/recovered on the stream',
            result.idle.hold,
            result.loaded.hold,
          ),
          row('event 202 → balance.low on the stream', result.idle.usage, result.loaded.usage),
          row('(baseline) event 202 → GET balance shows it', result.idle.balance, result.loaded.balance),
          row('notice on the stream → webhook request at the receiver', result.idle.webhook, result.loaded.webhook),
          '',
          `Where the time goes, mean idle / under load: ${timingLine('customer evaluation (live figures read, crossings decided, notices published)', result.means.idle.evaluation, result.means.loaded.evaluation)}; ${timingLine('live-figures read from ClickHouse', result.means.idle.liveRead, result.means.loaded.liveRead)}; ${timingLine('rater insert (one flush)', result.means.idle.insert, result.means.loaded.insert)}; ${timingLine('look for flushed usage that found customers', result.means.idle.look, result.means.loaded.look)}. A busy partition flushes every ${result.settings.flushIntervalMs} ms and notices look for flushed usage every ${result.settings.noticesPollMs} ms. Load average as the load ended: ${result.loadAverage}.`,
          '',
          'Targets (issue 15): p99 < 1 s from the crossing change to the stream under 500,000 events/s; first webhook attempt within 1 s of the notice. The load generator, gateway, rater, chDB, nats-server and the bench share the machine, so the accepted rate is what it sustained; usage reaches `available` only after the rater flushes (bench/results/live-balance.md), which bounds the event → notice figure from below.',
          '',
          verdict(result.loaded, result.background.acceptedEventsPerS),
          '',
        ].join('\n'),
      );
    }
  } finally {
    await drawdown.stop();
    sub.unsubscribe();
    await nc.close();
    receiver.closeAllConnections();
    receiver.close();
    await nats.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
