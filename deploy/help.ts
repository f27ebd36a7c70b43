/**
 * What `drawdown --help` and `drawdown <command> --help` print: each command's
 * usage, its own flags, and the settings it reads (any setting is a flag or an
 * environment variable: docs/configuration.md), with defaults and meanings
 * taken from shared/config.ts so help cannot drift from what is parsed.
 */
import { readFileSync } from 'node:fs';
import { flagName, settings, type SettingName } from '../shared/config.js';
import { scopes } from '../shared/auth.js';

interface CommandHelp {
  usage: string;
  about: string;
  /** The command's own flags (not settings), with what they do. */
  flags?: readonly (readonly [string, string])[];
  /** The settings it must be given. */
  needs?: readonly SettingName[];
  /** The settings it reads; a command accepts every setting, these are the ones that matter to it. */
  reads: readonly SettingName[];
}

const service: SettingName[] = ['httpHost', 'httpPort', 'auth', 'apiKeys', 'logLevel', 'catalog', 'catalogRefreshMs'];
const stream: SettingName[] = [
  'streamName',
  'subjectPrefix',
  'partitions',
  'streamMaxBytes',
  'streamMaxMessages',
  'streamReplicas',
  'duplicateWindowMs',
];
const gateway: SettingName[] = [
  'batchEventsMax',
  'bodyBytesMax',
  'bodyTimeoutMs',
  'lateMs',
  'skewMs',
  'publishTimeoutMs',
];
const rater: SettingName[] = [
  'raterThreads',
  'raterPartitions',
  'raterLeaseTtlMs',
  'flushIntervalMs',
  'flushRowsMax',
  'fetchMessagesMax',
  'ackWaitMs',
  'maxAckPending',
  'dedupeIds',
  'dedupeRetentionDays',
  'retryDelayMaxMs',
  'storeAttemptsBeforeUnready',
  'deadLetterMaxAgeMs',
  'deadLetterMaxBytes',
  // The gateway's time window, which the rater holds events to as well (rater/window.ts).
  'lateMs',
  'skewMs',
  'publishTimeoutMs',
];
const settlement: SettingName[] = [
  'settleEveryMs',
  'snapshotRetentionDays',
  'usageRetentionMonths',
  'holdTtlDefaultMs',
  'holdTtlMaxMs',
  'holdReleaseGraceMs',
  'holdsEngine',
  'holdsLogWindowMs',
  'holdsLogClosedRecordsMax',
  'holdsReplicas',
  'liveBalanceCacheMs',
  'holdsGaugeMs',
];
const everySetting = Object.keys(settings) as SettingName[];

