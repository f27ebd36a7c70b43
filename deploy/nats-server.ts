/**
 * A real nats-server child process for local runs and tests: JetStream with
 * file storage, bound to 127.0.0.1, with its config, data and log under one
 * directory so a restart finds everything where the previous run left it.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './free-port.js';
import {
  findBinary,
  httpGet,
  LaunchError,
  logTail,
  ManagedServer,
  retryWhilePortInUse,
  type Launched,
} from './server-process.js';

export interface NatsServerOptions {
  dir: string;
  /** Client port; default: a free port. */
  port?: number;
  /** JetStream file storage limit; default 10 GiB. */
  jetstreamMaxFileBytes?: number;
  /** Largest message the server accepts; default 8 MiB, at most 64 MiB. */
  maxPayloadBytes?: number;
  /** Setting any of clusterName, routes or clusterPort turns on clustering (clusterName is then required). */
  clusterName?: string;
  routes?: string[];
  /** Route listener port; default: a free port when clustered. */
  clusterPort?: number;
  /**
   * JetStream clustering identifies peers by name, so it must stay stable across restarts; default: random per
   * start().
   */
  serverName?: string;
  /**
   * Append server output to dir/nats.log (default true). When false, only the last lines are kept in memory for error
   * messages.
   */
  logFile?: boolean;
  /** How long start()/restart() wait for the server to report healthy; default 15 s. */
  startTimeoutMs?: number;
}

const MiB = 1024 * 1024;
const DEFAULT_MAX_FILE_STORE = 10 * 1024 * MiB;
export const defaultMaxFileStoreBytes = DEFAULT_MAX_FILE_STORE;
const DEFAULT_MAX_PAYLOAD = 8 * MiB;
// 2.9 accepts more, but newer servers refuse anything above 64 MiB; failing
// here keeps a config that works now from breaking on an upgrade.
const MAX_PAYLOAD_CEILING = 64 * MiB;
// Nothing here uses memory streams; keep the reservation small.
const MAX_MEM_STORE = 64 * MiB;
const DEFAULT_START_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;
const POLL_INTERVAL_MS = 50;
const PROBE_TIMEOUT_MS = 1_000;
const LAUNCH_RETRY_DELAY_MS = 300;

interface Settings {
  dir: string;
  binary: string;
  configPath: string;
  logPath: string | undefined;
  port: number;
  serverName: string;
  maxFileStore: number;
  maxPayload: number;
  cluster: { name: string; port: number; routes: string[] } | undefined;
  startTimeoutMs: number;
}

export class NatsServerProcess extends ManagedServer {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  private constructor(private readonly settings: Settings) {
    super(STOP_GRACE_MS, LAUNCH_RETRY_DELAY_MS);
    this.port = settings.port;
    this.dir = settings.dir;
    this.url = `nats://127.0.0.1:${settings.port}`;
  }

  static async start(options: NatsServerOptions): Promise<NatsServerProcess> {
    const maxPayload = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD;
    if (!Number.isInteger(maxPayload) || maxPayload < 1 || maxPayload > MAX_PAYLOAD_CEILING) {
      throw new RangeError(
        `maxPayloadBytes must be an integer from 1 to ${MAX_PAYLOAD_CEILING} (64 MiB), got ${maxPayload}`,
      );
    }
    const maxFileStore = options.jetstreamMaxFileBytes ?? DEFAULT_MAX_FILE_STORE;
    if (!Number.isInteger(maxFileStore) || maxFileStore < 1) {
      throw new RangeError(`jetstreamMaxFileBytes must be a positive integer, got ${maxFileStore}`);
    }
    const { clusterName } = options;
    if (clusterName === undefined && ((options.routes?.length ?? 0) > 0 || options.clusterPort !== undefined)) {
      throw new Error(
        'clusterName is required when routes or clusterPort are given: JetStream clustering needs a cluster name',
      );
    }
    const dir = resolve(options.dir);
    mkdirSync(dir, { recursive: true });
    const binary = findBinary('nats-server');
    const serverName = options.serverName ?? `drawdown-${randomBytes(4).toString('hex')}`;

    // Ports we picked are simply picked again; ports the caller chose may just need a moment.
    return retryWhilePortInUse(async () => {
      const settings: Settings = {
        dir,
        binary,
        configPath: join(dir, 'nats.conf'),
        logPath: options.logFile === false ? undefined : join(dir, 'nats.log'),
        port: options.port ?? (await freePort()),
        serverName,
        maxFileStore,
        maxPayload,
        cluster:
          clusterName === undefined
            ? undefined
            : { name: clusterName, port: options.clusterPort ?? (await freePort()), routes: options.routes ?? [] },
        startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      };
      const server = new NatsServerProcess(settings);
      await server.launch();
      return server;
    }, LAUNCH_RETRY_DELAY_MS);
  }

