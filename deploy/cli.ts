#!/usr/bin/env node
/**
 * drawdown's command line:
 *   start        all-in-one: a local nats-server + chDB under --data-dir, every stage in one process
 *                (API keys off by default while it listens on a loopback address)
 *   ingest       the HTTP gateway alone        (needs --nats-url)
 *   rater        the rater alone               (needs --nats-url, --clickhouse-url)
 *   settlement   balances/ledger/settlement API + schedule (needs --clickhouse-url)
 *   settle       one settlement run up to --until (default: the last whole minute), report on stdout
 *   demo         the all-in-one with SPEC §7 examples 1 and 2 streamed through HTTP; prints balances
 *   keys new     a new API key (shown once) and its hashed entry for DRAWDOWN_API_KEYS
 *                (--scopes ingest,read,admin — any of them — [--id NAME])
 *   catalog      apply FILE [--dry-run] | get [--revision N]: the catalog store (needs --clickhouse-url)
 * Every setting is also an environment variable (docs/configuration.md).
 */
import { resolve } from 'node:path';
import { destination } from 'pino';
import { fileURLToPath } from 'node:url';
import { loadConfig, parseArgs, type Config } from '../shared/config.js';
import { hashKey, isScope, keyIdPattern, newKey, scopes } from '../shared/auth.js';
import { DrawdownError, isDrawdownError } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import { Problems, readStorableTime } from '../shared/validate.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { reportJson, unpricedWarningMessage, unpricedWarnings } from '../settlement/report.js';
import { settle } from '../settlement/settle.js';
import { statementJson } from '../settlement/statement.js';
import { runCatalogCommand } from '../catalog/cli.js';
import { openStoreCatalogSource, readCatalogFile } from '../catalog/source.js';
import { CatalogStore } from '../catalog/store.js';
import { startAllInOne } from './all-in-one.js';
import { runDemo } from './demo.js';
import { startDrawdown, type Running } from './processes.js';

const keysUsage = `usage: drawdown keys new --scopes <${scopes.join('|')}>[,…] [--id NAME]   (NAME: 1–64 of [A-Za-z0-9._:@-])`;

const usage = `usage: drawdown <command> [--flag value ...]

commands:
  start        all-in-one: local nats-server + chDB, every stage in one process (API keys off on 127.0.0.1)
  ingest       the HTTP gateway: POST /v1/events                            (needs --nats-url, API keys)
  rater        stream → ClickHouse                                          (needs --nats-url, --clickhouse-url)
  settlement   balances, ledger, usage, purchases, settlements + schedule   (needs --clickhouse-url, API keys;
               credit holds and entitlement with --nats-url)
  settle       one settlement run up to --until, report on stdout          (needs --clickhouse-url)
               --close-period: up to the last whole minute; prints the billing terms it closed
  demo         SPEC §7 examples 1 and 2 through the all-in-one; prints balances
  keys new     a new API key, shown once, and its entry for DRAWDOWN_API_KEYS
               --scopes ${scopes.join(',')} (any of them)  [--id NAME]
  catalog apply FILE [--dry-run]   validate, show the diff, write a new catalog revision (needs --clickhouse-url)
  catalog get [--revision N]       print the catalog in force (or revision N)                (needs --clickhouse-url)

Every setting is a flag or an environment variable: docs/configuration.md.
`;

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