export const commands: Record<string, CommandHelp> = {
  start: {
    usage: 'drawdown start [--setting value ...]',
    about:
      'The all-in-one: a local nats-server and chDB under --data-dir, every stage in one process on one port. API keys are off by default while it listens on a loopback address. Logs are JSON lines on stdout; the first info line says where it listens.',
    reads: everySetting,
  },
  ingest: {
    usage: 'drawdown ingest --nats-url URL [--clickhouse-url URL | --catalog FILE] [--setting value ...]',
    about: 'The HTTP gateway: POST /v1/events into the JetStream stream. Needs API keys unless --auth off.',
    needs: ['natsUrl'],
    reads: ['natsUrl', 'clickhouseUrl', 'clickhouseCluster', ...service, ...stream, ...gateway],
  },
  rater: {
    usage: 'drawdown rater --nats-url URL --clickhouse-url URL [--setting value ...]',
    about:
      'Stream → ClickHouse: aggregates each partition it owns into usage rows. Serves /healthz, /readyz, /metrics.',
    needs: ['natsUrl', 'clickhouseUrl'],
    reads: [
      'natsUrl',
      'clickhouseUrl',
      'clickhouseCluster',
      'httpHost',
      'httpPort',
      'logLevel',
      'catalog',
      'catalogRefreshMs',
      ...stream,
      ...rater,
    ],
  },
  settlement: {
    usage: 'drawdown settlement --clickhouse-url URL [--nats-url URL] [--setting value ...]',
    about:
      'Balances, ledger, usage, purchases, settlements, statements and the catalog API, plus the settlement schedule. With --nats-url also credit holds and entitlement.',
    needs: ['clickhouseUrl'],
    reads: ['clickhouseUrl', 'clickhouseCluster', 'natsUrl', ...service, ...settlement],
  },
  settle: {
    usage: 'drawdown settle --clickhouse-url URL [--until INSTANT | --close-period] [--output FILE]',
    about:
      'One settlement run, then exit (the CronJob). The report is one JSON line on stdout, or in FILE with --output (stdout then gets one log line naming it). Progress goes to stderr: JSON log lines, or a progress bar when stderr is a terminal.',
    flags: [
      [
        '--until INSTANT',
        'settle up to this ISO-8601 instant or ms since the epoch, rounded down to the minute (default: now)',
      ],
      ['--close-period', 'settle up to the last whole minute and report the billing terms the run closed'],
      ['--output FILE', 'write the report to FILE instead of stdout'],
    ],
    needs: ['clickhouseUrl'],
    reads: [
      'clickhouseUrl',
      'clickhouseCluster',
      'catalog',
      'logLevel',
      'snapshotRetentionDays',
      'usageRetentionMonths',
    ],
  },
  settlements: {
    usage: 'drawdown settlements list [--limit N] [--after RUN_ID]\n       drawdown settlements get RUN_ID',
    about:
      'Past settlement runs, newest window first, as GET /v1/settlements and GET /v1/settlements/{run_id} answer them: window, status, catalog revision, totals per credit unit, unpriced usage; get adds the report. One JSON line on stdout.',
    flags: [
      ['--limit N', 'list: runs per page, 1–100 (default 20)'],
      ['--after RUN_ID', "list: the page after this run (the previous page's next)"],
    ],
    needs: ['clickhouseUrl'],
    reads: ['clickhouseUrl', 'clickhouseCluster', 'logLevel'],
  },
  demo: {
    usage: 'drawdown demo [--data-dir DIR] [--setting value ...]',
    about:
      'SPEC §7 examples 1 and 2 streamed through the all-in-one over HTTP, settled, then a credit hold; prints balances for a person to read and exits 0 when they are what the spec says.',
    reads: ['dataDir', 'httpHost', 'httpPort', 'logLevel'],
  },
  keys: {
    usage: `drawdown keys new --scopes <${scopes.join('|')}>[,…] [--id NAME]`,
    about:
      'A new API key, printed once for a person to hand over, and its hashed entry for DRAWDOWN_API_KEYS (the key itself is kept nowhere).',
    flags: [
      ['--scopes LIST', `comma-separated, any of ${scopes.join(', ')}`],
      ['--id NAME', '1–64 of [A-Za-z0-9._:@-] (default: key- and the first hash digits)'],
    ],
    reads: [],
  },
  catalog: {
    usage: 'drawdown catalog apply FILE [--dry-run]\n       drawdown catalog get [--revision N]',
    about:
      'Catalog-as-code against the catalog store: apply validates FILE, prints the diff and writes a new revision (not with --dry-run); get prints the catalog in force (or revision N) as JSON.',
    flags: [
      ['--dry-run', 'apply: show the diff and the checks, write nothing'],
      ['--revision N', 'get: that revision instead of the latest'],
    ],
    needs: ['clickhouseUrl'],
    reads: ['clickhouseUrl', 'clickhouseCluster', 'logLevel'],
  },
  partitions: {
    usage: 'drawdown partitions show\n       drawdown partitions migrate --partitions N',
    about:
      'The partition layout recorded for the stream (NATS KV drawdown_meta), which every gateway and rater must match to start. show prints it as one JSON line (null and exit 1 when none is recorded); migrate records N as the new count, refused while the stream holds any batch: stop the gateways, let the raters drain the stream, stop them, migrate, then start everything with the new count (docs/deploy.md, "Changing the partition count").',
    needs: ['natsUrl'],
    reads: ['natsUrl', 'streamName', 'subjectPrefix', 'partitions', 'streamReplicas'],
  },
  storage: {
    usage: 'drawdown storage partition-usage',
    about:
      'Copies a usage_minute created before partitioning into the layout partitioned by flush month, so settlement reads only the months it needs and retention can drop settled months (DRAWDOWN_USAGE_RETENTION_MONTHS). Stop every rater first: the copy is refused if a flush lands during it, and nothing changes. The original is kept as usage_minute_unpartitioned (docs/deploy.md, "Partitioning minute usage").',
    needs: ['clickhouseUrl'],
    reads: ['clickhouseUrl', 'clickhouseCluster', 'logLevel'],
  },
};

