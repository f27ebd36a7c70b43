#!/usr/bin/env node
/**
 * drawdown's command line:
 *   start        all-in-one: a local nats-server + chDB under --data-dir, every stage in one process
 *                (API keys off by default while it listens on a loopback address)
 *   ingest       the HTTP gateway alone        (needs --nats-url)
 *   rater        the rater alone               (needs --nats-url, --clickhouse-url)
 *   settlement   balances/ledger/settlement API + schedule (needs --clickhouse-url)
 *   settle       one settlement run up to --until (default: the last whole minute), report as one JSON line
 *   demo         the all-in-one with SPEC §7 examples 1 and 2 streamed through HTTP; prints balances
 *   keys new     a new API key (shown once) and its hashed entry for DRAWDOWN_API_KEYS
 *                (--scopes ingest,read,admin — any of them — [--id NAME])
 *   catalog      apply FILE [--dry-run] | get [--revision N]: the catalog store (needs --clickhouse-url)
 *   partitions   show | migrate --partitions N: the recorded partition layout (needs --nats-url)
 *   storage      partition-usage: usage_minute from before partitioning into months (needs --clickhouse-url)
 * Every setting is also an environment variable (docs/configuration.md). `drawdown <command> --help` says
 * which a command reads (deploy/help.ts). Processes write only JSON lines (pino); the commands whose output is for
 * a person (demo, keys new, catalog, --help) are the exceptions docs/metrics.md "Logs" lists.
 */
import { resolve } from 'node:path';
import { destination } from 'pino';
import { fileURLToPath } from 'node:url';
import { loadConfig, parseArgs } from '../shared/config.js';
import { hashKey, isScope, keyIdPattern, newKey, scopes } from '../shared/auth.js';
import { isDrawdownError } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import { runCatalogCommand } from '../catalog/cli.js';
import { runSettlementsCommand } from '../settlement/runs-cli.js';
import { startAllInOne } from './all-in-one.js';
import { runDemo } from './demo.js';
import { commandHelp, overallHelp, version } from './help.js';
import { startDrawdown, type Running } from './processes.js';
import { runSettle } from './settle-command.js';
import { runPartitionsCommand } from './partitions-command.js';
import { runStorageCommand } from './storage-command.js';

const keysUsage = `usage: drawdown keys new --scopes <${scopes.join('|')}>[,…] [--id NAME]   (NAME: 1–64 of [A-Za-z0-9._:@-])`;

const demoCatalog = fileURLToPath(new URL('../../deploy/demo-catalog.json', import.meta.url));

/**
 * `start` and `demo` are for one machine: on a loopback address their
 * DRAWDOWN_AUTH defaults to off (with a warning at start-up). Told to listen
 * on any other address, they default to required like the services.
 */
function localAuthDefault(flags: ReadonlyMap<string, string>, env: NodeJS.ProcessEnv): 'off' | 'required' {
  const host = flags.get('--http-host') || env.DRAWDOWN_HTTP_HOST || '127.0.0.1';
  return /^(127\.\d+\.\d+\.\d+|::1|\[::1\]|localhost)$/.test(host) ? 'off' : 'required';
}

function waitForSignal(running: { stop(): Promise<void> }, log: { info: (o: object, m: string) => void }): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    running.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/** The commands that run as processes (services, the CronJob): everything they write is a JSON line. */
const processCommands: ReadonlySet<string> = new Set(['start', 'ingest', 'rater', 'settlement', 'settle', 'storage']);

