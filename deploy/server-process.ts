/**
 * What every locally managed server (nats-server, clickhouse-server) shares:
 * spawning with its output in a file, waiting for readiness with a bounded
 * timeout, bounded launch retries when a port is taken, graceful stop then
 * kill, restart on the same ports, and never outliving this process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const LOG_TAIL_LINES = 20;
// Only the end of a long-lived log matters for an error message.
const LOG_TAIL_MAX_BYTES = 64 * 1024;
// A port can be taken by a racing process between freePort() and bind, or not
// yet released by a server that was just killed: retry a few times.
const LAUNCH_ATTEMPTS = 5;

// Servers must not outlive the process that started them. 'exit' handlers
// run synchronously, so there is no time for a graceful SIGTERM here.
const liveChildren = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

/** One spawned child; `ended` is set synchronously when it exits, so polling loops see it at once. */
export interface Launched {
  child: ChildProcess;
  exited: Promise<void>;
  ended: string | undefined;
  /** Where each watched log file ended before this launch, so errors show only this launch's lines. */
  logOffsets: Map<string, number>;
  /** Recent output when there is no output file. */
  recent: string[];
}

/** A failed launch; `portInUse` says whether retrying (later, or on other ports) can help. */
export class LaunchError extends Error {
  constructor(
    message: string,
    readonly portInUse: boolean,
  ) {
    super(message);
  }
}

/** Retries `launch` while it fails only because a port is in use, a bounded number of times. */
export async function retryWhilePortInUse<T>(launch: () => Promise<T>, delayMs: number): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch();
    } catch (error) {
      if (!(error instanceof LaunchError && error.portInUse) || attempt >= LAUNCH_ATTEMPTS) throw error;
      await sleep(delayMs * attempt);
    }
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * Spawns a server. With `outputPath` its stdout and stderr go straight to
 * that file, so its output never depends on this process's event loop keeping
 * up; without, the last lines are kept in memory for error messages.
 */
export function spawnServer(
  binary: string,
  args: string[],
  outputPath: string | undefined,
  watchedLogs: readonly string[],
): Launched {
  const logOffsets = new Map(watchedLogs.map((path) => [path, fileSize(path)]));
  const outFd = outputPath ? openSync(outputPath, 'a') : undefined;
  let child: ChildProcess;
  try {
    child = spawn(binary, args, { stdio: ['ignore', outFd ?? 'pipe', outFd ?? 'pipe'] });
  } finally {
    // The child holds its own copy of the descriptor.
    if (outFd !== undefined) closeSync(outFd);
  }
  liveChildren.add(child);
  const launched: Launched = { child, exited: Promise.resolve(), ended: undefined, logOffsets, recent: [] };
  if (outFd === undefined) {
    const remember = (chunk: Buffer): void => {
      launched.recent.push(
        ...chunk
          .toString()
          .split('\n')
          .filter((line) => line.length > 0),
      );
      launched.recent.splice(0, Math.max(0, launched.recent.length - LOG_TAIL_LINES));
    };
    child.stdout?.on('data', remember);
    child.stderr?.on('data', remember);
  }
  launched.exited = new Promise<void>((resolveExit) => {
    const end = (how: string): void => {
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

/** What this launch wrote to its watched logs (or its in-memory output), for error messages. */
export function logTail(launched: Launched): string {
  if (launched.logOffsets.size === 0) {
    const lines = launched.recent.slice(-LOG_TAIL_LINES);
    return lines.length > 0 ? `last lines of output:\n${lines.join('\n')}` : 'output is empty';
  }
  return [...launched.logOffsets]
    .map(([path, offset]) => {
      const lines = tailLines(path, offset);
      return lines.length > 0 ? `last lines of ${path}:\n${lines.join('\n')}` : `${path} has nothing new`;
    })
    .join('\n');
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
    return buffer
      .toString()
      .split('\n')
      .filter((line) => line.length > 0)
      .slice(-LOG_TAIL_LINES);
  } finally {
    closeSync(fd);
  }
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
export function httpGet(url: string, timeoutMs: number): Promise<{ status: number; body: string } | undefined> {
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

// Debian installs the servers to /usr/sbin, which is not on a normal user's PATH.
export function findBinary(name: string): string {
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter).filter((dir) => dir.length > 0),
    '/usr/local/sbin',
    '/usr/sbin',
    '/sbin',
  ];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // Not here; try the next directory.
    }
  }
  throw new Error(
    `${name} not found on PATH or in /usr/sbin; run \`bash deploy/install.sh\` (as root it installs it with apt-get)`,
  );
}

/**
 * The lifecycle of one server: subclasses say how to launch it and how to
 * know it is ready; stop, kill and restart are the same for every server.
 */
export abstract class ManagedServer {
  protected launched: Launched | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  protected constructor(
    private readonly stopGraceMs: number,
    private readonly launchRetryDelayMs: number,
  ) {}

  /** The running server's pid, or undefined while stopped. */
  get pid(): number | undefined {
    const launched = this.launched;
    return launched && launched.ended === undefined ? launched.child.pid : undefined;
  }

  /** Graceful stop: SIGTERM, then SIGKILL if the server is still running after the grace period. */
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
      await retryWhilePortInUse(() => this.launch(), this.launchRetryDelayMs);
    });
  }

  /** Writes the config and starts the process (via `run`); resolves once it is ready. */
  protected abstract launch(): Promise<void>;

  /** Spawns, waits for `ready`, and on failure makes sure the child is gone. */
  protected async run(
    binary: string,
    args: string[],
    outputPath: string | undefined,
    watchedLogs: readonly string[],
    ready: (launched: Launched) => Promise<void>,
  ): Promise<void> {
    const launched = spawnServer(binary, args, outputPath, watchedLogs);
    this.launched = launched;
    try {
      await ready(launched);
    } catch (error) {
      this.launched = undefined;
      if (launched.ended === undefined) {
        launched.child.kill('SIGKILL');
        await launched.exited;
      }
      throw error;
    }
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
      if (await exitsWithin(launched, this.stopGraceMs)) return;
    }
    launched.child.kill('SIGKILL');
    await launched.exited;
  }
}
