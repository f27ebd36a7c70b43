/**
 * Credit holds in NATS JetStream KV: one value per (customer, unit) account,
 * changed only by compare-and-set on its revision, so every process decides
 * from the state the previous decision left (README.md in this folder).
 *
 *   reserve/release/close/consume ──▶ lane (one per account in this process)
 *                                       │ queue ≤ pendingOpsMax (all lanes)
 *                                       ▼ ≤ batchOpsMax operations per write
 *          cached {state, revision} ──▶ pure transitions (hold-account.ts)
 *                                       ▼
 *                      kv.update(key, next, revision)   (kv.create for the first write)
 *                        ok ─▶ answer every operation of the batch
 *                        revision conflict ─▶ re-read, back off (jittered), re-apply, ≤ attemptsMax
 *                        other error ─▶ holds_unavailable (a write's outcome is then unknown)
 *
 * Closed records past 2 × closedInValueMax in a written value are put, one key
 * per hold, into the archive bucket (`<bucket>_closed`, entries live
 * closedRetentionMs) off the answer path; the account's next write drops the
 * ones whose put was acknowledged. An id a batch names that its value lacks
 * is looked up there while the value says it archived within retention.
 *
 * One write in flight per account per process: operations that arrive
 * meanwhile share the next write, so a hot account costs one round trip per
 * batch instead of one conflict storm per operation. Across processes the
 * compare-and-set is the only arbiter. Reads (get, list, check) read the
 * value afresh, from the stream leader (no direct get, which a lagging
 * replica may answer).
 */
