/**
 * Credit holds: the API a process uses (reserve, release, close, consume,
 * get, list, check), its input checks and answers. Where accounts' states
 * live and how a change is decided against other processes is the engine's
 * (settlement.holds.engine): hold-kv.ts, one compare-and-set per account
 * change, or hold-log.ts, one append per shard of accounts. Both run the
 * same pure transitions (hold-account.ts), README.md in this folder.
 */
import { Decimal } from 'decimal.js';
import { JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { formatAmount, money, Money } from '../../shared/money.js';
import {
  admit,
  availableOf,
  closeHold,
  coveredOf,
  consumeHold,
  findHold,
  isOpen,
  prune,
  type AccountLimits,
  type AccountState,
  type ClosedHold,
  type ClosedStatus,
  type Covered,
  type OpenHold,
} from './hold-account.js';
import {
  HoldClosedError,
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
import { HoldKv } from './hold-kv.js';
import { HoldLog, logStreamOf } from './hold-log.js';
import type { EngineStats, HoldEngine, PendingOp } from './hold-op.js';
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

export interface HoldStoreStats extends EngineStats {
  operations: number;
  pending: number;
}

const decimalText = /^-?\d+(\.\d+)?$/;
const metadataKeyPattern = /^[A-Za-z0-9_.:-]{1,64}$/;
const amountLimit = money('1e18');
const costLimit = money('1e30');
// Usage costs come from pricing at 60 significant digits; kept to 18 fraction digits (twice the ledger's 9) so a
// hold's remaining stays bounded in length.
const costScale = 18;

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

// Every hold shown has two instants, and those of one second share all but the milliseconds: the text up to them
// is kept for the last two seconds seen (created now, expiring now + a TTL), the rest is appended.
const isoSeconds: [number, string][] = [
  [Number.NaN, ''],
  [Number.NaN, ''],
];
let isoNext = 0;
// Up to 9999-12-31T23:59:59.999Z every instant has the same 24-character form.
const isoPlainMax = 253_402_300_799_999;

export function iso(ms: number): string {
  if (!(ms >= 0 && ms <= isoPlainMax && Number.isInteger(ms))) return new Date(ms).toISOString();
  const millis = ms % 1000;
  const second = ms - millis;
  let prefix: string | undefined;
  for (const [cached, text] of isoSeconds) if (cached === second) prefix = text;
  if (prefix === undefined) {
    // "YYYY-MM-DDTHH:MM:SS."
    prefix = new Date(second).toISOString().slice(0, 20);
    isoSeconds[isoNext] = [second, prefix];
    isoNext = 1 - isoNext;
  }
  return `${prefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`;
}

export function holdView(account: AccountRef, key: string, hold: OpenHold | ClosedHold): HoldView {
  const consumed = hold.amount === hold.remaining ? '0' : formatAmount(money(hold.amount).minus(hold.remaining));
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

export { archiveBucketOf } from './hold-kv.js';

/** engine 'auto': the log, unless the KV bucket already exists and the log does not. */
async function chooseEngine(nc: NatsConnection, settings: Readonly<HoldStoreSettings>): Promise<'kv' | 'log'> {
  const jsm = await jetstreamManager(nc, { timeout: settings.requestTimeoutMs });
  const exists = async (stream: string): Promise<boolean> => {
    try {
      await jsm.streams.info(stream);
      return true;
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return false;
      throw error;
    }
  };
  if (await exists(logStreamOf(settings.bucket))) return 'log';
  return (await exists(`KV_${settings.bucket}`)) ? 'kv' : 'log';
}

export class HoldStore {
  readonly #engine: HoldEngine;
  readonly #settings: Readonly<HoldStoreSettings>;
  readonly #limits: AccountLimits;
  readonly #balance: BalanceSource | undefined;
  readonly #clock: () => number;
  readonly #idleWaiters: (() => void)[] = [];
  #pending = 0;
  #operations = 0;
  #stopped = false;

  private constructor(
    engine: HoldEngine,
    settings: Readonly<HoldStoreSettings>,
    limits: AccountLimits,
    options: HoldStoreOptions,
  ) {
    this.#engine = engine;
    this.#settings = settings;
    this.#limits = limits;
    this.#balance = options.balance;
    this.#clock = options.clock ?? Date.now;
  }

  /**
   * Opens (creating if missing) the engine's bucket or stream on `nc`; the log
   * engine returns once it has replayed the log. The connection stays the
   * caller's: close it after shutdown(). On a fresh cluster, creating a
   * stream can fail until a JetStream meta leader is elected; retry.
   */
  static async open(nc: NatsConnection, options: HoldStoreOptions = {}): Promise<HoldStore> {
    const settings = fillHoldStoreSettings(options);
    refuseUnserializedCas(nc);
    const limits = accountLimits(settings);
    const valueBytesMax = valueBytesBound(settings);
    const maxPayload = nc.info?.max_payload;
    // Headers and the subject ride in the same message; 4 KiB covers them.
    if (maxPayload !== undefined && valueBytesMax + 4096 > maxPayload) {
      throw new RangeError(
        `an account's holds may take ${valueBytesMax} bytes (openHoldsMax, closedHoldsMax, metadataBytesMax, usageKeysMax), more than the NATS server's max_payload (${maxPayload}) allows; raise max_payload or lower the limits`,
      );
    }
    const js = jetstream(nc, { timeout: settings.requestTimeoutMs });
    const hooks = { clock: options.clock ?? Date.now, onWrite: options.onWrite, onArchive: options.onArchive };
    const name = settings.engine === 'auto' ? await chooseEngine(nc, settings) : settings.engine;
    const engine =
      name === 'log'
        ? await HoldLog.open(nc, js, settings, limits, maxPayload ?? 1024 * 1024, hooks)
        : await HoldKv.open(js, settings, limits, valueBytesMax, hooks);
    return new HoldStore(engine, Object.freeze({ ...settings, engine: name }), limits, options);
  }

  get settings(): Readonly<HoldStoreSettings> {
    return this.#settings;
  }

  stats(): HoldStoreStats {
    return { ...this.#engine.stats(), operations: this.#operations, pending: this.#pending };
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
    const nowMs = this.#clock();
    const { state, archived } = await this.#engine.read(parsed.accountKey, [parsed.suffix], nowMs);
    const hold = findHold(prune(state, nowMs, this.#limits), parsed.suffix, archived);
    if (hold === undefined) throw new HoldNotFoundError(holdId);
    return holdView(parsed.account, parsed.accountKey, hold);
  }

  /** The account's open holds, as of a fresh read. */
  async list(customer: string, unit: string): Promise<AccountHolds> {
    const account = this.#account(customer, unit);
    const key = accountKey(account);
    const nowMs = this.#clock();
    const { state, revision } = await this.#engine.read(key, [], nowMs);
    const pruned = prune(state, nowMs, this.#limits);
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
    return this.#engine.countOpen(accountsMax, this.#clock());
  }

  /** Would a hold of `amount` be admitted now? Reserves nothing. */
  async check(request: CheckRequest): Promise<CheckResult> {
    const account = this.#account(request.customer, request.unit);
    const amount = this.#amount(request.amount);
    const nowMs = this.#clock();
    const [{ base, allowance, covered }, { state }] = await Promise.all([
      this.#balanceFor(account, request),
      this.#engine.read(accountKey(account), [], nowMs),
    ]);
    const pruned = prune(state, nowMs, this.#limits);
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
    await this.#engine.close();
  }

  /** Queues an operation on the account's engine; answered exactly once, counted in pending until then. */
  #enqueue<T>(
    key: string,
    target: string | undefined,
    build: (resolve: (value: T) => void, reject: (error: unknown) => void) => PendingOp['apply'],
  ): Promise<T> {
    if (this.#stopped) return Promise.reject(new HoldsUnavailableError('the hold store is shut down'));
    if (this.#pending >= this.#settings.pendingOpsMax)
      return Promise.reject(new HoldsOverloadedError(this.#settings.pendingOpsMax));
    return new Promise<T>((resolve, reject) => {
      let answered = false;
      const done = (): boolean => {
        if (answered) return false;
        answered = true;
        if (--this.#pending === 0) for (const idle of this.#idleWaiters.splice(0)) idle();
        return true;
      };
      this.#pending++;
      this.#operations++;
      this.#engine.submit(key, {
        target,
        apply: build(
          (value) => {
            if (done()) resolve(value);
          },
          (error) => {
            if (done()) reject(error);
          },
        ),
        reject: (error) => {
          if (done()) reject(error);
        },
      });
    });
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
}
