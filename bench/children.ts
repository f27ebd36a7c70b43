/**
 * The processes under test, each a child of the bench so its CPU and memory
 * are its own: drawdown's gateway (`drawdown ingest`), its rater
 * (`drawdown rater`), the no-op HTTP baseline server and the HTTP → JetStream
 * forwarder baseline.
 */
import { appendFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { settings } from '../shared/config.js';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const cliPath = join(repoRoot, 'dist', 'deploy', 'cli.js');
const catalogPath = join(repoRoot, 'deploy', 'demo-catalog.json');

/** A numeric setting as a spawned drawdown sees it: this process's environment (inherited), else the default. */
export function inheritedSetting(setting: (typeof settings)[keyof typeof settings] & { default: number }): number {
  const raw = process.env[setting.env];
  return raw === undefined ? setting.default : Number(raw);
}

export interface Child {
  child: ChildProcess;
  pid: number;
  /** First capture group of the ready pattern (e.g. the URL). */
  ready: string;
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it exited. */
  stop(graceMs?: number): Promise<void>;
}

// Output kept for error messages only; the tail is enough.
const outputKeptChars = 64 * 1024;

export function spawnNode(
  args: string[],
  readyPattern: RegExp,
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<Child> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let output = '';
    let ready = false;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`not ready within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onData = (d: Buffer): void => {
      // BENCH_CHILD_LOG=<file>: every child's whole output, for looking into a slow sample afterwards.
      if (process.env.BENCH_CHILD_LOG) appendFileSync(process.env.BENCH_CHILD_LOG, d);
      output = (output + d.toString()).slice(-outputKeptChars);
      if (ready) return;
      const match = readyPattern.exec(output);
      if (!match) return;
      ready = true;
      clearTimeout(timer);
      resolve({
        child,
        pid: child.pid!,
        ready: match[1] ?? '',
        output: () => output,
        stop: async (graceMs = 20_000) => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(t);
        },
      });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      if (!ready) {
        clearTimeout(timer);
        reject(new Error(`exited with ${code} before ready:\n${output}`));
      }
    });
  });
}

export function startNoopServer(): Promise<Child> {
  const source =
    "const s=require('http').createServer((q,r)=>{q.on('data',()=>{});q.on('end',()=>{r.writeHead(202,{'content-type':'application/json'});r.end('{}')})});" +
    "s.keepAliveTimeout=60000;s.listen(0,'127.0.0.1',()=>console.log('port '+s.address().port));process.on('SIGTERM',()=>process.exit(0))";
  return spawnNode(['-e', source], /port (\d+)/);
}

/** Baseline (c): bench/forwarder.ts, HTTP bodies published unchanged to JetStream. */
export function startForwarder(natsUrl: string): Promise<Child> {
  return spawnNode([join(repoRoot, 'dist', 'bench', 'forwarder.js'), natsUrl], /port (\d+)/);
}

export interface DrawdownChildOptions {
  natsUrl: string;
  clickhouseUrl?: string;
  /** Extra node flags (e.g. --cpu-prof). */
  nodeFlags?: string[];
  env?: Record<string, string>;
}

/** `drawdown ingest` or `drawdown rater` from dist/, ready once it logs its URL. */
export function startDrawdown(command: 'ingest' | 'rater', options: DrawdownChildOptions): Promise<Child> {
  return spawnNode([...(options.nodeFlags ?? []), cliPath, command], /"url":"(http:\/\/[^"]+)","msg":"listening"/, {
    DRAWDOWN_CATALOG: catalogPath,
    DRAWDOWN_NATS_URL: options.natsUrl,
    DRAWDOWN_HTTP_PORT: '0',
    DRAWDOWN_LOG_LEVEL: 'info',
    DRAWDOWN_AUTH: 'off',
    // Room for a 60 s phase to queue up while the rater catches up.
    DRAWDOWN_STREAM_MAX_BYTES: String(24 * 1024 ** 3),
    DRAWDOWN_STREAM_MAX_MESSAGES: String(50_000_000),
    ...(options.clickhouseUrl === undefined ? {} : { DRAWDOWN_CLICKHOUSE_URL: options.clickhouseUrl }),
    ...options.env,
  });
}