import { Decimal } from 'decimal.js';
import { JetStreamApiCodes, JetStreamApiError, jetstream, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { formatAmount, money, Money } from '../../shared/money.js';
import {
  admit,
  archiveCandidates,
  archiveMayHold,
  availableOf,
  closeHold,
  coveredOf,
  consumeHold,
  closedRecordText,
  decodeAccount,
  decodeClosedRecord,
  dropArchived,
  emptyAccount,
  encodeAccountBytes,
  findHold,
  isOpen,
  prune,
  type AccountLimits,
  type AccountState,
  type Archived,
  type ClosedHold,
  type ClosedStatus,
  type Covered,
  type OpenHold,
} from './hold-account.js';
import {
  ContentionExhaustedError,
  HoldClosedError,
  HoldError,
  HoldNotFoundError,
  HoldRequestInvalidError,
  HoldsOverloadedError,
  HoldsUnavailableError,
  IdempotencyKeyReusedError,
  InsufficientCreditsError,
  TooManyOpenHoldsError,
} from './hold-errors.js';
import {
  accountKey,
  bodyFingerprint,
  customerPattern,
  holdIdOf,
  holdSuffix,
  idempotencyKeyPattern,
  parseHoldId,
  unitPattern,
  usageKeyHash,
  type AccountRef,
} from './hold-ids.js';
import { accountLimits, fillHoldStoreSettings, valueBytesBound, type HoldStoreSettings } from './hold-options.js';

/** A decimal amount: a Decimal, or its text ("12", "0.5"; no exponent). */
export type AmountInput = Decimal | string;
/** A figure the caller supplies, or a function that fetches it (called once per operation, before it queues). */
export type BalanceInput = AmountInput | (() => AmountInput | Promise<AmountInput>);

/**
 * Where `base` (settled balance − live cost of unsettled usage) and
 * `allowance` (the unit's allowed negative balance, ≥ 0) come from when an
 * operation does not pass them itself.
 */
export interface BalanceFigures {
  base: AmountInput;
  allowance: AmountInput;
  /**
   * The live cost of the usage naming each of the account's holds (by hold id suffix), read together with
   * `base`: taken off those holds, since `base` subtracts that usage already (hold-account.ts, Covered).
   */
  covered?: Covered;
}
export type BalanceSource = (account: AccountRef) => BalanceFigures | Promise<BalanceFigures>;

export interface HoldStoreOptions extends Partial<HoldStoreSettings> {
  balance?: BalanceSource;
  /**
   * Called after each write this process stores, with the states before and after it (e.g. to count holds that
   * expired: the compare-and-set makes exactly one process store each change).
   */
  onWrite?: (before: AccountState, after: AccountState, nowMs: number) => void;
  /** Called after each round of archive puts: how many closed holds it moved, or that it failed. */
  onArchive?: (outcome: { archived: number } | { failed: unknown }) => void;
  /** ms since the epoch; decides expiry. Tests pass a fixed clock. */
  clock?: () => number;
}

export interface ReserveRequest {
  customer: string;
  unit: string;
  /** > 0, at most 9 fraction digits, below 10^18. */
  amount: AmountInput;
  /** Idempotency key: the same key is the same hold (hold-ids.ts). */
  key: string;
  ttlMs?: number;
  metadata?: Record<string, string>;
  base?: BalanceInput;
  allowance?: BalanceInput;
  /** Goes with `base` (BalanceFigures.covered). */
  covered?: Covered;
}

export interface CheckRequest {
  customer: string;
  unit: string;
  amount: AmountInput;
  base?: BalanceInput;
  allowance?: BalanceInput;
  covered?: Covered;
}

/** A hold as the API shows it (snake_case, like every API body). */
export interface HoldView {
  id: string;
  customer: string;
  unit: string;
  /** releasing: released with a grace, still counting until expires_at. */
  status: 'open' | 'releasing' | ClosedStatus;
  amount: string;
  remaining: string;
  consumed: string;
  created_at: string;
  /** Open holds only. */
  expires_at: string | null;
  closed_at: string | null;
  /** Open holds only: closed holds keep just enough to answer retries. */
  metadata: Record<string, string> | null;
}

export interface ReserveResult {
  hold: HoldView;
  /** false: the key had reserved this hold before (it may since have closed: see hold.status). */
  created: boolean;
  /** base − open holds after this reserve, as of the decision. */
  available: string;
}

export interface CloseResult {
  hold: HoldView;
  /** false: it was already released, expired or closed. */
  changed: boolean;
}

export interface ConsumeResult {
  hold: HoldView;
  /** What the hold covered: min(cost, remaining before). */
  consumed: string;
  /** cost − consumed: usage beyond the hold, which only the balance covers. */
  excess: string;
  /** The usage key was consumed before; nothing changed. */
  duplicate: boolean;
}

export interface CheckResult {
  allowed: boolean;
  /** base − open holds (less the usage they cover). */
  available: string;
  /** What the open holds still reserve. */
  held: string;
  /** How far below zero available may go. */
  allowance: string;
}

export interface AccountHolds {
  customer: string;
  unit: string;
  /** Σ remaining of the open holds. */
  held: string;
  /** Open holds, oldest first. */
  holds: HoldView[];
  /** The KV revision read (0: the account was never written). */
  revision: number;
}

export interface HoldStoreStats {
  operations: number;
  /** Batches committed (written, or answered from a fresh read). */
  batches: number;
  writes: number;
  /** Bytes of the values written (their mean tells what one account costs to write). */
  bytesWritten: number;
  reads: number;
  /** Writes refused because another process wrote first. */
  conflicts: number;
  /** Closed records put into the archive bucket, lookups there, and rounds of puts that failed (retried later). */
  archived: number;
  archiveReads: number;
  archiveFailures: number;
  contentionExhausted: number;
  pending: number;
}

interface Snapshot {
  state: AccountState;
  revision: number;
}

/** An operation waiting for its account's next write. */
interface PendingOp {
  /** The hold (id suffix) it names, if any: looked up in the archive when the value lacks it. */
  readonly target: string | undefined;
  /** Runs the transition on `state`; `settle` answers the caller once the result is stored. */
  apply(
    state: AccountState,
    nowMs: number,
    archived: Archived | undefined,
  ): { state: AccountState; settle: () => void };
  reject(error: unknown): void;
}

interface Lane {
  readonly key: string;
  cached: Snapshot | undefined;
  queue: PendingOp[];
  running: boolean;
  /** Closed records (closedRecordText) the archive acknowledged: the next write drops them. ≤ closedHoldsMax. */
  archived: Set<string>;
  archiving: boolean;
}

const decimalText = /^-?\d+(\.\d+)?$/;
const metadataKeyPattern = /^[A-Za-z0-9_.:-]{1,64}$/;
const amountLimit = money('1e18');
const costLimit = money('1e30');
// Usage costs come from pricing at 60 significant digits; kept to 18 fraction digits (twice the ledger's 9) so a
// hold's remaining stays bounded in length.
const costScale = 18;

function isConflict(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function toDecimal(value: unknown): Decimal | undefined {
  if (typeof value === 'string') return decimalText.test(value) ? money(value) : undefined;
  // Already at money's precision: no copy needed (Decimals are immutable).
  if (value instanceof Money && value.isFinite()) return value;
  if (Decimal.isDecimal(value) && (value as Decimal).isFinite()) return money(value as Decimal);
  return undefined;
}

function checkedInput(value: unknown, name: string): Decimal {
  const decimal = toDecimal(value);
  if (decimal === undefined)
    throw new RangeError(`${name} must be a finite Decimal or decimal text, got ${String(value)}`);
  return decimal;
}

async function resolveInput(input: BalanceInput, name: string): Promise<Decimal> {
  return checkedInput(typeof input === 'function' ? await input() : input, name);
}

// Holds made in one turn share their instants (created now, expiring now + the same TTL), so the last two are kept.
const isoCache: [number, string][] = [
  [Number.NaN, ''],
  [Number.NaN, ''],
];
let isoNext = 0;

function iso(ms: number): string {
  for (const [cachedMs, text] of isoCache) if (cachedMs === ms) return text;
  const text = new Date(ms).toISOString();
  isoCache[isoNext] = [ms, text];
  isoNext = 1 - isoNext;
  return text;
}

export function holdView(account: AccountRef, key: string, hold: OpenHold | ClosedHold): HoldView {
  const consumed = formatAmount(money(hold.amount).minus(hold.remaining));
  const id = holdIdOf(key, hold.id);
  if (isOpen(hold)) {
    return {
      id,
      customer: account.customer,
      unit: account.unit,
      status: hold.releasedMs === undefined ? 'open' : 'releasing',
      amount: hold.amount,
      remaining: hold.remaining,
      consumed,
      created_at: iso(hold.createdMs),
      expires_at: iso(hold.expiresMs),
      closed_at: null,
      metadata: hold.metadata === undefined ? null : { ...hold.metadata },
    };
  }
  return {
    id,
    customer: account.customer,
    unit: account.unit,
    status: hold.status,
    amount: hold.amount,
    remaining: hold.remaining,
    consumed,
    created_at: iso(hold.createdMs),
    expires_at: null,
    closed_at: iso(hold.closedMs),
    metadata: null,
  };
}

/**
 * Before 2.9.21, a clustered nats-server checked Nats-Expected-Last-Subject-
 * Sequence only before proposing a message, not when applying it, so two
 * concurrent updates of one key against the same revision could both succeed
 * (nats-server#4320): on a 3-node 2.9.10 cluster, 200 reserves against
 * 100 + 5 credits admitted 110–125 every run, losing the overwritten holds.
 * A single server checks under the stream's lock and is safe in any version.
 * 2.11 also makes the check consistent across leader changes
 * (nats-server#6194): recommended for clusters.
 */
export const clusteredCasVersionMin = '2.9.21';

/** Is nats-server `version` ("2.9.10", "v2.11.0-RC.1") older than `minimum`? */
export function natsVersionBefore(version: string, minimum: string): boolean {
  const parse = (text: string) =>
    text
      .replace(/^v/, '')
      .split(/[.-]/)
      .slice(0, 3)
      .map((part) => Number.parseInt(part, 10) || 0);
  const [a, b] = [parse(version), parse(minimum)];
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! < b[i]!;
  return false;
}

/** The NATS cluster cannot decide holds safely (HoldStore.open refuses it). */
export class UnsafeHoldsClusterError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'UnsafeHoldsClusterError';
  }
}

