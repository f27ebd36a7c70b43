/**
 * A real nats-server child process for local runs and tests: JetStream with
 * file storage, bound to 127.0.0.1, with its config, data and log under one
 * directory so a restart finds everything where the previous run left it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, fstatSync, mkdirSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { delimiter, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './free-port.js';

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
  /** JetStream clustering identifies peers by name, so it must stay stable across restarts; default: random per start(). */
  serverName?: string;
  /** Append server output to dir/nats.log (default true). When false, only the last lines are kept in memory for error messages. */
  logFile?: boolean;
  /** How long start()/restart() wait for the server to report healthy; default 15 s. */
  startTimeoutMs?: number;
}

const MiB = 1024 * 1024;
const DEFAULT_MAX_FILE_STORE = 10 * 1024 * MiB;
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
const LOG_TAIL_LINES = 20;
// Only the end of a long-lived log matters for an error message.
const LOG_TAIL_MAX_BYTES = 64 * 1024;
// A port can be taken by a racing process between freePort() and bind, or not
// yet released by a server that was just killed: retry a few times.
const LAUNCH_ATTEMPTS = 5;
const LAUNCH_RETRY_DELAY_MS = 300;

// Servers must not outlive the process that started them. 'exit' handlers
// run synchronously, so there is no time for a graceful SIGTERM here.
const liveChildren = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

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

/** One spawned child; `ended` is set synchronously when it exits, so polling loops see it at once. */
interface Launched {
  child: ChildProcess;
  exited: Promise<void>;
  ended: string | undefined;
  logOffset: number;
  /** Recent output when there is no log file. */
  recent: string[];
}

/** A failed launch; `portInUse` says whether retrying (later, or on other ports) can help. */
class LaunchError extends Error {
  constructor(
    message: string,
    readonly portInUse: boolean,
  ) {
    super(message);
  }
}

