/**
 * `drawdown settle`: one settlement run up to --until (default: the last whole
 * minute), the k8s CronJob. Its report is one JSON line on stdout — or, with
 * --output FILE, in FILE, and stdout gets one log line saying where. Progress
 * goes to stderr: pino lines off a terminal (a log collector reads them), a
 * progress bar on one (a person watches it).
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { destination, type DestinationStream } from 'pino';
import { loadConfig } from '../shared/config.js';
import { DrawdownError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/log.js';
import { Problems, readStorableTime } from '../shared/validate.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { reportJson, unpricedWarningMessage, unpricedWarnings } from '../settlement/report.js';
import { settle, type SettleProgress } from '../settlement/settle.js';
import { statementJson } from '../settlement/statement.js';
import { openStoreCatalogSource, readCatalogFile } from '../catalog/source.js';
import { CatalogStore } from '../catalog/store.js';
import { ProgressBar } from './progress-bar.js';

/** The flags `settle` takes besides the settings. */
export const settleFlags = ['--until', '--close-period', '--output'] as const;

interface Progress {
  phase(phase: string, elapsedMs: number): void;
  accounts(p: SettleProgress, elapsedMs: number): void;
  /** Takes the bar off the terminal before the run's last lines. */
  end(): void;
}

/** Progress as log lines, for stderr off a terminal. */
function progressLines(log: Logger): Progress {
  return {
    phase: (phase, elapsedMs) => log.info({ phase, elapsedMs }, 'settlement phase done'),
    accounts: (p, elapsedMs) =>
      log.info(
        { accountsDone: p.accountsDone, accountsTotal: p.accountsTotal, entries: p.entries, elapsedMs },
        'settlement progress',
      ),
    end: () => {},
  };
}

function progressBar(bar: ProgressBar): Progress {
  const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
  return {
    phase: (phase, elapsedMs) => bar.update(`settle: ${phase} done (${seconds(elapsedMs)})`),
    accounts: (p, elapsedMs) =>
      bar.update(
        `${p.accountsDone}/${p.accountsTotal} accounts, ${p.entries} entries (${seconds(elapsedMs)})`,
        p.accountsDone,
        p.accountsTotal,
      ),
    end: () => bar.clear(),
  };
}

function takeFlag(flags: Map<string, string>, name: string): string | undefined {
  const value = flags.get(name);
  flags.delete(name);
  return value;
}

export async function runSettle(flags: Map<string, string>, env: NodeJS.ProcessEnv): Promise<number> {
  const until = takeFlag(flags, '--until');
  const output = takeFlag(flags, '--output');
  // --close-period: settle up to the last whole minute and report the billing terms that closed.
  const closeFlag = takeFlag(flags, '--close-period');
  if (closeFlag !== undefined && closeFlag !== 'true')
    throw new DrawdownError('request_invalid', `--close-period takes no value (got ${closeFlag})`);
  const closePeriod = closeFlag !== undefined;
  if (closePeriod && until !== undefined)
    throw new DrawdownError('request_invalid', '--close-period settles up to the last whole minute: leave out --until');
  if (output === 'true' || output === '') throw new DrawdownError('request_invalid', '--output needs a file path');
  const config = loadConfig(flags, env, ['clickhouseUrl']);
  // The same rule as POST /v1/settlements' until: an instant ClickHouse can store, refused before any work.
  const untilProblems = new Problems();
  const untilSecGiven =
    until === undefined ? Math.floor(Date.now() / 1000) : readStorableTime(untilProblems, until, '--until');
  if (untilSecGiven === undefined)
    throw new DrawdownError('request_invalid', `${untilProblems.list[0]!.message} (got ${JSON.stringify(until)})`);

  const onTerminal = process.stderr.isTTY === true;
  const bar = onTerminal ? new ProgressBar(process.stderr) : undefined;
  // Without --output, stdout carries the report alone: logs and progress go to stderr.
  const stderr: DestinationStream = bar ? { write: (line: string) => bar.around(line) } : destination(2);
  const log = createLogger(config.logLevel, 'drawdown-settle', stderr);
  const progress = bar ? progressBar(bar) : progressLines(log);

  const store = await openStore(config.clickhouseUrl!, { cluster: config.clickhouseCluster });
  let line: string;
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
    const elapsedMs = (): number => Date.now() - startedMs;
    log.info({ until: new Date(untilSec * 1000).toISOString(), catalogRevision: revision }, 'settlement run starting');
    const report = await settle(store, catalog, {
      untilSec,
      catalogRevision: revision,
      snapshotRetentionDays: config.snapshotRetentionDays,
      usageRetentionMonths: config.usageRetentionMonths,
      onPhase: (phase) => progress.phase(phase, elapsedMs()),
      onProgress: (p) => progress.accounts(p, elapsedMs()),
    });
    progress.end();
    // As the settlement process logs it after every run: each outstanding unpriced line, named.
    for (const warning of unpricedWarnings(report)) log.warn(warning, unpricedWarningMessage);
    const json = reportJson(report);
    const terms = Object.values(report.customers).flatMap((r) => r.closedTerms ?? []);
    log.info(
      {
        runId: report.runId,
        entriesPosted: report.entriesPosted,
        alreadyPosted: report.entriesAlreadyPosted,
        customers: Object.keys(report.customers).length,
        ...(closePeriod ? { closedTerms: terms.length } : {}),
        elapsedMs: elapsedMs(),
      },
      'settlement run finished',
    );
    if (closePeriod) {
      for (const t of terms)
        log.info(
          {
            customer: t.customer,
            subscription: t.subscription,
            termStart: new Date(t.startSec * 1000).toISOString(),
            termEnd: new Date(t.endSec * 1000).toISOString(),
          },
          'billing term closed',
        );
      const { customers: _detail, ...run } = json;
      line = JSON.stringify({
        ...run,
        closed_terms: terms.map((t) => ({ customer: t.customer, ...statementJson(t) })),
      });
    } else {
      line = JSON.stringify(json);
    }
  } finally {
    progress.end();
    await store.close();
  }
  if (output === undefined) {
    process.stdout.write(`${line}\n`);
  } else {
    const path = resolve(output);
    writeFileSync(path, `${line}\n`);
    createLogger(config.logLevel, 'drawdown-settle').info(
      { path, bytes: Buffer.byteLength(line) + 1 },
      'settlement report written',
    );
  }
  return 0;
}