function refuseUnserializedCas(nc: NatsConnection): void {
  // INFO names the cluster only when the server is clustered; nats.js does not type the field.
  const info = nc.info as (typeof nc.info & { cluster?: string }) | undefined;
  if (info?.cluster !== undefined && info.cluster !== '' && natsVersionBefore(info.version, clusteredCasVersionMin)) {
    throw new UnsafeHoldsClusterError(
      `nats-server ${info.version} in cluster ${info.cluster} does not serialise compare-and-set on a key (nats-server#4320, fixed in ${clusteredCasVersionMin}; 2.11+ recommended): holds would be over-admitted. Upgrade nats-server, or run holds against a single server`,
    );
  }
}

/** The bucket closed holds move to (hold-store.ts header). */
export function archiveBucketOf(bucket: string): string {
  return `${bucket}_closed`;
}

export class HoldStore {
  readonly #kv: KV;
  readonly #archive: KV;
  readonly #settings: Readonly<HoldStoreSettings>;
  readonly #limits: AccountLimits;
  readonly #valueBytesMax: number;
  readonly #balance: BalanceSource | undefined;
  readonly #clock: () => number;
  readonly #onWrite: HoldStoreOptions['onWrite'];
  readonly #onArchive: HoldStoreOptions['onArchive'];
  // Insertion order is recency: a lane is moved to the end when used, evicted from the front.
  readonly #lanes = new Map<string, Lane>();
  readonly #ready = new Set<Lane>();
  #tickScheduled = false;
  readonly #idleWaiters: (() => void)[] = [];
  #pending = 0;
  #stopped = false;
  readonly #stats = {
    operations: 0,
    batches: 0,
    writes: 0,
    bytesWritten: 0,
    reads: 0,
    conflicts: 0,
    contentionExhausted: 0,
    archived: 0,
    archiveReads: 0,
    archiveFailures: 0,
  };

  private constructor(
    kv: KV,
    archive: KV,
    settings: Readonly<HoldStoreSettings>,
    valueBytesMax: number,
    options: HoldStoreOptions,
  ) {
    this.#kv = kv;
    this.#archive = archive;
    this.#settings = settings;
    this.#limits = accountLimits(settings);
    this.#valueBytesMax = valueBytesMax;
    this.#balance = options.balance;
    this.#clock = options.clock ?? Date.now;
    this.#onWrite = options.onWrite;
    this.#onArchive = options.onArchive;
  }

  /**
   * Opens (creating if missing) the holds bucket on `nc`. The connection stays
   * the caller's: close it after shutdown(). On a fresh cluster, creating the
   * bucket can fail until a JetStream meta leader is elected; retry.
   */
  static async open(nc: NatsConnection, options: HoldStoreOptions = {}): Promise<HoldStore> {
    const settings = fillHoldStoreSettings(options);
    refuseUnserializedCas(nc);
    const valueBytesMax = valueBytesBound(settings);
    const maxPayload = nc.info?.max_payload;
    // Headers and the subject ride in the same message; 4 KiB covers them.
    if (maxPayload !== undefined && valueBytesMax + 4096 > maxPayload) {
      throw new RangeError(
        `an account's holds may take ${valueBytesMax} bytes (openHoldsMax, closedHoldsMax, metadataBytesMax, usageKeysMax), more than the NATS server's max_payload (${maxPayload}) allows; raise max_payload or lower the limits`,
      );
    }
    const js = jetstream(nc, { timeout: settings.requestTimeoutMs });
    const kv = await new Kvm(js).create(settings.bucket, {
      storage: StorageType.File,
      replicas: settings.replicas,
      history: 1,
      maxValueSize: valueBytesMax,
      // Reads go to the stream leader: a direct get may be answered by a replica that lags.
      allow_direct: false,
      description: 'drawdown credit holds: one value per (customer, credit unit)',
    });
    const status = await kv.status();
    if (status.maxValueSize > 0 && status.maxValueSize < valueBytesMax) {
      throw new RangeError(
        `bucket ${settings.bucket} allows values of ${status.maxValueSize} bytes, but these limits need up to ${valueBytesMax}; raise the bucket's max_msg_size or lower the limits`,
      );
    }
    const archive = await new Kvm(js).create(archiveBucketOf(settings.bucket), {
      storage: StorageType.File,
      replicas: settings.replicas,
      history: 1,
      // A record is put after it closed, so it outlives its retention by the put's delay; lookups check closedMs.
      ttl: Math.max(settings.closedRetentionMs, 1_000),
      allow_direct: false,
      description: 'drawdown credit holds: closed holds moved out of busy accounts, one key per hold',
    });
    const archiveStatus = await archive.status();
    if (archiveStatus.ttl > 0 && archiveStatus.ttl < settings.closedRetentionMs) {
      throw new RangeError(
        `bucket ${archiveBucketOf(settings.bucket)} keeps entries ${archiveStatus.ttl} ms, less than closedRetentionMs (${settings.closedRetentionMs}); raise its max_age or lower closedRetentionMs`,
      );
    }
    return new HoldStore(kv, archive, settings, valueBytesMax, options);
  }

  get settings(): Readonly<HoldStoreSettings> {
    return this.#settings;
  }

  stats(): HoldStoreStats {
    return { ...this.#stats, pending: this.#pending };
  }

  /**
   * Reserves `amount` if available + allowance ≥ amount. The same key always
   * answers with the same hold (created: false after the first time), as
   * long as its record is kept (open, or closed within closedRetentionMs).
   */
  async reserve(request: ReserveRequest): Promise<ReserveResult> {
    const account = this.#account(request.customer, request.unit);
    if (typeof request.key !== 'string' || !idempotencyKeyPattern.test(request.key))
      throw new HoldRequestInvalidError('idempotency_key', 'must be 1–128 printable ASCII characters');
    const amount = this.#amount(request.amount);
    const ttlMs = request.ttlMs ?? this.#settings.ttlDefaultMs;
    if (!Number.isInteger(ttlMs) || ttlMs < 1 || ttlMs > this.#settings.ttlMaxMs)
      throw new HoldRequestInvalidError('ttl_ms', `must be an integer from 1 to ${this.#settings.ttlMaxMs}`);
    const metadata = this.#metadata(request.metadata);
    const amountText = formatAmount(amount);
    const admitRequest = {
      id: holdSuffix(account, request.key),
      fp: bodyFingerprint(amountText, metadata),
      amount,
      ttlMs,
      metadata,
    };
    const { base, allowance, covered } = await this.#balanceFor(account, request);
    const key = accountKey(account);
    const limits = this.#limits;
    return this.#enqueue<ReserveResult>(key, admitRequest.id, (resolve, reject) => (state, nowMs, archived) => {
      const { state: next, outcome } = admit(state, admitRequest, {
        nowMs,
        base,
        allowance,
        limits,
        ...(covered === undefined ? {} : { covered }),
        ...(archived === undefined ? {} : { archived }),
      });
      return {
        state: next,
        settle: () => {
          switch (outcome.kind) {
            case 'created':
              return resolve({
                hold: holdView(account, key, outcome.hold),
                created: true,
                available: formatAmount(outcome.available),
              });
            case 'existing':
              return resolve({
                hold: holdView(account, key, outcome.hold),
                created: false,
                available: formatAmount(outcome.available),
              });
            case 'key_reused':
              return reject(new IdempotencyKeyReusedError(request.key, holdIdOf(key, outcome.hold.id)));
            case 'too_many_open':
              return reject(new TooManyOpenHoldsError(account.customer, account.unit, limits.openHoldsMax));
            case 'insufficient':
              return reject(
                new InsufficientCreditsError(
                  account.customer,
                  account.unit,
                  amountText,
                  formatAmount(outcome.available),
                  formatAmount(allowance),
                ),
              );
          }
        },
      };
    });
  }

  /**
   * The caller gives the hold up. With a grace (`graceMs`, default the store's releaseGraceMs) the hold keeps
   * counting, less what its usage spent, until the grace ends — so usage sent before the release is counted before
   * the reservation ends — and is then released; without, it ends now (no usage was sent). Releasing a hold that
   * is releasing or closed changes nothing and says so.
   */
  async release(holdId: string, options: { graceMs?: number } = {}): Promise<CloseResult> {
    const graceMs = options.graceMs ?? this.#settings.releaseGraceMs;
    if (!Number.isInteger(graceMs) || graceMs < 0 || graceMs > 600_000)
      throw new HoldRequestInvalidError('grace_ms', 'must be an integer from 0 to 600000');
    return this.#close(holdId, 'released', graceMs);
  }

  /** The hold's usage is all in: what it did not consume returns to the account. */
  async close(holdId: string): Promise<CloseResult> {
    return this.#close(holdId, 'closed');
  }

  /**
   * Moves `cost` of usage onto the hold: its remaining shrinks by min(cost,
   * remaining). With a usageKey (e.g. the usage event's id) a redelivered
   * event is consumed once, for the hold's last usageKeysMax keys.
   */
  async consume(holdId: string, cost: AmountInput, options: { usageKey?: string } = {}): Promise<ConsumeResult> {
    const parsed = this.#holdId(holdId);
    const exact = toDecimal(cost);
    if (exact === undefined || exact.isNegative() || !exact.lessThan(costLimit))
      throw new HoldRequestInvalidError('cost', 'must be a decimal from 0 to below 10^30');
    const rounded = exact.toDecimalPlaces(costScale, Decimal.ROUND_HALF_UP);
    const { usageKey } = options;
    if (usageKey !== undefined && (typeof usageKey !== 'string' || !idempotencyKeyPattern.test(usageKey)))
      throw new HoldRequestInvalidError('usage_key', 'must be 1–128 printable ASCII characters');
    const usageHash = usageKey === undefined ? undefined : usageKeyHash(usageKey);
    const limits = this.#limits;
    return this.#enqueue<ConsumeResult>(
      parsed.accountKey,
      parsed.suffix,
      (resolve, reject) => (state, nowMs, archived) => {
        const { state: next, outcome } = consumeHold(state, parsed.suffix, rounded, usageHash, nowMs, limits, archived);
        return {
          state: next,
          settle: () => {
            switch (outcome.kind) {
              case 'consumed':
                return resolve({
                  hold: holdView(parsed.account, parsed.accountKey, outcome.hold),
                  consumed: formatAmount(outcome.consumed),
                  excess: formatAmount(outcome.excess),
                  duplicate: false,
                });
              case 'duplicate':
                return resolve({
                  hold: holdView(parsed.account, parsed.accountKey, outcome.hold),
                  consumed: '0',
                  excess: '0',
                  duplicate: true,
                });
              case 'closed':
                return reject(new HoldClosedError(holdId, outcome.hold.status));
              case 'not_found':
                return reject(new HoldNotFoundError(holdId));
            }
          },
        };
      },
    );
  }

  #close(holdId: string, status: 'released' | 'closed', graceMs = 0): Promise<CloseResult> {
    const parsed = this.#holdId(holdId);
    const limits = this.#limits;
    return this.#enqueue<CloseResult>(
      parsed.accountKey,
      parsed.suffix,
      (resolve, reject) => (state, nowMs, archived) => {
        const { state: next, outcome } = closeHold(state, parsed.suffix, status, nowMs, limits, graceMs, archived);
        return {
          state: next,
          settle: () => {
            if (outcome.kind === 'not_found') return reject(new HoldNotFoundError(holdId));
            resolve({
              hold: holdView(parsed.account, parsed.accountKey, outcome.hold),
              changed: outcome.kind === 'closed' || outcome.kind === 'releasing',
            });
          },
        };
      },
    );
  }

  /** A hold, open or closed within its retention, as of a fresh read. */
  async get(holdId: string): Promise<HoldView> {
    const parsed = this.#holdId(holdId);
    const { state } = await this.#read(parsed.accountKey);
    const nowMs = this.#clock();
    const pruned = prune(state, nowMs, this.#limits);
    const hold =
      findHold(pruned, parsed.suffix) ??
      (await this.#lookUpArchived(parsed.accountKey, pruned, [parsed.suffix], nowMs))?.get(parsed.suffix);
    if (hold === undefined) throw new HoldNotFoundError(holdId);
    return holdView(parsed.account, parsed.accountKey, hold);
  }

  /** The account's open holds, as of a fresh read. */
  async list(customer: string, unit: string): Promise<AccountHolds> {
    const account = this.#account(customer, unit);
    const key = accountKey(account);
    const { state, revision } = await this.#read(key);
    const pruned = prune(state, this.#clock(), this.#limits);
    return {
      customer,
      unit,
      held: pruned.held,
      holds: pruned.holds.map((hold) => holdView(account, key, hold)),
      revision,
    };
  }

  /**
   * Open holds over every account in the bucket, reading at most `accountsMax` accounts (a gauge's source, run
   * now and then, not per request). `complete` is false when accounts were left unread.
   */
  async countOpen(accountsMax: number): Promise<{ open: number; accounts: number; complete: boolean }> {
    let open = 0;
    let accounts = 0;
    const nowMs = this.#clock();
    let keys;
    try {
      keys = await this.#kv.keys();
    } catch (error) {
      throw new HoldsUnavailableError(`listing hold accounts: ${messageOf(error)}`, error);
    }
    for await (const key of keys) {
      if (accounts >= accountsMax) {
        keys.stop();
        return { open, accounts, complete: false };
      }
      accounts++;
      const { state } = await this.#read(key);
      for (const hold of state.holds) if (hold.expiresMs > nowMs) open++;
    }
    return { open, accounts, complete: true };
  }

  /** Would a hold of `amount` be admitted now? Reserves nothing. */
  async check(request: CheckRequest): Promise<CheckResult> {
    const account = this.#account(request.customer, request.unit);
    const amount = this.#amount(request.amount);
    const [{ base, allowance, covered }, { state }] = await Promise.all([
      this.#balanceFor(account, request),
      this.#read(accountKey(account)),
    ]);
    const pruned = prune(state, this.#clock(), this.#limits);
    const available = availableOf(pruned, base, covered);
    return {
      allowed: !available.plus(allowance).lessThan(amount),
      available: formatAmount(available),
      held: formatAmount(money(pruned.held).minus(coveredOf(pruned, covered))),
      allowance: formatAmount(allowance),
    };
  }

  /**
   * Refuses new operations and waits for the queued ones to be answered (each is bounded by attemptsMax and the
   * request timeout).
   */
  async shutdown(): Promise<void> {
    this.#stopped = true;
    if (this.#pending > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  // --- inputs -------------------------------------------------------------

  #account(customer: unknown, unit: unknown): AccountRef {
    if (typeof customer !== 'string' || !customerPattern.test(customer))
      throw new HoldRequestInvalidError('customer', 'must be 1–128 characters of [A-Za-z0-9._:@-]');
    if (typeof unit !== 'string' || !unitPattern.test(unit))
      throw new HoldRequestInvalidError('unit', 'must be 1–64 characters of [A-Za-z0-9._:@-]');
    return { customer, unit };
  }

  #amount(value: unknown): Decimal {
    const amount = toDecimal(value);
    if (
      amount === undefined ||
      !amount.isPositive() ||
      amount.isZero() ||
      amount.decimalPlaces() > 9 ||
      !amount.lessThan(amountLimit)
    ) {
      throw new HoldRequestInvalidError(
        'amount',
        'must be a decimal above 0 and below 10^18 with at most 9 fraction digits',
      );
    }
    return amount;
  }

  #holdId(holdId: unknown) {
    const parsed = typeof holdId === 'string' ? parseHoldId(holdId) : undefined;
    if (parsed === undefined) throw new HoldNotFoundError(String(holdId));
    return parsed;
  }

  #metadata(metadata: unknown): Record<string, string> | undefined {
    if (metadata === undefined) return undefined;
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))
      throw new HoldRequestInvalidError('metadata', 'must be an object of strings');
    const entries = Object.entries(metadata);
    if (entries.length > this.#settings.metadataEntriesMax)
      throw new HoldRequestInvalidError('metadata', `may have at most ${this.#settings.metadataEntriesMax} entries`);
    const out: Record<string, string> = Object.create(null);
    for (const [key, value] of entries) {
      if (!metadataKeyPattern.test(key))
        throw new HoldRequestInvalidError(
          `metadata.${key.slice(0, 64)}`,
          'keys must be 1–64 characters of [A-Za-z0-9_.:-]',
        );
      if (typeof value !== 'string') throw new HoldRequestInvalidError(`metadata.${key}`, 'must be a string');
      out[key] = value;
    }
    if (Buffer.byteLength(JSON.stringify(out)) > this.#settings.metadataBytesMax)
      throw new HoldRequestInvalidError(
        'metadata',
        `must take at most ${this.#settings.metadataBytesMax} bytes as JSON`,
      );
    return out;
  }

  async #balanceFor(
    account: AccountRef,
    request: { base?: BalanceInput; allowance?: BalanceInput; covered?: Covered },
  ): Promise<{ base: Decimal; allowance: Decimal; covered: Covered | undefined }> {
    let { base, allowance, covered } = request;
    if ((base === undefined || allowance === undefined) && this.#balance !== undefined) {
      const source = await this.#balance(account);
      // A base from the source goes with the source's coverage: they are one read.
      if (base === undefined) covered = source.covered;
      base ??= source.base;
      allowance ??= source.allowance;
    }
    if (base === undefined || allowance === undefined)
      throw new TypeError(
        'base and allowance are required: pass them with the request or give the store a balance source',
      );
    // Figures passed as values (the common case) need no promise round.
    const baseValue = typeof base === 'function' ? await resolveInput(base, 'base') : checkedInput(base, 'base');
    const allowanceValue =
      typeof allowance === 'function'
        ? await resolveInput(allowance, 'allowance')
        : checkedInput(allowance, 'allowance');
    if (allowanceValue.isNegative())
      throw new RangeError(`allowance must not be negative, got ${formatAmount(allowanceValue)}`);
    return { base: baseValue, allowance: allowanceValue, covered };
  }

  // --- KV -----------------------------------------------------------------

  async #read(key: string): Promise<Snapshot> {
    let entry;
    try {
      entry = await this.#kv.get(key);
    } catch (error) {
      throw new HoldsUnavailableError(`reading hold account ${key}: ${messageOf(error)}`, error);
    }
    this.#stats.reads++;
    if (entry === null) return { state: emptyAccount, revision: 0 };
    // A deleted or purged key (an operator's doing) reads as an empty account at the marker's revision.
    if (entry.operation !== 'PUT') return { state: emptyAccount, revision: entry.revision };
    return { state: decodeAccount(entry.string()), revision: entry.revision };
  }

  async #write(key: string, state: AccountState, revision: number): Promise<number> {
    const value = encodeAccountBytes(state);
    if (value.length > this.#valueBytesMax)
      throw new Error(
        `hold account ${key} encodes to ${value.length} bytes, above the ${this.#valueBytesMax} its limits allow: valueBytesBound is wrong`,
      );
    this.#stats.writes++;
    this.#stats.bytesWritten += value.length;
    return revision === 0 ? this.#kv.create(key, value) : this.#kv.update(key, value, revision);
  }

  // --- lanes --------------------------------------------------------------

  #enqueue<T>(
    key: string,
    target: string | undefined,
    build: (resolve: (value: T) => void, reject: (error: unknown) => void) => PendingOp['apply'],
  ): Promise<T> {
    if (this.#stopped) return Promise.reject(new HoldsUnavailableError('the hold store is shut down'));
    if (this.#pending >= this.#settings.pendingOpsMax)
      return Promise.reject(new HoldsOverloadedError(this.#settings.pendingOpsMax));
    return new Promise<T>((resolve, reject) => {
      let lane = this.#lanes.get(key);
      if (lane === undefined)
        lane = { key, cached: undefined, queue: [], running: false, archived: new Set(), archiving: false };
      else this.#lanes.delete(key);
      this.#lanes.set(key, lane);
      lane.queue.push({ target, apply: build(resolve, reject), reject });
      this.#pending++;
      this.#stats.operations++;
      if (!lane.running) this.#schedule(lane);
    });
  }

  /**
   * Lanes with work start their next write together, on the next turn of the
   * event loop. Why wait a turn: nats.js sends what was published since its
   * last flush in one socket write, and it flushes at the end of the current
   * microtask run. Writes started one by one from separate continuations each
   * paid a write(2) (a fifth of the CPU at 1,000 accounts); started from one
   * callback they share it. Operations on one account that arrive during the
   * turn also join its batch.
   */
  #schedule(lane: Lane): void {
    this.#ready.add(lane);
    if (this.#tickScheduled) return;
    this.#tickScheduled = true;
    setImmediate(this.#tick);
  }

  readonly #tick = (): void => {
    this.#tickScheduled = false;
    const lanes = [...this.#ready];
    this.#ready.clear();
    for (const lane of lanes) this.#runBatch(lane);
  };

  #runBatch(lane: Lane): void {
    lane.running = true;
    const batch = lane.queue.splice(0, this.#settings.batchOpsMax);
    this.#commit(lane, batch)
      .catch((error: unknown) => {
        // A bug (a transition threw, a state would not encode): fail this batch, keep the lane usable.
        lane.cached = undefined;
        for (const op of batch) op.reject(error);
      })
      .finally(() => {
        lane.running = false;
        this.#pending -= batch.length;
        if (lane.queue.length > 0) this.#schedule(lane);
        else this.#evictIdle();
        if (this.#pending === 0) for (const idle of this.#idleWaiters.splice(0)) idle();
      });
  }

  /** Answers every operation of `batch`, whatever happens. */
  async #commit(lane: Lane, batch: PendingOp[]): Promise<void> {
    const { attemptsMax } = this.#settings;
    let conflicts = 0;
    for (let attempt = 1; attempt <= attemptsMax; attempt++) {
      let snapshot = lane.cached;
      const fresh = snapshot === undefined;
      if (snapshot === undefined) {
        try {
          snapshot = await this.#read(lane.key);
        } catch (error) {
          for (const op of batch) op.reject(error);
          return;
        }
      }
      const nowMs = this.#clock();
      let archived: Archived | undefined;
      try {
        archived = await this.#lookUpArchived(
          lane.key,
          snapshot.state,
          batch.map((op) => op.target),
          nowMs,
        );
      } catch (error) {
        for (const op of batch) op.reject(error);
        return;
      }
      let state = snapshot.state;
      const settles: (() => void)[] = [];
      for (const op of batch) {
        const step = op.apply(state, nowMs, archived);
        state = step.state;
        settles.push(step.settle);
      }

      if (state === snapshot.state) {
        // Nothing to write. The answers stand only if the state is current: a
        // cached one may be stale (another process wrote since), so read again.
        if (!fresh) {
          lane.cached = undefined;
          continue;
        }
        lane.cached = snapshot;
        this.#stats.batches++;
        for (const settle of settles) settle();
        return;
      }

      // Rides on a write the batch makes anyway: records whose archive put was acknowledged leave the value.
      if (lane.archived.size > 0) state = dropArchived(state, lane.archived);
      try {
        const revision = await this.#write(lane.key, state, snapshot.revision);
        lane.cached = { state, revision };
        this.#onWrite?.(snapshot.state, state, nowMs);
        this.#stats.batches++;
        for (const settle of settles) settle();
        this.#archiveLater(lane, state);
        return;
      } catch (error) {
        lane.cached = undefined;
        if (!isConflict(error)) {
          const failure =
            error instanceof HoldError
              ? error
              : new HoldsUnavailableError(
                  `writing hold account ${lane.key} (the write may or may not have been stored): ${messageOf(error)}`,
                  error,
                );
          for (const op of batch) op.reject(failure);
          return;
        }
        conflicts++;
        this.#stats.conflicts++;
        if (attempt < attemptsMax) await this.#backoff(conflicts);
      }
    }
    this.#stats.contentionExhausted++;
    const exhausted = new ContentionExhaustedError(lane.key, attemptsMax);
    for (const op of batch) op.reject(exhausted);
  }

  /**
   * The archived records of the ids in `targets` that `state` lacks, within
   * retention; undefined when the value says nothing of its closed records
   * can be there. Called after `state` was read (or written): every record a
   * write up to it dropped was acknowledged by the archive before that write.
   */
  async #lookUpArchived(
    key: string,
    state: AccountState,
    targets: readonly (string | undefined)[],
    nowMs: number,
  ): Promise<Archived | undefined> {
    if (!archiveMayHold(state, nowMs, this.#limits)) return undefined;
    const missing = new Set<string>();
    for (const id of targets) if (id !== undefined && findHold(state, id) === undefined) missing.add(id);
    if (missing.size === 0) return undefined;
    const floorMs = nowMs - this.#limits.closedRetentionMs;
    const found = new Map<string, ClosedHold>();
    await Promise.all(
      [...missing].map(async (id) => {
        let entry;
        try {
          entry = await this.#archive.get(holdIdOf(key, id));
        } catch (error) {
          throw new HoldsUnavailableError(`reading archived hold ${holdIdOf(key, id)}: ${messageOf(error)}`, error);
        }
        this.#stats.archiveReads++;
        if (entry === null || entry.operation !== 'PUT') return;
        const record = decodeClosedRecord(entry.string());
        if (record.id === id && record.closedMs > floorMs) found.set(id, record);
      }),
    );
    return found;
  }

  /**
   * Puts the value's oldest closed records into the archive, off the answer
   * path, one round at a time per account; once acknowledged, the account's
   * next write drops them (#commit). A failed round leaves them in the value,
   * which retries with the next write (closedHoldsMax still bounds it).
   */
  #archiveLater(lane: Lane, state: AccountState): void {
    // Forget what this value no longer holds, so the set stays within the value's own records.
    if (lane.archived.size > 0) {
      const present = new Set(state.closed.map(closedRecordText));
      for (const text of lane.archived) if (!present.has(text)) lane.archived.delete(text);
    }
    if (lane.archiving) return;
    const due = archiveCandidates(state, this.#limits).filter((record) => !lane.archived.has(closedRecordText(record)));
    if (due.length === 0) return;
    lane.archiving = true;
    Promise.all(
      due.map(async (record) => {
        const text = closedRecordText(record);
        await this.#archive.put(holdIdOf(lane.key, record.id), text);
        return text;
      }),
    )
      .then((texts) => {
        for (const text of texts) lane.archived.add(text);
        this.#stats.archived += texts.length;
        this.#onArchive?.({ archived: texts.length });
      })
      .catch((error: unknown) => {
        this.#stats.archiveFailures++;
        this.#onArchive?.({ failed: error });
      })
      .finally(() => {
        lane.archiving = false;
      });
  }

  #backoff(conflicts: number): Promise<void> {
    const { backoffBaseMs, backoffMaxMs } = this.#settings;
    // Full jitter: processes that collided spread out instead of colliding again in step.
    const ceilingMs = Math.min(backoffMaxMs, backoffBaseMs * 2 ** Math.min(conflicts - 1, 30));
    const delayMs = Math.random() * ceilingMs;
    return delayMs < 0.5 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, delayMs));
  }

  #evictIdle(): void {
    let excess = this.#lanes.size - this.#settings.cachedAccountsMax;
    if (excess <= 0) return;
    // Bounded by the map's size; busy lanes are skipped and evicted on a later call.
    for (const [key, lane] of this.#lanes) {
      if (excess <= 0) break;
      if (lane.running || lane.queue.length > 0 || this.#ready.has(lane)) continue;
      this.#lanes.delete(key);
      excess--;
    }
  }
}