  protected async launch(): Promise<void> {
    const { settings } = this;
    // The monitoring port is only for our readiness probe, so every launch
    // takes a fresh one rather than risk it being taken since the last run.
    const httpPort = await freePort();
    writeFileSync(settings.configPath, natsConfig(settings, httpPort));
    const logs = settings.logPath ? [settings.logPath] : [];
    await this.run(settings.binary, ['-c', settings.configPath], settings.logPath, logs, (launched) =>
      this.waitReady(launched, httpPort),
    );
  }

  private async waitReady(launched: Launched, httpPort: number): Promise<void> {
    const { settings } = this;
    const deadline = Date.now() + settings.startTimeoutMs;
    // js-enabled-only: a clustered node whose peers are not up yet is still usable to wait on.
    const healthUrl = `http://127.0.0.1:${httpPort}/healthz?js-enabled-only=true`;
    for (;;) {
      if (launched.ended !== undefined) {
        const tail = logTail(launched);
        throw new LaunchError(
          `nats-server (port ${settings.port}, dir ${settings.dir}) exited during startup (${launched.ended}); ${tail}`,
          /address already in use/i.test(tail),
        );
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new LaunchError(
          `nats-server (port ${settings.port}, dir ${settings.dir}) did not report healthy within ${settings.startTimeoutMs} ms; ${logTail(launched)}`,
          false,
        );
      }
      const health = await httpGet(healthUrl, Math.min(PROBE_TIMEOUT_MS, remaining));
      if (health?.status === 200) {
        await this.checkIdentity(launched, httpPort);
        return;
      }
      await Promise.race([sleep(POLL_INTERVAL_MS), launched.exited]);
    }
  }

  // A healthy answer could come from some other server that holds the
  // monitoring port (ours would then be failing to bind it), so make sure it is ours.
  private async checkIdentity(launched: Launched, httpPort: number): Promise<void> {
    const varz = await httpGet(`http://127.0.0.1:${httpPort}/varz`, PROBE_TIMEOUT_MS);
    let identity: { server_name?: unknown; port?: unknown } = {};
    try {
      identity = JSON.parse(varz?.body ?? '{}') as typeof identity;
    } catch {
      // Not JSON: certainly not our server; reported below.
    }
    if (identity.server_name !== this.settings.serverName || identity.port !== this.settings.port) {
      throw new LaunchError(
        `another server answers on nats-server's monitoring port ${httpPort} (server_name ${String(identity.server_name)}, port ${String(identity.port)}); ${logTail(launched)}`,
        true,
      );
    }
  }
}

function natsConfig(settings: Settings, httpPort: number): string {
  const quote = (value: string) => JSON.stringify(value);
  const lines = [
    '# Written by deploy/nats-server.ts on every start; edits here are overwritten.',
    `server_name: ${quote(settings.serverName)}`,
    `listen: ${quote(`127.0.0.1:${settings.port}`)}`,
    `http: ${quote(`127.0.0.1:${httpPort}`)}`,
    `max_payload: ${settings.maxPayload}`,
    // The server refuses a max_payload above max_pending.
    `max_pending: ${Math.max(64 * MiB, 2 * settings.maxPayload)}`,
    'jetstream {',
    `  store_dir: ${quote(join(settings.dir, 'jetstream'))}`,
    `  max_file_store: ${settings.maxFileStore}`,
    `  max_mem_store: ${MAX_MEM_STORE}`,
    '}',
  ];
  const { cluster } = settings;
  if (cluster) {
    lines.push('cluster {', `  name: ${quote(cluster.name)}`, `  listen: ${quote(`127.0.0.1:${cluster.port}`)}`);
    if (cluster.routes.length > 0) lines.push(`  routes: [${cluster.routes.map(quote).join(', ')}]`);
    lines.push('}');
  }
  return lines.join('\n') + '\n';
}
