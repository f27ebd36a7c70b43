/**
 * Every setting of every drawdown process, in one table: its environment
 * variable, its flag, its default (with units) and its bounds. Settings are
 * read once at start-up, every problem is reported together, and the result
 * is frozen.
 */
import { DrawdownError } from './errors.js';
import { Problems } from './validate.js';

type Spec =
  | { kind: 'int'; env: string; default: number | undefined; min: number; max: number; doc: string }
  | { kind: 'string'; env: string; default: string | undefined; pattern?: RegExp; doc: string }
  | { kind: 'enum'; env: string; default: string; values: readonly string[]; doc: string };

const MiB = 1024 * 1024;

export const settings = {
  natsUrl: {
    kind: 'string',
    env: 'DRAWDOWN_NATS_URL',
    default: undefined,
    pattern: /^(nats|tls):\/\/[^\s]+$/,
    doc: 'NATS server URL(s), comma-separated, e.g. nats://127.0.0.1:4222',
  },
  clickhouseUrl: {
    kind: 'string',
    env: 'DRAWDOWN_CLICKHOUSE_URL',
    default: undefined,
    pattern: /^(https?:\/\/[^\s,]+(,https?:\/\/[^\s,]+)*|chdb:\S+)$/,
    doc: 'http(s)://host:port[/database] for a ClickHouse server (comma-separated for the replicas of a cluster, tried in turn), or chdb:PATH for embedded chDB',
  },
  clickhouseCluster: {
    kind: 'string',
    env: 'DRAWDOWN_CLICKHOUSE_CLUSTER',
    default: undefined,
    pattern: /^[A-Za-z0-9_]{1,64}$/,
    doc: "Name of the ClickHouse cluster (in the servers' <remote_servers>) whose replicas the URLs name: tables are created ReplicatedMergeTree on every replica (unset = plain MergeTree on one server)",
  },
  catalog: {
    kind: 'string',
    env: 'DRAWDOWN_CATALOG',
    default: undefined,
    doc: 'Path of the catalog JSON: seeds the catalog store (revision 1) when it is empty; a process without ClickHouse (ingest) reads it directly',
  },
  httpHost: {
    kind: 'string',
    env: 'DRAWDOWN_HTTP_HOST',
    default: '127.0.0.1',
    doc: 'Address the HTTP server listens on',
  },
  httpPort: {
    kind: 'int',
    env: 'DRAWDOWN_HTTP_PORT',
    default: 8080,
    min: 0,
    max: 65535,
    doc: 'HTTP port (0 = any free port)',
  },
  dataDir: {
    kind: 'string',
    env: 'DRAWDOWN_DATA_DIR',
    default: '.data',
    doc: 'Where the all-in-one keeps nats-server and chDB data',
  },
  auth: {
    kind: 'enum',
    env: 'DRAWDOWN_AUTH',
    default: 'required',
    values: ['required', 'off'],
    doc: "API key with the route's scope required on every /v1 route, or off (start and demo default to off while they listen on a loopback address)",
  },
  apiKeys: {
    kind: 'string',
    env: 'DRAWDOWN_API_KEYS',
    default: undefined,
    doc: 'JSON array of {"id", "sha256", "scopes"} (SHA-256 hex of each key), or @path of a file holding it; drawdown keys new prints entries',
  },
  logLevel: {
    kind: 'enum',
    env: 'DRAWDOWN_LOG_LEVEL',
    default: 'info',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    doc: 'pino log level',
  },
  otlpTracesEndpoint: {
    kind: 'string',
    env: 'DRAWDOWN_OTLP_TRACES_ENDPOINT',
    default: undefined,
    pattern: /^https?:\/\/\S+$/,
    doc: 'OTLP/HTTP URL spans are exported to, e.g. http://collector:4318/v1/traces (unset = no spans; trace_id still logged)',
  },

  streamName: {
    kind: 'string',
    env: 'DRAWDOWN_STREAM',
    default: 'DRAWDOWN_EVENTS',
    pattern: /^[A-Za-z0-9_-]+$/,
    doc: 'JetStream stream name',
  },
  subjectPrefix: {
    kind: 'string',
    env: 'DRAWDOWN_SUBJECT_PREFIX',
    default: 'drawdown.events',
    pattern: /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/,
    doc: 'Subject prefix; partition p publishes to <prefix>.<p>',
  },
  partitions: {
    kind: 'int',
    env: 'DRAWDOWN_PARTITIONS',
    default: 4,
    min: 1,
    max: 256,
    doc: 'Stream partitions (one rater consumer each); fixed once data exists',
  },
  streamMaxBytes: {
    kind: 'int',
    env: 'DRAWDOWN_STREAM_MAX_BYTES',
    default: 1024 * MiB,
    min: MiB,
    max: Number.MAX_SAFE_INTEGER,
    doc: 'Stream size limit in bytes; when full the gateway answers 429',
  },
  streamMaxMessages: {
    kind: 'int',
    env: 'DRAWDOWN_STREAM_MAX_MESSAGES',
    default: 1_000_000,
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
    doc: 'Stream message-count limit (one message = one batch)',
  },
  streamReplicas: {
    kind: 'int',
    env: 'DRAWDOWN_STREAM_REPLICAS',
    default: 1,
    min: 1,
    max: 5,
    doc: 'Stream replicas (3 on a JetStream cluster)',
  },
  duplicateWindowMs: {
    kind: 'int',
    env: 'DRAWDOWN_DUPLICATE_WINDOW_MS',
    default: 10 * 60_000,
    min: 1_000,
    max: 7 * 24 * 3_600_000,
    doc: 'How long a batch Idempotency-Key is remembered, in ms',
  },

  batchEventsMax: {
    kind: 'int',
    env: 'DRAWDOWN_BATCH_EVENTS_MAX',
    default: 10_000,
    min: 1,
    max: 1_000_000,
    doc: 'Events per request',
  },
  bodyBytesMax: {
    kind: 'int',
    env: 'DRAWDOWN_BODY_BYTES_MAX',
    default: 4 * MiB,
    min: 1024,
    max: 60 * MiB,
    doc: 'Request body size in bytes (must fit the NATS max_payload)',
  },
  bodyTimeoutMs: {
    kind: 'int',
    env: 'DRAWDOWN_BODY_TIMEOUT_MS',
    default: 30_000,
    min: 100,
    max: 600_000,
    doc: 'Time allowed to receive a whole request, in ms',
  },
  lateMs: {
    kind: 'int',
    env: 'DRAWDOWN_LATE_MS',
    default: 7 * 24 * 3_600_000,
    min: 0,
    max: 366 * 24 * 3_600_000,
    doc: 'How old an event timestamp may be when it arrives, in ms',
  },
  skewMs: {
    kind: 'int',
    env: 'DRAWDOWN_SKEW_MS',
    default: 5 * 60_000,
    min: 0,
    max: 24 * 3_600_000,
    doc: 'How far in the future an event timestamp may be, in ms',
  },
  publishTimeoutMs: {
    kind: 'int',
    env: 'DRAWDOWN_PUBLISH_TIMEOUT_MS',
    default: 5_000,
    min: 100,
    max: 60_000,
    doc: 'Wait for the JetStream acknowledgement, in ms',
  },

  raterThreads: {
    kind: 'int',
    env: 'DRAWDOWN_RATER_THREADS',
    default: 2,
    min: 1,
    max: 64,
    doc: 'Piscina worker threads decoding and aggregating',
  },
  raterPartitions: {
    kind: 'string',
    env: 'DRAWDOWN_RATER_PARTITIONS',
    default: 'auto',
    pattern: /^(auto|all|\d+(-\d+)?(,\d+(-\d+)?)*)$/,
    doc: "Partitions this rater takes leases on: auto (share them evenly with the other live auto raters, and take over a dead one's), or a fixed list, all or e.g. 0-3,8 (a partition whose lease another rater holds waits)",
  },
  raterLeaseTtlMs: {
    kind: 'int',
    env: 'DRAWDOWN_RATER_LEASE_TTL_MS',
    default: 5_000,
    min: 1_000,
    max: 120_000,
    doc: "Partition lease TTL, in ms: renewed every TTL/4; a rater stops writing a partition TTL/4 before its lease could be taken, and takes a silent rater's lease one TTL after its last renewal (how soon a dead rater's partitions move)",
  },
  flushIntervalMs: {
    kind: 'int',
    env: 'DRAWDOWN_FLUSH_INTERVAL_MS',
    default: 250,
    min: 10,
    max: 60_000,
    doc: 'Longest time aggregates wait before being written on a busy partition, in ms (a quiet one writes once its deliveries pause for 20 ms, at most once per interval): how soon usage reaches live balances, holds and notices (raise it for throughput: each flush is an insert per partition)',
  },
  flushRowsMax: {
    kind: 'int',
    env: 'DRAWDOWN_FLUSH_ROWS_MAX',
    default: 100_000,
    min: 1,
    max: 500_000,
    doc: 'Aggregate rows per ClickHouse insert (one atomic part)',
  },
  fetchMessagesMax: {
    kind: 'int',
    env: 'DRAWDOWN_FETCH_MESSAGES_MAX',
    default: 64,
    min: 1,
    max: 10_000,
    doc: 'Batches pulled from the stream per fetch',
  },
  ackWaitMs: {
    kind: 'int',
    env: 'DRAWDOWN_ACK_WAIT_MS',
    default: 120_000,
    min: 1_000,
    max: 3_600_000,
    doc: 'JetStream ack wait, in ms; redeliveries inside a rater are ignored',
  },
  maxAckPending: {
    kind: 'int',
    env: 'DRAWDOWN_MAX_ACK_PENDING',
    default: 10_000,
    min: 1,
    max: 1_000_000,
    doc: 'Unacknowledged batches a partition consumer may hold',
  },
  dedupeIds: {
    kind: 'int',
    env: 'DRAWDOWN_DEDUPE_IDS',
    default: 1_000_000,
    min: 0,
    max: 2 ** 26,
    doc: 'Event ids each partition remembers to drop repeats: at least this many most recent (0 = off); 32–64 bytes of memory each',
  },
  dedupeRetentionDays: {
    kind: 'int',
    env: 'DRAWDOWN_DEDUPE_RETENTION_DAYS',
    default: 7,
    min: 1,
    max: 366,
    doc: 'Days ClickHouse keeps remembered event ids for rebuilding the set after a restart',
  },
  retryDelayMaxMs: {
    kind: 'int',
    env: 'DRAWDOWN_RETRY_DELAY_MAX_MS',
    default: 10_000,
    min: 10,
    max: 300_000,
    doc: 'Longest back-off between ClickHouse retries, in ms',
  },
  storeAttemptsBeforeUnready: {
    kind: 'int',
    env: 'DRAWDOWN_STORE_ATTEMPTS_BEFORE_UNREADY',
    default: 8,
    min: 1,
    max: 10_000,
    doc: 'Failed ClickHouse attempts in a row (back-off with jitter, up to DRAWDOWN_RETRY_DELAY_MAX_MS) after which a rater partition reports unready on /readyz; it keeps retrying and drops nothing',
  },
  deadLetterMaxAgeMs: {
    kind: 'int',
    env: 'DRAWDOWN_DEAD_LETTER_MAX_AGE_MS',
    default: 30 * 24 * 3_600_000,
    min: 3_600_000,
    max: 366 * 24 * 3_600_000,
    doc: 'How long the dead-letter stream (<stream>_DEAD) keeps a message the rater could not store, in ms',
  },
  deadLetterMaxBytes: {
    kind: 'int',
    env: 'DRAWDOWN_DEAD_LETTER_MAX_BYTES',
    default: 256 * MiB,
    min: MiB,
    max: Number.MAX_SAFE_INTEGER,
    doc: 'Dead-letter stream size limit in bytes; when full, a partition with a message to dead-letter stops (unready) rather than lose it',
  },

  catalogRefreshMs: {
    kind: 'int',
    env: 'DRAWDOWN_CATALOG_REFRESH_MS',
    default: 10_000,
    min: 100,
    max: 3_600_000,
    doc: 'How often a process with ClickHouse checks the catalog store for a new revision, in ms (settlement also checks at the start of every run)',
  },
  settleEveryMs: {
    kind: 'int',
    env: 'DRAWDOWN_SETTLE_EVERY_MS',
    default: 0,
    min: 0,
    max: 31 * 24 * 3_600_000,
    doc: 'Run settlement on this schedule, in ms (0 = only on demand)',
  },
  snapshotRetentionDays: {
    kind: 'int',
    env: 'DRAWDOWN_SNAPSHOT_RETENTION_DAYS',
    default: 35,
    min: 1,
    max: 3660,
    doc: 'Settlement drops whole months of credit snapshots older than the newest completed run minus this many days (an account without a snapshot is rebuilt from its ledger)',
  },
  usageRetentionMonths: {
    kind: 'int',
    env: 'DRAWDOWN_USAGE_RETENTION_MONTHS',
    default: 13,
    min: 2,
    max: 1200,
    doc: 'Settlement drops whole flush months of minute usage older than the newest completed run minus this many months, once every row in them is settled (the ledger keeps the charges)',
  },
  holdTtlDefaultMs: {
    kind: 'int',
    env: 'DRAWDOWN_HOLD_TTL_DEFAULT_MS',
    default: 5 * 60_000,
    min: 1_000,
    max: 24 * 3_600_000,
    doc: 'A credit hold expires this long after it is reserved when the request names no ttl_ms, in ms',
  },
  holdTtlMaxMs: {
    kind: 'int',
    env: 'DRAWDOWN_HOLD_TTL_MAX_MS',
    default: 3_600_000,
    min: 1_000,
    max: 24 * 3_600_000,
    doc: 'The longest ttl_ms a hold may ask for, in ms',
  },
  holdReleaseGraceMs: {
    kind: 'int',
    env: 'DRAWDOWN_HOLD_RELEASE_GRACE_MS',
    default: 2_000,
    min: 0,
    max: 600_000,
    doc: 'After a release, how long a hold keeps counting (less what its usage spent) so usage sent before the release is counted first, in ms; a release with wait_for_usage false ends at once. Above the live-balance lag (flush interval + cache)',
  },
  holdsEngine: {
    kind: 'enum',
    env: 'DRAWDOWN_HOLDS_ENGINE',
    // auto: a new installation gets the log (several times the KV engine's throughput); one with a KV bucket of
    // holds keeps it until moved on purpose (docs/holds.md › Engines).
    default: 'auto',
    values: ['auto', 'log', 'kv'],
    doc: 'Where credit holds live: log (a stream of account shards, one append per batch of changes; every process keeps the shards in memory), kv (one KV value per account, one compare-and-set per change), or auto (the log, unless a KV bucket of holds exists and no log: docs/holds.md says how to move)',
  },
  holdsLogWindowMs: {
    kind: 'int',
    env: 'DRAWDOWN_HOLDS_LOG_WINDOW_MS',
    default: 600_000,
    min: 60_000,
    max: 7 * 24 * 3_600_000,
    doc: 'The holds log keeps a message this long (what a process starting replays); open holds are re-appended within it. If every process is down longer, holds opened before are forgotten, in ms',
  },
  holdsLogClosedRecordsMax: {
    kind: 'int',
    env: 'DRAWDOWN_HOLDS_LOG_CLOSED_RECORDS_MAX',
    default: 4_000_000,
    min: 10_000,
    max: 100_000_000,
    doc: 'Log engine: closed holds one process keeps in memory for their 2-minute retention (a retried reserve finds its hold), about 95 bytes each, outside the JS heap; past it the oldest are forgotten early (drawdown_holds_closed_forgotten_total). Enough for 33k closings/s, more than one process makes',
  },
  holdsReplicas: {
    kind: 'int',
    env: 'DRAWDOWN_HOLDS_REPLICAS',
    default: 1,
    min: 1,
    max: 5,
    doc: 'Replicas of the holds KV bucket or log stream when this process creates it: 3 on a JetStream cluster (needs nats-server ≥ 2.9.21; 2.11+ recommended)',
  },
  liveBalanceCacheMs: {
    kind: 'int',
    env: 'DRAWDOWN_LIVE_BALANCE_CACHE_MS',
    default: 200,
    min: 0,
    max: 10_000,
    doc: 'How long one read of a customer’s live figures (settled, pending, hold usage) serves holds and entitlement checks, in ms',
  },
  holdsGaugeMs: {
    kind: 'int',
    env: 'DRAWDOWN_HOLDS_GAUGE_MS',
    default: 30_000,
    min: 1_000,
    max: 3_600_000,
    doc: 'How often drawdown_holds_open is recounted from the hold store (reads up to 10,000 accounts), in ms',
  },
  noticesPollMs: {
    kind: 'int',
    env: 'DRAWDOWN_NOTICES_POLL_MS',
    default: 100,
    min: 10,
    max: 60_000,
    doc: 'How often settlement looks for customers the rater flushed usage for, to evaluate their balance notices, in ms (a look that finds nothing new is one small read of flush_bounds)',
  },
  noticesSweepMs: {
    kind: 'int',
    env: 'DRAWDOWN_NOTICES_SWEEP_MS',
    default: 60_000,
    min: 1_000,
    max: 3_600_000,
    doc: 'How often settlement publishes notices a crashed process decided but did not publish (reads up to 10,000 accounts), in ms',
  },
  noticesExpiringCheckMs: {
    kind: 'int',
    env: 'DRAWDOWN_NOTICES_EXPIRING_CHECK_MS',
    default: 300_000,
    min: 1_000,
    max: 3_600_000,
    doc: 'How often settlement looks for credit blocks whose grant.expiring lead time has begun (also after every settlement run and at start-up), in ms: the longest a block waits to be announced',
  },
  noticesReplicas: {
    kind: 'int',
    env: 'DRAWDOWN_NOTICES_REPLICAS',
    default: 1,
    min: 1,
    max: 5,
    doc: 'Replicas of the notices stream and the notice/webhook KV buckets when this process creates them (3 on a JetStream cluster)',
  },
  noticesMaxAgeMs: {
    kind: 'int',
    env: 'DRAWDOWN_NOTICES_MAX_AGE_MS',
    default: 7 * 24 * 3_600_000,
    min: 60_000,
    max: 365 * 24 * 3_600_000,
    doc: 'How long a notice stays on the DRAWDOWN_NOTICES stream, in ms',
  },
  noticesDuplicateWindowMs: {
    kind: 'int',
    env: 'DRAWDOWN_NOTICES_DUPLICATE_WINDOW_MS',
    default: 2 * 3_600_000,
    min: 1_000,
    max: 7 * 24 * 3_600_000,
    doc: 'A notice id published again within this window is stored once (JetStream Nats-Msg-Id), in ms; must exceed how long a crashed process’s unpublished notices can wait for the sweep',
  },
  webhookRetryScheduleMs: {
    kind: 'string',
    env: 'DRAWDOWN_WEBHOOK_RETRY_SCHEDULE_MS',
    default: '5000,300000,1800000,7200000,18000000,36000000,36000000',
    pattern: /^\d{1,9}(,\d{1,9}){0,19}$/,
    doc: 'Delays before each webhook retry, in ms, comma-separated (each jittered ±20 %); the default spans 27.6 h over 8 attempts',
  },
  webhookTimeoutMs: {
    kind: 'int',
    env: 'DRAWDOWN_WEBHOOK_TIMEOUT_MS',
    default: 10_000,
    min: 100,
    max: 60_000,
    doc: 'Time limit of one webhook attempt (connect, send, answer), in ms',
  },
  webhookConcurrency: {
    kind: 'int',
    env: 'DRAWDOWN_WEBHOOK_CONCURRENCY',
    default: 32,
    min: 1,
    max: 1_024,
    doc: 'Webhook attempts in flight per settlement process',
  },
  webhookLogRetentionMs: {
    kind: 'int',
    env: 'DRAWDOWN_WEBHOOK_LOG_RETENTION_MS',
    default: 3 * 24 * 3_600_000,
    min: 60_000,
    max: 90 * 24 * 3_600_000,
    doc: 'How long a webhook delivery record is kept (the delivery log), in ms; longer than the retry schedule',
  },
} as const satisfies Record<string, Spec>;