function settingLine(name: SettingName): string {
  const spec = settings[name];
  const fallback = spec.default === undefined ? '' : `  (default ${spec.default})`;
  return `  ${flagName(name)}, ${spec.env}${fallback}\n      ${spec.doc}`;
}

/** `drawdown <command> --help`. */
export function commandHelp(command: string): string | undefined {
  const help = commands[command];
  if (help === undefined) return undefined;
  const lines = [`usage: ${help.usage}`, '', help.about];
  if (help.flags?.length) lines.push('', 'flags:', ...help.flags.map(([flag, what]) => `  ${flag.padEnd(18)} ${what}`));
  if (help.needs?.length)
    lines.push('', `needs: ${help.needs.map((n) => `${flagName(n)} (${settings[n].env})`).join(', ')}`);
  if (help.reads.length)
    lines.push(
      '',
      'settings (a flag, else the environment variable, else the default; docs/configuration.md):',
      ...help.reads.map(settingLine),
    );
  return `${lines.join('\n')}\n`;
}

/** `drawdown --help`. */
export function overallHelp(): string {
  return `usage: drawdown <command> [--flag value ...]
       drawdown <command> --help     that command's usage, flags and settings
       drawdown --version

commands:
  start        all-in-one: local nats-server + chDB, every stage in one process (API keys off on 127.0.0.1)
  ingest       the HTTP gateway: POST /v1/events                            (needs --nats-url, API keys)
  rater        stream → ClickHouse                                          (needs --nats-url, --clickhouse-url)
  settlement   balances, ledger, usage, purchases, settlements + schedule   (needs --clickhouse-url, API keys;
               credit holds and entitlement with --nats-url)
  settle       one settlement run up to --until, report as one JSON line    (needs --clickhouse-url)
               --close-period: up to the last whole minute, with the billing terms it closed; --output FILE
  settlements list [--limit N] [--after RUN_ID] | get RUN_ID
               past settlement runs, as GET /v1/settlements answers them     (needs --clickhouse-url)
  demo         SPEC §7 examples 1 and 2 through the all-in-one; prints balances
  keys new     a new API key, shown once, and its entry for DRAWDOWN_API_KEYS
               --scopes ${scopes.join(',')} (any of them)  [--id NAME]
  catalog apply FILE [--dry-run]   validate, show the diff, write a new catalog revision (needs --clickhouse-url)
  catalog get [--revision N]       print the catalog in force (or revision N)                (needs --clickhouse-url)
  partitions show | migrate --partitions N
               the recorded partition layout; migrate changes it once the stream is drained  (needs --nats-url)
  storage partition-usage
               copy usage_minute from before partitioning into monthly partitions, raters stopped (needs --clickhouse-url)

Every setting is a flag or an environment variable: docs/configuration.md.
`;
}

/** The version in drawdown's package.json: the nearest one above this file (in the sources and in dist/). */
export function version(): string {
  for (let dir = new URL('.', import.meta.url); ; dir = new URL('..', dir)) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'drawdown') return pkg.version;
    } catch {
      // No package.json here: look one level up.
    }
    if (dir.pathname === '/') throw new Error("drawdown's package.json was not found");
  }
}
