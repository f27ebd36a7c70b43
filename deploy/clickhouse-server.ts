/**
 * A real clickhouse-server (Debian's 18.16) child process for local runs and
 * tests, bound to 127.0.0.1, with its config, data and logs under one
 * directory so a restart finds the tables the previous run left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, mkdirSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { delimiter, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './free-port.js';

export interface ClickHouseServerOptions {
  dir: string;
  /** HTTP interface port; default: a free port. */
  httpPort?: number;
  /** Native protocol port; default: a free port. */
  tcpPort?: number;
  /** How long start()/restart() wait for /ping to answer; default 30 s. */
  startTimeoutMs?: number;
}

const DEFAULT_START_TIMEOUT_MS = 30_000;
// 18.16 gives open connections 5 s on SIGTERM (shutdown_wait_unfinished) and
// then can hang several more seconds on a client's idle keep-alive socket,
// while its own storage shutdown takes milliseconds: past 5 s, killing it
// loses nothing a graceful exit would have kept.
const STOP_GRACE_MS = 5_000;
const POLL_INTERVAL_MS = 100;
const PROBE_TIMEOUT_MS = 1_000;
const LOG_TAIL_LINES = 20;
// Only the end of a long-lived log matters for an error message.
const LOG_TAIL_MAX_BYTES = 64 * 1024;
// A port can be taken by a racing process between freePort() and bind, or not
// yet released by a server that was just killed: retry a few times.
const LAUNCH_ATTEMPTS = 5;
const LAUNCH_RETRY_DELAY_MS = 250;

// Servers must not outlive the process that started them. 'exit' handlers
// run synchronously, so there is no time for a graceful SIGTERM here.
const liveChildren = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

interface Settings {
  dir: string;
  binary: string;
  httpPort: number;
  tcpPort: number;
  startTimeoutMs: number;
}

/** One spawned child; `ended` is set synchronously when it exits, so polling loops see it at once. */
interface Launched {
  child: ChildProcess;
  exited: Promise<void>;
  ended: string | undefined;
  /** Where each log file ended before this launch, so errors show only this launch's lines. */
  logOffsets: Map<string, number>;
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

export class ClickHouseServerProcess {
  readonly url: string;
  readonly httpPort: number;
  readonly tcpPort: number;
  readonly dir: string;
  private launched: Launched | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly settings: Settings) {
    this.httpPort = settings.httpPort;
    this.tcpPort = settings.tcpPort;
    this.dir = settings.dir;
    this.url = `http://127.0.0.1:${settings.httpPort}`;
  }

  /** The running server's pid, or undefined while stopped. */
  get pid(): number | undefined {
    const launched = this.launched;
    return launched && launched.ended === undefined ? launched.child.pid : undefined;
  }