export type SettingName = keyof typeof settings;
type ValueOf<S> = S extends { kind: 'int' } ? number : string;
// Settings without a default may be absent unless the process requires them.
type Absent<S> = S extends { default: undefined } ? undefined : never;
export type Config = { readonly [K in SettingName]: ValueOf<(typeof settings)[K]> | Absent<(typeof settings)[K]> };

/** `natsUrl` → `--nats-url`. */
export function flagName(name: string): string {
  return `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Splits `--flag value` / `--flag=value` arguments; anything else is positional. */
export function parseArgs(argv: readonly string[]): { flags: Map<string, string>; positional: string[] } {
  const flags = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    if (eq > 0) flags.set(arg.slice(0, eq), arg.slice(eq + 1));
    else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) flags.set(arg, argv[++i]!);
    else flags.set(arg, 'true');
  }
  return { flags, positional };
}

/**
 * Reads every setting from flags (first), then the environment, then the
 * default. `required` names the settings this process cannot run without.
 */
export function loadConfig(
  flags: ReadonlyMap<string, string>,
  env: NodeJS.ProcessEnv,
  required: readonly SettingName[] = [],
  defaults: Partial<Record<SettingName, string | number>> = {},
): Config {
  const problems = new Problems();
  const known = new Set(Object.keys(settings).map(flagName));
  for (const flag of flags.keys()) if (!known.has(flag)) problems.add(flag, 'unknown_flag', `unknown flag ${flag}`);

  const out: Record<string, string | number | undefined> = {};
  for (const [name, spec] of Object.entries(settings) as [SettingName, Spec][]) {
    const flag = flagName(name);
    const raw = flags.get(flag) ?? env[spec.env];
    const where = flags.has(flag) ? flag : spec.env;
    if (raw === undefined || raw === '') {
      const fallback = defaults[name] ?? spec.default;
      if (fallback === undefined && required.includes(name))
        problems.add(where, 'required', `${spec.env} (or ${flag}) is required: ${spec.doc}`);
      out[name] = fallback;
      continue;
    }
    if (spec.kind === 'int') {
      const value = /^-?\d+$/.test(raw) ? Number(raw) : Number.NaN;
      if (!Number.isSafeInteger(value))
        problems.add(where, 'type', `${where} must be a whole number, got ${JSON.stringify(raw)}`);
      else if (value < spec.min || value > spec.max)
        problems.add(where, 'range', `${where} must be ${spec.min}–${spec.max}, got ${value}`);
      out[name] = value;
    } else if (spec.kind === 'enum') {
      if (!spec.values.includes(raw))
        problems.add(where, 'enum', `${where} must be one of ${spec.values.join(', ')}, got ${JSON.stringify(raw)}`);
      out[name] = raw;
    } else {
      if (spec.pattern && !spec.pattern.test(raw))
        problems.add(where, 'format', `${where} is malformed (${spec.doc}), got ${JSON.stringify(raw)}`);
      out[name] = raw;
    }
  }
  if (typeof out.holdTtlDefaultMs === 'number' && typeof out.holdTtlMaxMs === 'number')
    if (out.holdTtlDefaultMs > out.holdTtlMaxMs)
      problems.add(
        'DRAWDOWN_HOLD_TTL_DEFAULT_MS',
        'range',
        `DRAWDOWN_HOLD_TTL_DEFAULT_MS (${out.holdTtlDefaultMs}) must not exceed DRAWDOWN_HOLD_TTL_MAX_MS (${out.holdTtlMaxMs})`,
      );
  if (typeof out.clickhouseCluster === 'string' && typeof out.clickhouseUrl === 'string')
    if (out.clickhouseUrl.startsWith('chdb:'))
      problems.add(
        'DRAWDOWN_CLICKHOUSE_CLUSTER',
        'conflict',
        'DRAWDOWN_CLICKHOUSE_CLUSTER needs ClickHouse servers (http(s):// URLs): embedded chDB cannot replicate',
      );
  if (!problems.empty) {
    throw new DrawdownError(
      'config_invalid',
      `invalid configuration:\n${problems.list.map((p) => `  ${p.message}`).join('\n')}`,
      { problems: problems.list },
    );
  }
  return Object.freeze(out) as Config;
}

/** DRAWDOWN_RATER_PARTITIONS: "auto", or the partitions of a fixed list (parsePartitionList). */
export function parseRaterPartitions(text: string, partitions: number): 'auto' | number[] {
  return text === 'auto' ? 'auto' : parsePartitionList(text, partitions);
}

/** "all" | "0-3,8" → sorted partition numbers below `partitions`. */
export function parsePartitionList(text: string, partitions: number): number[] {
  if (text === 'all') return Array.from({ length: partitions }, (_, i) => i);
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const [from, to] = part.split('-').map(Number) as [number, number | undefined];
    for (let p = from; p <= (to ?? from); p++) {
      if (p >= partitions)
        throw new DrawdownError('config_invalid', `rater partition ${p} does not exist (partitions = ${partitions})`);
      out.add(p);
    }
  }
  return [...out].sort((a, b) => a - b);
}
