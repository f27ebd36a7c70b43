/**
 * The hold store's options: every default and limit in one place, checked
 * once when the store opens (a bad option throws a RangeError naming it),
 * then frozen.
 */
import type { AccountLimits } from './hold-account.js';

export const holdStoreDefaults = Object.freeze({
  /** KV bucket (stream KV_<bucket>), created if missing: file storage, history 1. The log engine's: <bucket>_log. */
  bucket: 'drawdown_holds',
  /**
   * Where accounts' holds live. 'kv': one KV value per account, one compare-and-set per change (hold-kv.ts).
   * 'log': a stream of shards, one append per batch of changes to any accounts of a shard (hold-log.ts); every
   * process keeps the shards in memory. 'auto': the log, unless the KV bucket exists and the log does not (an
   * installation from before the log keeps its holds where they are; docs/holds.md says how to move).
   */
  engine: 'auto' as 'auto' | 'kv' | 'log',
  /**
   * How long the log engine's stream keeps a message (its max_age), and so what a process starting replays. Every
   * process re-appends an account whose open holds were last written over half of it ago, so no open hold ages out
   * while any process runs. If every process is down longer than this, holds opened before are forgotten: raise it to
   * ttlMaxMs + closedRetentionMs to rule that out, at the cost of replay time and disk.
   */
  logWindowMs: 10 * 60_000,
  /** The log engine's shards (subjects). Fixed once the log exists: opening it with another count is refused. */
  logShards: 16,
  /** The log engine: closed records kept in memory per process; past it the oldest are forgotten early (counted). */
  logClosedRecordsMax: 4_000_000,
  /**
   * The log stream's max_bytes when this process creates it (JetStream reserves it). Full, appends are refused
   * (holds_unavailable) rather than old messages dropped. What a second of holds costs: ~200 B per operation.
   */
  logBytesMax: 2 * 1024 ** 3,
  /** Bucket replicas when this process creates it: 3 on a JetStream cluster (RAFT), 1 on a single server. */
  replicas: 1,
  /** A hold's time to live when the caller names none. */
  ttlDefaultMs: 5 * 60_000, // 5 min
  /**
   * How long a released hold keeps counting (less what its usage spent), so usage sent before the release is
   * counted before the reservation ends; 0 ends it at once. A release can ask for no grace.
   */
  releaseGraceMs: 0,
  /** The longest time to live a caller may ask for. */
  ttlMaxMs: 60 * 60_000, // 1 h
  /** Open holds per (customer, unit); past it a reserve is refused (too_many_open_holds). */
  openHoldsMax: 1_000,
  /**
   * Closed holds an account's own value may hold (for idempotent retries),
   * oldest forgotten first. A hard bound: normally the value keeps far fewer
   * (closedInValueMax) and the rest sit in the archive bucket.
   */
  closedHoldsMax: 512,
  /**
   * Closed holds an account's value keeps once it archives. Closed records
   * ride in every write of the account (~75 B each): without the archive a
   * busy account carried hundreds (~38 KB a write, 1.9k pairs/s over 1,000
   * busy accounts, then timeouts). Past twice this many, the oldest move to
   * the archive bucket (one key per hold, kept closedRetentionMs), still found.
   */
  closedInValueMax: 8,
  /**
   * How long a closed hold is remembered after it closed: longer than a client retries (the SDK gives up after 60 s).
   */
  closedRetentionMs: 2 * 60_000, // 2 min
  /** Usage keys a hold remembers (a redelivered usage event consumes once), oldest forgotten first. */
  usageKeysMax: 16,
  /** A hold's metadata, as JSON, in bytes. */
  metadataBytesMax: 256,
  /** Metadata entries per hold. */
  metadataEntriesMax: 16,
  /** Compare-and-set attempts per batch before holds_contended; a cache refresh counts as one. */
  attemptsMax: 10,
  /** Back-off after the n-th revision conflict: uniform in [0, min(backoffMaxMs, backoffBaseMs × 2^(n−1))). */
  backoffBaseMs: 2,
  backoffMaxMs: 100,
  /** Operations on one account folded into one compare-and-set. */
  batchOpsMax: 256,
  /** Operations queued in this process, all accounts together; past it, holds_overloaded. */
  pendingOpsMax: 100_000,
  /**
   * Accounts whose last written state this process keeps (to skip a read before a write), least recently used
   * evicted.
   */
  cachedAccountsMax: 10_000,
  /** Each KV request's timeout. */
  requestTimeoutMs: 2_000,
});

export type HoldEngineName = 'auto' | 'kv' | 'log';

export type HoldStoreSettings = {
  -readonly [K in keyof typeof holdStoreDefaults]: K extends 'bucket'
    ? string
    : K extends 'engine'
      ? HoldEngineName
      : number;
};