async function main(argv: string[]): Promise<number> {
  const { flags, positional } = parseArgs(argv);
  const command = positional[0] ?? 'help';
  const env = process.env;
  if (flags.has('--version') || command === 'version') {
    process.stdout.write(`drawdown ${version()}\n`);
    return 0;
  }
  // `drawdown <command> --help` (or -h, or `drawdown help <command>`): usage only, nothing started.
  const helpFor = command === 'help' ? positional[1] : command === '-h' ? undefined : command;
  if (flags.has('--help') || positional.includes('-h') || command === 'help') {
    const text = helpFor === undefined ? overallHelp() : commandHelp(helpFor);
    if (text === undefined) {
      process.stderr.write(`drawdown: unknown command ${helpFor}\n${overallHelp()}`);
      return 2;
    }
    process.stdout.write(text);
    return 0;
  }
  switch (command) {
    case 'start': {
      const config = loadConfig(flags, env, [], { catalog: demoCatalog, auth: localAuthDefault(flags, env) });
      const running = await startAllInOne(config);
      const dataDir = resolve(config.dataDir);
      running.log.info(
        { url: running.url, dataDir },
        `drawdown is running at ${running.url} (data in ${dataDir}); Ctrl-C stops it`,
      );
      waitForSignal(running, running.log);
      return -1;
    }
    case 'ingest':
    case 'rater':
    case 'settlement': {
      // The catalog comes from the catalog store when there is ClickHouse (the file only seeds an empty store).
      const required =
        command === 'ingest'
          ? (['natsUrl'] as const)
          : command === 'rater'
            ? (['natsUrl', 'clickhouseUrl'] as const)
            : (['clickhouseUrl'] as const);
      const config = loadConfig(flags, env, required);
      const running: Running = await startDrawdown(config, {
        ingest: command === 'ingest',
        rater: command === 'rater',
        settlement: command === 'settlement',
      });
      waitForSignal(running, running.log);
      return -1;
    }
    case 'settle':
      return runSettle(flags, env);
    case 'keys': {
      // The key is printed once and kept nowhere: only its hash is configured.
      const wanted = (flags.get('--scopes') ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      const id = flags.get('--id');
      const unknownFlags = [...flags.keys()].filter((f) => f !== '--scopes' && f !== '--id');
      if (
        positional[1] !== 'new' ||
        positional.length > 2 ||
        wanted.length === 0 ||
        !wanted.every(isScope) ||
        unknownFlags.length > 0 ||
        (id !== undefined && !keyIdPattern.test(id))
      ) {
        process.stderr.write(`${keysUsage}\n`);
        return 2;
      }
      const key = newKey();
      const sha256 = hashKey(key);
      // Without --id, the first hash digits name the key: unique enough, and they reveal nothing the entry does not.
      const entry = { id: id ?? `key-${sha256.slice(0, 8)}`, sha256, scopes: [...new Set(wanted)] };
      process.stdout.write(
        `key (shown once; give it to the client):\n  ${key}\nentry for DRAWDOWN_API_KEYS:\n  ${JSON.stringify(entry)}\n`,
      );
      return 0;
    }
    case 'catalog':
      return runCatalogCommand(positional, flags, env, {
        out: (t) => process.stdout.write(t),
        err: (t) => process.stderr.write(t),
      });
    case 'settlements':
      return runSettlementsCommand(positional, flags, env, {
        out: (t) => process.stdout.write(t),
        err: (t) => process.stderr.write(t),
      });
    case 'partitions':
      return runPartitionsCommand(positional, flags, env, {
        out: (t) => process.stdout.write(t),
        err: (t) => process.stderr.write(t),
      });
    case 'storage':
      return runStorageCommand(positional, flags, env, { err: (t) => process.stderr.write(t) });
    case 'demo': {
      const config = loadConfig(flags, env, [], {
        catalog: demoCatalog,
        logLevel: 'warn',
        httpPort: 0,
        auth: localAuthDefault(flags, env),
      });
      return runDemo(config);
    }
    default:
      process.stderr.write(`drawdown: unknown command ${command}\n${overallHelp()}`);
      return 2;
  }
}

/** Errors a person fixes from their message alone (bad settings, a bad catalog, a bad argument): no stack. */
const listed: ReadonlySet<string> = new Set([
  'config_invalid',
  'catalog_invalid',
  'chdb_not_installed',
  'catalog_definition_invalid',
  'catalog_conflict',
  'catalog_revision_stale',
  'request_invalid',
  'partition_layout_mismatch',
  'partition_migration_refused',
  'usage_migration_refused',
]);

/**
 * How a command that fails says why: a process (service or CronJob) writes one
 * JSON line on stderr, its problems as fields, so a log collector keeps it
 * whole; a command a person runs (keys, catalog) writes plain lines.
 */
function reportFailure(command: string | undefined, error: unknown): void {
  const plain = isDrawdownError(error) && listed.has(error.code);
  if (command !== undefined && processCommands.has(command)) {
    const log = createLogger('error', `drawdown-${command}`, destination({ dest: 2, sync: true }));
    if (plain) {
      // "invalid configuration:\n  A\n  B" reads as one line: "invalid configuration: A; B".
      const [head, ...rest] = error.message.split('\n').map((l) => l.trim());
      const msg = rest.length === 0 ? head : `${head} ${rest.join('; ')}`;
      log.fatal({ code: error.code, problems: error.problems }, `drawdown: ${msg}`);
    } else log.fatal({ err: error }, 'drawdown failed');
    return;
  }
  if (plain) {
    process.stderr.write(`drawdown: ${error.message}\n`);
    for (const p of error.problems)
      if (!error.message.includes(p.message)) process.stderr.write(`  ${p.field}: ${p.message}\n`);
  } else
    createLogger('error', 'drawdown', destination({ dest: 2, sync: true })).fatal({ err: error }, 'drawdown failed');
}

const argv = process.argv.slice(2);
main(argv).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    reportFailure(parseArgs(argv).positional[0], error);
    process.exit(1);
  },
);