  static async start(options: ClickHouseServerOptions): Promise<ClickHouseServerProcess> {
    const dir = resolve(options.dir);
    mkdirSync(dir, { recursive: true });
    const binary = findBinary('clickhouse-server');
    for (let attempt = 1; ; attempt++) {
      const server = new ClickHouseServerProcess({
        dir,
        binary,
        httpPort: options.httpPort ?? (await freePort()),
        tcpPort: options.tcpPort ?? (await freePort()),
        startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      });
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

  /** Stop the server if running and start it again on the same ports and data directory. */
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

  private logPaths(): string[] {
    return [join(this.dir, 'error.log'), join(this.dir, 'stdout.log')];
  }

  private async launch(): Promise<void> {
    const { dir, binary } = this.settings;
    const configPath = join(dir, 'config.xml');
    writeFileSync(configPath, serverConfig(this.settings));
    writeFileSync(join(dir, 'users.xml'), USERS_XML);
    const logOffsets = new Map(this.logPaths().map((path) => [path, fileSize(path)]));
    const launched = spawnServer(binary, [`--config-file=${configPath}`], join(dir, 'stdout.log'), logOffsets);
    this.launched = launched;
    try {
      await this.waitReady(launched);
    } catch (error) {
      this.launched = undefined;
      if (launched.ended === undefined) {
        launched.child.kill('SIGKILL');
        await launched.exited;
      }
      throw error;
    }
  }

  private async waitReady(launched: Launched): Promise<void> {
    const { settings } = this;
    const where = `clickhouse-server (http ${settings.httpPort}, tcp ${settings.tcpPort}, dir ${settings.dir})`;
    const deadline = Date.now() + settings.startTimeoutMs;
    for (;;) {
      if (launched.ended !== undefined) {
        const tail = this.logTail(launched);
        throw new LaunchError(`${where} exited during startup (${launched.ended}); ${tail}`, /address already in use/i.test(tail));
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new LaunchError(`${where} did not answer /ping within ${settings.startTimeoutMs} ms; ${this.logTail(launched)}`, false);
      }
      const ping = await httpGet(`${this.url}/ping`, Math.min(PROBE_TIMEOUT_MS, remaining));
      if (ping?.status === 200 && ping.body.trim() === 'Ok.') {
        await this.checkIdentity(launched, where);
        return;
      }
      await Promise.race([sleep(POLL_INTERVAL_MS), launched.exited]);
    }
  }

  // "Ok." could come from another clickhouse-server that holds our HTTP port
  // (ours would then be failing to bind it), so make sure it serves our data directory.
  private async checkIdentity(launched: Launched, where: string): Promise<void> {
    const expected = `${join(this.dir, 'data')}/data/system/`;
    const query = encodeURIComponent("SELECT data_path FROM system.databases WHERE name = 'system'");
    const answer = await httpGet(`${this.url}/?query=${query}`, PROBE_TIMEOUT_MS);
    const actual = answer?.status === 200 ? answer.body.trim() : `no answer (${answer?.status ?? 'connection failed'})`;
    if (actual !== expected) {
      throw new LaunchError(`another server answers on ${where}'s HTTP port: its system database lives at ${actual}, expected ${expected}; ${this.logTail(launched)}`, true);
    }
  }

  private logTail(launched: Launched): string {
    const parts = this.logPaths().map((path) => {
      const lines = tailLines(path, launched.logOffsets.get(path) ?? 0);
      return lines.length > 0 ? `last lines of ${path}:\n${lines.join('\n')}` : `${path} has nothing new`;
    });
    return parts.join('\n');
  }
}

function xmlText(value: string | number): string {
  return String(value).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

// 18.16's root element is <yandex>, and it refuses to start on settings it
// does not know (allow_experimental_decimal_type, for one). query_log and
// part_log stay off because they are only on when configured; the mark cache
// is kept small for small test machines.
function serverConfig(settings: Settings): string {
  const path = (sub: string) => xmlText(`${join(settings.dir, sub)}/`);
  return `<?xml version="1.0"?>
<!-- Written by deploy/clickhouse-server.ts on every start; edits here are overwritten. -->
<yandex>
  <logger><level>warning</level><log>${xmlText(join(settings.dir, 'server.log'))}</log><errorlog>${xmlText(join(settings.dir, 'error.log'))}</errorlog><console>0</console></logger>
  <http_port>${settings.httpPort}</http_port>
  <tcp_port>${settings.tcpPort}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>${path('data')}</path>
  <tmp_path>${path('tmp')}</tmp_path>
  <user_files_path>${path('user_files')}</user_files_path>
  <format_schema_path>${path('format_schemas')}</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</yandex>
`;
}

const USERS_XML = `<?xml version="1.0"?>
<!-- Written by deploy/clickhouse-server.ts on every start; edits here are overwritten. -->
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`;

function spawnServer(binary: string, args: string[], stdoutPath: string, logOffsets: Map<string, number>): Launched {
  // The server writes straight to the file, so its output never depends on
  // this process's event loop keeping up.
  const outFd = openSync(stdoutPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, args, { stdio: ['ignore', outFd, outFd] });
  } finally {
    // The child holds its own copy of the descriptor.
    closeSync(outFd);
  }
  liveChildren.add(child);
  const launched: Launched = { child, exited: Promise.resolve(), ended: undefined, logOffsets };
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

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
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