// [min, max] per option; bucket and engine are checked separately.
const ranges: Record<Exclude<keyof HoldStoreSettings, 'bucket' | 'engine'>, [number, number]> = {
  logShards: [1, 1_024],
  logWindowMs: [60_000, 7 * 24 * 3_600_000],
  logClosedRecordsMax: [0, 100_000_000],
  logBytesMax: [1024 ** 2, 1024 ** 4],
  replicas: [1, 5],
  ttlDefaultMs: [1, 7 * 24 * 3_600_000],
  ttlMaxMs: [1, 7 * 24 * 3_600_000],
  releaseGraceMs: [0, 600_000],
  openHoldsMax: [1, 100_000],
  closedHoldsMax: [0, 100_000],
  closedInValueMax: [1, 100_000],
  closedRetentionMs: [0, 7 * 24 * 3_600_000],
  usageKeysMax: [0, 1_000],
  metadataBytesMax: [2, 64 * 1024],
  metadataEntriesMax: [0, 1_000],
  // Two at least: a batch answered from a cached state that changed nothing is re-read once.
  attemptsMax: [2, 1_000],
  backoffBaseMs: [0, 60_000],
  backoffMaxMs: [0, 60_000],
  batchOpsMax: [1, 100_000],
  pendingOpsMax: [1, 10_000_000],
  cachedAccountsMax: [0, 10_000_000],
  requestTimeoutMs: [1, 600_000],
};

const bucketPattern = /^[-\w]{1,64}$/;

export function fillHoldStoreSettings(options: Partial<HoldStoreSettings>): Readonly<HoldStoreSettings> {
  const settings: HoldStoreSettings = { ...holdStoreDefaults };
  for (const [name, value] of Object.entries(options) as [keyof HoldStoreSettings, unknown][]) {
    if (value === undefined) continue;
    if (!(name in holdStoreDefaults)) continue; // other HoldStoreOptions (clock, balance) are not settings
    if (name === 'bucket') {
      if (typeof value !== 'string' || !bucketPattern.test(value))
        throw new RangeError(`bucket must be 1–64 characters of [A-Za-z0-9_-], got ${JSON.stringify(value)}`);
      settings.bucket = value;
      continue;
    }
    if (name === 'engine') {
      if (value !== 'auto' && value !== 'kv' && value !== 'log')
        throw new RangeError(`engine must be "auto", "kv" or "log", got ${JSON.stringify(value)}`);
      settings.engine = value;
      continue;
    }
    const [min, max] = ranges[name];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
      throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
    settings[name] = value;
  }
  if (settings.ttlDefaultMs > settings.ttlMaxMs)
    throw new RangeError(`ttlDefaultMs (${settings.ttlDefaultMs}) must not exceed ttlMaxMs (${settings.ttlMaxMs})`);
  if (settings.engine !== 'kv' && settings.logWindowMs < settings.closedRetentionMs + 30_000)
    throw new RangeError(
      `logWindowMs (${settings.logWindowMs}) must be at least closedRetentionMs + 30 s (${settings.closedRetentionMs + 30_000}): closed holds are found in the log`,
    );
  if (settings.backoffBaseMs > settings.backoffMaxMs)
    throw new RangeError(
      `backoffBaseMs (${settings.backoffBaseMs}) must not exceed backoffMaxMs (${settings.backoffMaxMs})`,
    );
  return Object.freeze(settings);
}

export function accountLimits(settings: HoldStoreSettings): AccountLimits {
  return Object.freeze({
    openHoldsMax: settings.openHoldsMax,
    closedHoldsMax: settings.closedHoldsMax,
    closedInValueMax: settings.closedInValueMax,
    closedRetentionMs: settings.closedRetentionMs,
    usageKeysMax: settings.usageKeysMax,
  });
}

/**
 * The largest stored account value the limits allow, in bytes. An open hold:
 * ~90 bytes of field names and punctuation, id 16, fingerprint 11, amount ≤ 28
 * (18 integer + 9 fraction digits), remaining ≤ 40 (18 fraction digits), three
 * 13-digit instants (the third once released with a grace), then its metadata and 15 bytes per usage key. A closed
 * hold: ~160. Checked against the server's max_payload when the store opens,
 * and asserted on every write.
 */
export function valueBytesBound(settings: HoldStoreSettings): number {
  const openHoldBytes = 240 + settings.metadataBytesMax + 15 * settings.usageKeysMax;
  const closedHoldBytes = 160;
  return 128 + settings.openHoldsMax * openHoldBytes + settings.closedHoldsMax * closedHoldBytes;
}