async function main(argv: string[]): Promise<number> {
  const { flags, positional } = parseArgs(argv);
  const command = positional[0] ?? 'help';
  const env = process.env;
  switch (command) {
    case 'start': {
      const config = loadConfig(flags, env, [], { catalog: demoCatalog, auth: localAuthDefault(flags, env) });
      const running = await startAllInOne(config);
      process.stdout.write(
        `drawdown is running at ${running.url} (data in ${resolve(config.dataDir)}); Ctrl-C stops it\n`,
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
    case 'settle': {
      const until = flags.get('--until');
      flags.delete('--until');
      // --close-period: settle up to the last whole minute and print the billing terms that closed.
      const closeFlag = flags.get('--close-period');
      flags.delete('--close-period');
      if (closeFlag !== undefined && closeFlag !== 'true')
        throw new Error(`--close-period takes no value (got ${closeFlag})`);
      const closePeriod = closeFlag !== undefined;
      if (closePeriod && until !== undefined)
        throw new Error('--close-period settles up to the last whole minute: leave out --until');
      const config: Config = loadConfig(flags, env, ['clickhouseUrl']);
      // The same rule as POST /v1/settlements' until: an instant ClickHouse can store, refused before any work.
      const untilProblems = new Problems();
      const untilSecGiven =
        until === undefined ? Math.floor(Date.now() / 1000) : readStorableTime(untilProblems, until, '--until');
      if (untilSecGiven === undefined)
        throw new DrawdownError('request_invalid', `${untilProblems.list[0]!.message} (got ${JSON.stringify(until)})`);
      const store = openStore(config.clickhouseUrl!);
      // stdout carries the report alone: logs and progress go to stderr.
      const log = createLogger(config.logLevel, 'drawdown-settle', destination(2));
      const say = (line: string): boolean => process.stderr.write(`settle: ${line}\n`);
      try {
        await ensureSchema(store);
        // The latest catalog revision prices the run (an empty store is seeded from DRAWDOWN_CATALOG).
        const file = config.catalog === undefined ? undefined : readCatalogFile(config.catalog);
        const source = await openStoreCatalogSource(new CatalogStore(store), {
          refreshMs: 0,
          log,
          ...(file === undefined ? {} : { seed: { raw: file.raw, appliedBy: `seed:${config.catalog}` } }),
        });
        const { revision, catalog } = source.current();
        const untilSec = Math.floor(untilSecGiven / 60) * 60;
        const startedMs = Date.now();
        const elapsed = (): string => `${Date.now() - startedMs} ms`;
        say(`settling up to ${new Date(untilSec * 1000).toISOString()} with catalog revision ${revision}`);
        const report = await settle(store, catalog, {
          untilSec,
          catalogRevision: revision,
          snapshotRetentionDays: config.snapshotRetentionDays,
          onPhase: (phase) => say(`${phase} done (${elapsed()})`),
          onProgress: (p) =>
            say(`${p.accountsDone}/${p.accountsTotal} accounts settled, ${p.entries} entries so far (${elapsed()})`),
        });
        say(
          `${report.entriesPosted} entries posted, ${report.entriesAlreadyPosted} already posted, ${Object.keys(report.customers).length} customers (${elapsed()})`,
        );
        // On stderr with the other logs, as the settlement process logs it after every run.
        for (const warning of unpricedWarnings(report)) log.warn(warning, unpricedWarningMessage);
        const json = reportJson(report);
        if (closePeriod) {
          const terms = Object.values(report.customers).flatMap((r) => r.closedTerms ?? []);
          for (const t of terms)
            say(
              `closed ${t.customer} ${t.subscription} ${new Date(t.startSec * 1000).toISOString()} .. ${new Date(t.endSec * 1000).toISOString()}`,
            );
          say(`${terms.length} billing terms closed`);
          const { customers: _detail, ...run } = json;
          process.stdout.write(
            `${JSON.stringify({ ...run, closed_terms: terms.map((t) => ({ customer: t.customer, ...statementJson(t) })) }, null, 2)}\n`,
          );
        } else {
          process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
        }
      } finally {
        await store.close();
      }
      return 0;
    }
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
      process.stdout.write(usage);
      return command === 'help' || command === '--help' ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    const log = createLogger('error', 'drawdown');
    const listed = [
      'config_invalid',
      'catalog_invalid',
      'catalog_definition_invalid',
      'catalog_conflict',
      'catalog_revision_stale',
      'request_invalid',
    ];
    if (isDrawdownError(error) && listed.includes(error.code)) {
      process.stderr.write(`drawdown: ${error.message}\n`);
      for (const p of error.problems)
        if (!error.message.includes(p.message)) process.stderr.write(`  ${p.field}: ${p.message}\n`);
    } else {
      log.fatal({ err: error }, 'drawdown failed');
    }
    process.exit(1);
  },
);