export class NatsServerProcess {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  private launched: Launched | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly settings: Settings) {
    this.port = settings.port;
    this.dir = settings.dir;
    this.url = `nats://127.0.0.1:${settings.port}`;
  }

  /** The running server's pid, or undefined while stopped. */
  get pid(): number | undefined {
    const launched = this.launched;
    return launched && launched.ended === undefined ? launched.child.pid : undefined;
  }

  static async start(options: NatsServerOptions): Promise<NatsServerProcess> {
    const maxPayload = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD;
    if (!Number.isInteger(maxPayload) || maxPayload < 1 || maxPayload > MAX_PAYLOAD_CEILING) {
      throw new RangeError(`maxPayloadBytes must be an integer from 1 to ${MAX_PAYLOAD_CEILING} (64 MiB), got ${maxPayload}`);
    }
    const maxFileStore = options.jetstreamMaxFileBytes ?? DEFAULT_MAX_FILE_STORE;
    if (!Number.isInteger(maxFileStore) || maxFileStore < 1) {
      throw new RangeError(`jetstreamMaxFileBytes must be a positive integer, got ${maxFileStore}`);
    }
    const { clusterName } = options;
    if (clusterName === undefined && ((options.routes?.length ?? 0) > 0 || options.clusterPort !== undefined)) {
      throw new Error('clusterName is required when routes or clusterPort are given: JetStream clustering needs a cluster name');
    }
    const dir = resolve(options.dir);
    mkdirSync(dir, { recursive: true });
    const binary = findBinary('nats-server');
    const serverName = options.serverName ?? `drawdown-${randomBytes(4).toString('hex')}`;

    for (let attempt = 1; ; attempt++) {
      const settings: Settings = {
        dir,
        binary,
        configPath: join(dir, 'nats.conf'),
        logPath: options.logFile === false ? undefined : join(dir, 'nats.log'),
        port: options.port ?? (await freePort()),
        serverName,
        maxFileStore,
        maxPayload,
        cluster: clusterName === undefined ? undefined : { name: clusterName, port: options.clusterPort ?? (await freePort()), routes: options.routes ?? [] },
        startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      };
      const server = new NatsServerProcess(settings);
      try {
        await server.launch();
        return server;
      } catch (error) {
        if (!(error instanceof LaunchError && error.portInUse) || attempt >= LAUNCH_ATTEMPTS) throw error;
        // Ports we picked are simply picked again; ports the caller chose may just need a moment.
        await sleep(LAUNCH_RETRY_DELAY_MS * attempt);
      }
    }
  }

  /** Graceful stop: SIGTERM, then SIGKILL if the server is still running after 5 s. */
  async stop(): Promise<void> {
    return this.serially(() => this.terminate(true));
  }

  /** Crash the server: SIGKILL, no chance to flush or clean up. */
  async kill(): Promise<void> {
    return this.serially(() => this.terminate(false));
  }

  /** Stop the server if running and start it again on the same ports, config and data. */
  async restart(): Promise<void> {
    return this.serially(async () => {
      await this.terminate(true);
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.launch();
        } catch (error) {
          if (!(error instanceof LaunchError && error.portInUse) || attempt >= LAUNCH_ATTEMPTS) throw error;
          await sleep(LAUNCH_RETRY_DELAY_MS * attempt);
        }
      }
    });
  }

  // Operations overlap in tests (a kill while a stop is pending); running them
  // one at a time keeps every state transition simple.
  private serially<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.queue.then(operation);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async terminate(graceful: boolean): Promise<void> {
    const launched = this.launched;
    this.launched = undefined;
    if (!launched || launched.ended !== undefined) return;
    if (graceful) {
      launched.child.kill('SIGTERM');
      if (await exitsWithin(launched, STOP_GRACE_MS)) return;
    }
    launched.child.kill('SIGKILL');
    await launched.exited;
  }

  private async launch(): Promise<void> {
    const { settings } = this;
    // The monitoring port is only for our readiness probe, so every launch
    // takes a fresh one rather than risk it being taken since the last run.
    const httpPort = await freePort();
    writeFileSync(settings.configPath, natsConfig(settings, httpPort));
    const launched = spawnServer(settings.binary, ['-c', settings.configPath], settings.logPath);
    this.launched = launched;
    try {
      await this.waitReady(launched, httpPort);
    } catch (error) {
      this.launched = undefined;
      if (launched.ended === undefined) {
        launched.child.kill('SIGKILL');
        await launched.exited;
      }
      throw error;
    }
  }

  private async waitReady(launched: Launched, httpPort: number): Promise<void> {
    const { settings } = this;
    const deadline = Date.now() + settings.startTimeoutMs;
    // js-enabled-only: a clustered node whose peers are not up yet is still usable to wait on.
    const healthUrl = `http://127.0.0.1:${httpPort}/healthz?js-enabled-only=true`;
    for (;;) {
      if (launched.ended !== undefined) {
        const tail = this.logTail(launched);
        throw new LaunchError(`nats-server (port ${settings.port}, dir ${settings.dir}) exited during startup (${launched.ended}); ${tail}`, /address already in use/i.test(tail));
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new LaunchError(`nats-server (port ${settings.port}, dir ${settings.dir}) did not report healthy within ${settings.startTimeoutMs} ms; ${this.logTail(launched)}`, false);
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
        `another server answers on nats-server's monitoring port ${httpPort} (server_name ${String(identity.server_name)}, port ${String(identity.port)}); ${this.logTail(launched)}`,
        true,
      );
    }
  }

  private logTail(launched: Launched): string {
    const lines = this.settings.logPath ? tailLines(this.settings.logPath, launched.logOffset) : launched.recent.slice(-LOG_TAIL_LINES);
    const source = this.settings.logPath ?? 'output';
    return lines.length > 0 ? `last lines of ${source}:\n${lines.join('\n')}` : `${source} is empty`;
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

function spawnServer(binary: string, args: string[], logPath: string | undefined): Launched {
  // The server writes straight to the log file, so its output never depends
  // on this process's event loop keeping up.
  const logFd = logPath ? openSync(logPath, 'a') : undefined;
  let child: ChildProcess;
  let logOffset = 0;
  try {
    if (logFd !== undefined) logOffset = fstatSync(logFd).size;
    child = spawn(binary, args, { stdio: ['ignore', logFd ?? 'pipe', logFd ?? 'pipe'] });
  } finally {
    // The child holds its own copy of the descriptor.
    if (logFd !== undefined) closeSync(logFd);
  }
  liveChildren.add(child);
  const launched: Launched = { child, exited: Promise.resolve(), ended: undefined, logOffset, recent: [] };
  if (logFd === undefined) {
    const remember = (chunk: Buffer) => {
      launched.recent.push(...chunk.toString().split('\n').filter((line) => line.length > 0));
      launched.recent.splice(0, Math.max(0, launched.recent.length - LOG_TAIL_LINES));
    };
    child.stdout?.on('data', remember);
    child.stderr?.on('data', remember);
  }
  launched.exited = new Promise<void>((resolveExit) => {
    const end = (how: string) => {
      if (launched.ended !== undefined) return;
      launched.ended = how;
      liveChildren.delete(child);
      resolveExit();
    };
    child.once('exit', (code, signal) => end(signal ? `killed by ${signal}` : `exit code ${code}`));
    child.once('error', (error) => end(`could not run ${binary}: ${error.message}`));
  });
  return launched;
}

async function exitsWithin(launched: Launched, ms: number): Promise<boolean> {
  const timer = new AbortController();
  try {
    return await Promise.race([launched.exited.then(() => true), sleep(ms, false, { signal: timer.signal })]);
  } finally {
    timer.abort();
  }
}

/**
 * GET with a hard timeout; undefined when nothing answered. Each probe uses its
 * own connection and closes it: an idle keep-alive connection would hold up
 * the server's graceful shutdown later.
 */
function httpGet(url: string, timeoutMs: number): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const request = get(url, { agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    const timer = setTimeout(() => request.destroy(), timeoutMs);
    // 'close' always comes last; when it comes before a complete answer, nothing usable answered.
    request.on('close', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
    request.on('error', () => resolve(undefined));
  });
}

/** The last lines written to a file since `fromOffset`. */
function tailLines(path: string, fromOffset: number): string[] {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return [];
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(fromOffset, size - LOG_TAIL_MAX_BYTES);
    const buffer = Buffer.alloc(Math.max(0, size - start));
    readSync(fd, buffer, 0, buffer.length, start);
    return buffer.toString().split('\n').filter((line) => line.length > 0).slice(-LOG_TAIL_LINES);
  } finally {
    closeSync(fd);
  }
}

// Debian installs the server to /usr/sbin, which is not on a normal user's PATH.
function findBinary(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((dir) => dir.length > 0), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // Not here; try the next directory.
    }
  }
  throw new Error(`${name} not found on PATH or in /usr/sbin; run \`bash deploy/install.sh\` (as root it installs it with apt-get)`);
}
