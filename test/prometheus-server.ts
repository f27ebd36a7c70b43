/**
 * A real Prometheus server (Debian's `prometheus`) child process for local
 * runs and tests: bound to 127.0.0.1, scraping the given drawdown /metrics
 * targets, with its config, TSDB and log under one directory. `query` asks
 * its HTTP API, so a test sees exactly what a dashboard would.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../deploy/free-port.js';
import {
  findBinary,
  httpGet,
  LaunchError,
  logTail,
  ManagedServer,
  retryWhilePortInUse,
  type Launched,
} from '../deploy/server-process.js';

export interface PrometheusTarget {
  /** host:port serving /metrics. */
  address: string;
  /** The `job` label Prometheus gives the target's series, e.g. drawdown-ingest. */
  job: string;
}

export interface PrometheusServerOptions {
  dir: string;
  targets: readonly PrometheusTarget[];
  /** Web/API port; default: a free port. */
  port?: number;
  /** How often each target is scraped; default 15 s, at least 1 s (Prometheus's own floor for a sane config). */
  scrapeIntervalMs?: number;
  /** How long start()/restart() wait for /-/ready; default 30 s. */
  startTimeoutMs?: number;
}

/** One sample of an instant vector: its labels and its value. */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

const DEFAULT_SCRAPE_INTERVAL_MS = 15_000;
const SCRAPE_INTERVAL_MIN_MS = 1_000;
const DEFAULT_START_TIMEOUT_MS = 30_000;
// Prometheus writes its head block on SIGTERM; a test TSDB is tiny.
const STOP_GRACE_MS = 10_000;
const POLL_INTERVAL_MS = 100;
const PROBE_TIMEOUT_MS = 2_000;
const QUERY_TIMEOUT_MS = 10_000;
const LAUNCH_RETRY_DELAY_MS = 300;

interface Settings {
  dir: string;
  binary: string;
  port: number;
  targets: readonly PrometheusTarget[];
  scrapeIntervalMs: number;
  startTimeoutMs: number;
}

export class PrometheusServerProcess extends ManagedServer {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  readonly scrapeIntervalMs: number;

  private constructor(private readonly settings: Settings) {
    super(STOP_GRACE_MS, LAUNCH_RETRY_DELAY_MS);
    this.port = settings.port;
    this.dir = settings.dir;
    this.scrapeIntervalMs = settings.scrapeIntervalMs;
    this.url = `http://127.0.0.1:${settings.port}`;
  }

  static async start(options: PrometheusServerOptions): Promise<PrometheusServerProcess> {
    const scrapeIntervalMs = options.scrapeIntervalMs ?? DEFAULT_SCRAPE_INTERVAL_MS;
    if (!Number.isInteger(scrapeIntervalMs) || scrapeIntervalMs < SCRAPE_INTERVAL_MIN_MS) {
      throw new RangeError(
        `scrapeIntervalMs must be an integer of at least ${SCRAPE_INTERVAL_MIN_MS}, got ${scrapeIntervalMs}`,
      );
    }
    for (const target of options.targets) {
      if (!/^[A-Za-z0-9.-]+:\d{1,5}$/.test(target.address))
        throw new Error(`target address must be host:port, got ${JSON.stringify(target.address)}`);
      if (!/^[A-Za-z0-9_.-]+$/.test(target.job))
        throw new Error(`target job must be [A-Za-z0-9_.-]+, got ${JSON.stringify(target.job)}`);
    }
    const dir = resolve(options.dir);
    mkdirSync(dir, { recursive: true });
    const binary = findBinary('prometheus');
    return retryWhilePortInUse(async () => {
      const server = new PrometheusServerProcess({
        dir,
        binary,
        port: options.port ?? (await freePort()),
        targets: options.targets,
        scrapeIntervalMs,
        startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      });
      await server.launch();
      return server;
    }, LAUNCH_RETRY_DELAY_MS);
  }

  protected async launch(): Promise<void> {
    const { dir, binary, port } = this.settings;
    const configPath = join(dir, 'prometheus.yml');
    writeFileSync(configPath, prometheusConfig(this.settings));
    const logPath = join(dir, 'prometheus.log');
    const args = [
      `--config.file=${configPath}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      // Debian's default looks for consoles under /etc/prometheus; nothing here uses them.
      `--web.console.templates=${join(dir, 'consoles')}`,
      `--web.console.libraries=${join(dir, 'console_libraries')}`,
    ];
    await this.run(binary, args, logPath, [logPath], (launched) => this.waitReady(launched));
  }

  private async waitReady(launched: Launched): Promise<void> {
    const { settings } = this;
    const deadline = Date.now() + settings.startTimeoutMs;
    for (;;) {
      if (launched.ended !== undefined) {
        const tail = logTail(launched);
        throw new LaunchError(
          `prometheus (port ${settings.port}, dir ${settings.dir}) exited during startup (${launched.ended}); ${tail}`,
          /address already in use/i.test(tail),
        );
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0)
        throw new LaunchError(
          `prometheus (port ${settings.port}) was not ready within ${settings.startTimeoutMs} ms; ${logTail(launched)}`,
          false,
        );
      const ready = await httpGet(`${this.url}/-/ready`, Math.min(PROBE_TIMEOUT_MS, remaining));
      if (ready?.status === 200) return;
      await Promise.race([sleep(POLL_INTERVAL_MS), launched.exited]);
    }
  }

  /** An instant query through /api/v1/query; throws on anything but a vector result. */
  async query(expr: string): Promise<PromSample[]> {
    const answer = await httpGet(`${this.url}/api/v1/query?query=${encodeURIComponent(expr)}`, QUERY_TIMEOUT_MS);
    if (answer === undefined) throw new Error(`prometheus did not answer the query ${expr}`);
    const body = JSON.parse(answer.body) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    if (body.status !== 'success' || body.data?.resultType !== 'vector')
      throw new Error(`query ${expr} failed: ${body.error ?? answer.body.slice(0, 200)}`);
    return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  /** Each target's last scrape health ('up', 'down', 'unknown'), by address. */
  async targetHealth(): Promise<Map<string, string>> {
    const answer = await httpGet(`${this.url}/api/v1/targets?state=active`, QUERY_TIMEOUT_MS);
    const body = JSON.parse(answer?.body ?? '{}') as {
      data?: { activeTargets?: { labels: Record<string, string>; health: string }[] };
    };
    return new Map((body.data?.activeTargets ?? []).map((t) => [t.labels.instance ?? '', t.health]));
  }
}

function prometheusConfig(settings: Settings): string {
  const seconds = `${settings.scrapeIntervalMs / 1000}s`;
  const jobs = new Map<string, string[]>();
  for (const target of settings.targets) jobs.set(target.job, [...(jobs.get(target.job) ?? []), target.address]);
  const lines = [
    '# Written by test/prometheus-server.ts on every start; edits here are overwritten.',
    'global:',
    `  scrape_interval: ${seconds}`,
    // A scrape may not outlast its interval.
    `  scrape_timeout: ${seconds}`,
    `  evaluation_interval: ${seconds}`,
    'scrape_configs:',
  ];
  for (const [job, addresses] of jobs) {
    lines.push(
      `  - job_name: ${JSON.stringify(job)}`,
      '    metrics_path: /metrics',
      '    static_configs:',
      `      - targets: [${addresses.map((a) => JSON.stringify(a)).join(', ')}]`,
    );
  }
  return lines.join('\n') + '\n';
}
