/**
 * The log engine of the hold store (engine 'log'): accounts are hashed onto
 * `logShards` subjects of one stream, every process follows the whole stream
 * and keeps each shard's accounts in memory, and a batch of operations on any
 * accounts of one shard is one append, made with an expected last subject
 * sequence. That is JetStream's compare-and-set on the shard — the primitive
 * KV's update is made of — so the arbiter and what it guarantees are the KV
 * engine's; what changes is that one append decides many accounts, where KV
 * needs one compare-and-set per account.
 *
 *   submitted operation ──▶ shard queue (one append in flight per shard per process)
 *                             ▼ ≤ batchOpsMax operations, any accounts of the shard
 *      accounts in memory at shard sequence S ──▶ pure transitions (hold-account.ts)
 *                             ▼
 *      publish(<bucket>.log.<shard>, post-images, expected last subject sequence S)
 *        ok (S') ─▶ keep the post-images, S := S', answer the batch
 *        wrong last sequence N ─▶ wait for the follower to apply N, re-apply, ≤ attemptsMax
 *        other error ─▶ holds_unavailable (the append's outcome is unknown: if stored, the follower applies it)
 *
 * A message is one line per account it changed, `<account key>\t<account>`,
 * the account in hold-account.ts' stored form: its open holds after the
 * batch, and as `closed` only the records the batch closed. Closed records
 * live in memory (closed-store.ts) for closedRetentionMs (bounded per process
 * by logClosedRecordsMax), not in later post-images: that is what keeps an
 * append small however busy the account, with no archive.
 *
 * The follower (an ordered consumer from the stream's start) applies every
 * message on a shard past the sequence that shard is known at; one this
 * process appended is known at its ack already. Invariant: a shard's
 * accounts reflect every message of its subject up to its sequence, because
 * an append succeeds only when no other message came after that sequence.
 *
 * What a process starting replays: the stream keeps a message logWindowMs
 * (max_age), at least closedRetentionMs + 30 s, so every closed record still
 * retained is in it. An account's open holds are in its latest post-image;
 * every process re-appends (refreshes) an account whose open holds were last
 * written over half the window ago, so while any process runs, every open
 * hold is in the window. The window is everything the state needs, and all a
 * process replays before it answers (docs/holds.md).
 */
import {
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type StreamInfo,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  AccountStateCorruptError,
  decodeAccount,
  prune,
  emptyAccount,
  encodeAccount,
  type AccountLimits,
  type AccountState,
  type Archived,
  type ClosedHold,
} from './hold-account.js';
import { ContentionExhaustedError, HoldError, HoldsUnavailableError } from './hold-errors.js';
import { isCasConflict } from '../../shared/nats/cas-conflict.js';
import { importKvAccounts } from './hold-log-import.js';
import { ClosedStore, type RecordOwner } from './closed-store.js';
import {
  emptyEngineStats,
  messageOf,
  type EngineHooks,
  type AccountRead,
  type HoldEngine,
  type OpenCount,
  type PendingOp,
} from './hold-op.js';
import type { HoldStoreSettings } from './hold-options.js';

export function logStreamOf(bucket: string): string {
  return `${bucket}_log`;
}

/** Which shard an account key belongs to: FNV-1a over its UTF-16 code units, so every process agrees. */
export function shardOf(key: string, shards: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % shards;
}

const shardsDescription = /(\d+) shards/;
const wrongLastSequenceText = /wrong last sequence: (\d+)/;

interface Account extends RecordOwner {
  readonly key: string;
  readonly shard: Shard;
  /** Open holds; `closed` is always empty here (its closed records within retention are in the ClosedStore). */
  state: AccountState;
  /** When its post-image was last appended or applied here (this process's clock): refreshed past half the window. */
  writtenMs: number;
  /** A refresh of it is queued (one at a time). */
  refreshing: boolean;
}

interface Item {
  readonly key: string;
  readonly op: PendingOp;
  /** Append the account's post-image even when nothing changed (a refresh). */
  readonly refresh?: true;
}

/** Pause before the follower resumes after its consumer ended. */
const followerRestartMs = 250;

/** Accounts one refresh round re-appends at most; the rest wait for the next round. */
const refreshAccountsMax = 10_000;

interface Shard {
  readonly index: number;
  readonly subject: string;
  /** The stream sequence of the last message of this subject that `accounts` reflects (0: none). */
  seq: number;
  readonly accounts: Map<string, Account>;
  queue: Item[];
  running: boolean;
  waiters: { seq: number; resolve: () => void }[];
}

/** The records of one account within retention, as the transitions look them up (Archived). */
class RetainedView implements Archived {
  constructor(
    readonly store: ClosedStore<Account>,
    readonly account: Account,
    readonly floorMs: number,
  ) {}
  get(id: string): ClosedHold | undefined {
    return this.store.get(this.account, id, this.floorMs);
  }
}

const decoder = new TextDecoder();

export class HoldLog implements HoldEngine {
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #stream: string;
  readonly #settings: Readonly<HoldStoreSettings>;
  readonly #limits: AccountLimits;
  readonly #messageBytesMax: number;
  readonly #hooks: EngineHooks;
  readonly #shards: Shard[];
  readonly #bySubject = new Map<string, Shard>();
  readonly #ready = new Set<Shard>();
  #tickScheduled = false;
  // Oldest first (by arrival; expiries can arrive with older closedMs, and leave a little later).
  readonly #closed: ClosedStore<Account>;
  #messages: ConsumerMessages | undefined;
  #followed: Promise<void> | undefined;
  #followError: unknown;
  /** The stream sequence the follower last delivered: where it resumes. */
  #deliveredSeq = 0;
  #closing = false;
  #refreshTimer: NodeJS.Timeout | undefined;
  readonly #stats = emptyEngineStats();

  private constructor(
    js: JetStreamClient,
    jsm: JetStreamManager,
    settings: Readonly<HoldStoreSettings>,
    limits: AccountLimits,
    messageBytesMax: number,
    hooks: EngineHooks,
  ) {
    this.#js = js;
    this.#jsm = jsm;
    this.#stream = logStreamOf(settings.bucket);
    this.#settings = settings;
    // A batch may close many holds of one account at once: the per-write cap on closed records must not drop any.
    this.#limits = Object.freeze({
      ...limits,
      closedHoldsMax: Math.max(limits.closedHoldsMax, settings.batchOpsMax + limits.openHoldsMax),
    });
    this.#messageBytesMax = messageBytesMax;
    this.#hooks = hooks;
    this.#shards = Array.from({ length: settings.logShards }, (_, index) => ({
      index,
      subject: `${settings.bucket}.log.${index}`,
      seq: 0,
      accounts: new Map(),
      queue: [],
      running: false,
      waiters: [],
    }));
    for (const shard of this.#shards) this.#bySubject.set(shard.subject, shard);
    this.#closed = new ClosedStore<Account>(settings.logClosedRecordsMax, (account) => {
      if (account.state.holds.length === 0 && account.shard.accounts.get(account.key) === account)
        account.shard.accounts.delete(account.key);
    });
  }

  /** Opens (creating if missing) the log stream and replays it; resolves once every shard is current. */
  static async open(
    nc: NatsConnection,
    js: JetStreamClient,
    settings: Readonly<HoldStoreSettings>,
    limits: AccountLimits,
    maxPayload: number,
    hooks: EngineHooks,
  ): Promise<HoldLog> {
    const jsm = await jetstreamManager(nc, { timeout: settings.requestTimeoutMs });
    const name = logStreamOf(settings.bucket);
    const maxAgeMs = settings.logWindowMs;
    const description = `drawdown credit holds: the log of ${settings.logShards} shards of accounts`;
    let info;
    try {
      info = await jsm.streams.info(name);
    } catch (error) {
      if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)) throw error;
      info = await addOrFind(jsm, name, {
        name,
        subjects: [`${settings.bucket}.log.*`],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        num_replicas: settings.replicas,
        max_age: maxAgeMs * 1_000_000,
        max_bytes: settings.logBytesMax,
        // Full: appends are refused (holds_unavailable) rather than old messages, which may hold open holds, dropped.
        discard: DiscardPolicy.New,
        max_msg_size: maxPayload,
        // A shard's last sequence is read from the stream leader: a direct get may be answered by a lagging replica.
        allow_direct: false,
        description,
      });
    }
    const shards = Number(shardsDescription.exec(info.config.description ?? '')?.[1]);
    if (shards !== settings.logShards)
      throw new RangeError(
        `stream ${name} was made for ${Number.isNaN(shards) ? 'an unknown number of' : shards} shards, not logShards ${settings.logShards}: accounts would be decided on the wrong shard`,
      );
    const keptMs = info.config.max_age / 1_000_000;
    if (info.config.max_age > 0 && keptMs < maxAgeMs)
      throw new RangeError(
        `stream ${name} keeps messages ${keptMs} ms, less than logWindowMs (${maxAgeMs}): refreshes would come too late, and open holds age out; raise its max_age or lower logWindowMs`,
      );
    const log = new HoldLog(
      js,
      jsm,
      settings,
      limits,
      Math.min(maxPayload, info.config.max_msg_size > 0 ? info.config.max_msg_size : maxPayload) - 4096,
      hooks,
    );
    let lastSeq = info.state.messages === 0 ? 0 : info.state.last_seq;
    if (info.state.last_seq === 0) {
      // Never written: an installation moving from the KV engine brings its accounts (hold-log-import.ts).
      const imported = await importKvAccounts(js, jsm, {
        bucket: settings.bucket,
        shards: settings.logShards,
        subjectOf: (shard) => log.#shards[shard]!.subject,
        shardOf: (key) => shardOf(key, settings.logShards),
        messageBytesMax: log.#messageBytesMax,
        limits: log.#limits,
        nowMs: hooks.clock(),
        timeoutMs: settings.requestTimeoutMs,
      });
      log.#stats.imported = imported.accounts;
      lastSeq = (await jsm.streams.info(name)).state.last_seq;
    }
    await log.#follow(lastSeq);
    log.#refreshTimer = setInterval(() => log.#refresh(), Math.max(1_000, settings.logWindowMs / 8));
    log.#refreshTimer.unref();
    return log;
  }

  stats() {
    return { ...this.#stats, closedRetained: this.#closed.size };
  }

  submit(key: string, op: PendingOp): void {
    const shard = this.#shards[shardOf(key, this.#shards.length)]!;
    shard.queue.push({ key, op });
    if (!shard.running) this.#schedule(shard);
  }

  async read(key: string, _targets: readonly string[], nowMs: number): Promise<AccountRead> {
    const shard = this.#shards[shardOf(key, this.#shards.length)]!;
    await this.#current(shard);
    const account = shard.accounts.get(key);
    return {
      state: account?.state ?? emptyAccount,
      revision: shard.seq,
      archived:
        account === undefined || account.recordCount === 0
          ? undefined
          : new RetainedView(this.#closed, account, nowMs - this.#limits.closedRetentionMs),
    };
  }

  async countOpen(accountsMax: number, nowMs: number): Promise<OpenCount> {
    // Every account is in memory here: no reads.
    let open = 0;
    let accounts = 0;
    for (const shard of this.#shards) {
      for (const { state } of shard.accounts.values()) {
        if (state.holds.length === 0) continue;
        if (accounts >= accountsMax) return { open, accounts, complete: false };
        accounts++;
        for (const hold of state.holds) if (hold.expiresMs > nowMs) open++;
      }
    }
    return { open, accounts, complete: true };
  }

  async close(): Promise<void> {
    clearInterval(this.#refreshTimer);
    this.#closing = true;
    this.#messages?.stop();
    await this.#followed;
  }

  // --- the follower ---------------------------------------------------------

  /** Starts following the stream from its first message; resolves once it delivered `untilSeq`. */
  async #follow(untilSeq: number): Promise<void> {
    let caughtUp!: () => void;
    const ready = new Promise<void>((resolve) => (caughtUp = resolve));
    if (untilSeq === 0) caughtUp();
    this.#followed = (async () => {
      // A consumer's messages can end, or stall, under load or across a reconnect: following resumes after the
      // last message applied, until close(). Only a message this code did not write stops it for good.
      while (!this.#closing && this.#followError === undefined) {
        try {
          const consumer = await this.#js.consumers.get(
            this.#stream,
            this.#deliveredSeq === 0
              ? { deliver_policy: DeliverPolicy.All }
              : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.#deliveredSeq + 1 },
          );
          const messages = await consumer.consume({ max_messages: 1_000 });
          this.#messages = messages;
          if (this.#closing) messages.stop();
          for await (const message of messages) {
            this.#apply(message.subject, message.seq, message.data);
            this.#deliveredSeq = message.seq;
            // pending 0: nothing after it (the last message may have aged out since the stream's info was read).
            if (message.seq >= untilSeq || message.info.pending === 0) caughtUp();
          }
        } catch (error) {
          if (error instanceof AccountStateCorruptError) this.#followError = error;
        }
        if (!this.#closing && this.#followError === undefined) {
          this.#stats.followerRestarts++;
          await new Promise((resolve) => setTimeout(resolve, followerRestartMs));
        }
      }
      caughtUp();
    })();
    await ready;
    if (this.#followError !== undefined)
      throw new HoldsUnavailableError(`replaying ${this.#stream}: ${messageOf(this.#followError)}`, this.#followError);
  }

  /** The follower is late past a request's timeout: its consumer may have stalled, so it starts afresh. */
  #restartFollower(): void {
    this.#messages?.stop();
  }

  /** Applies a message another process (or this one, unacknowledged) appended. */
  #apply(subject: string, seq: number, data: Uint8Array): void {
    const shard = this.#bySubject.get(subject);
    if (shard === undefined || seq <= shard.seq) return;
    const nowMs = this.#hooks.clock();
    for (const line of decoder.decode(data).split('\n')) {
      const tab = line.indexOf('\t');
      // Not written by this code: the shard's state is unknown from here, so the follower stops and every
      // append and read of this process refuses (holds_unavailable) rather than deciding from it.
      if (tab < 1) throw new AccountStateCorruptError(`${subject} sequence ${seq} has a line without an account key`);
      this.#keep(shard, line.slice(0, tab), decodeAccount(line.slice(tab + 1)), nowMs);
    }
    this.#stats.applied++;
    this.#advance(shard, seq);
  }

  #advance(shard: Shard, seq: number): void {
    shard.seq = seq;
    if (shard.waiters.length === 0) return;
    shard.waiters = shard.waiters.filter((waiter) => {
      if (waiter.seq > seq) return true;
      waiter.resolve();
      return false;
    });
  }

  /**
   * Resolves once the shard reflects sequence `seq`; refuses after the request timeout. Still waiting at half of
   * it, the follower starts afresh: a consumer deleted or stalled under it neither ends nor delivers.
   */
  #caughtUpTo(shard: Shard, seq: number): Promise<void> {
    if (shard.seq >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timeoutMs = this.#settings.requestTimeoutMs;
      const nudge = setTimeout(() => this.#restartFollower(), timeoutMs / 2);
      const timer = setTimeout(() => {
        clearTimeout(nudge);
        shard.waiters = shard.waiters.filter((waiter) => waiter !== entry);
        reject(
          new HoldsUnavailableError(
            `the holds log's follower has not reached ${this.#stream} sequence ${seq} on shard ${shard.index} in ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const entry = {
        seq,
        resolve: () => {
          clearTimeout(nudge);
          clearTimeout(timer);
          resolve();
        },
      };
      shard.waiters.push(entry);
    });
  }

  /** The shard's last sequence on the stream leader; the shard then reflects it (a fresh read). */
  async #current(shard: Shard): Promise<void> {
    const at = shard.seq;
    const last = await this.#lastSeq(shard);
    if (last > shard.seq) await this.#caughtUpTo(shard, last);
    else this.#rewound(shard, at, last);
  }

  async #lastSeq(shard: Shard): Promise<number> {
    this.#stats.reads++;
    try {
      const message = await this.#jsm.streams.getMessage(this.#stream, { last_by_subj: shard.subject });
      return message === null ? 0 : message.seq;
    } catch (error) {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.NoMessageFound) return 0;
      throw new HoldsUnavailableError(`reading the last sequence of ${shard.subject}: ${messageOf(error)}`, error);
    }
  }

  /**
   * The subject's last message, `last`, read when the shard stood at `askedAt`. Older than that: the shard's
   * messages aged out (max_age: what they held has expired), or a leader change lost the newest (nats-server
   * before 2.11); either way the next append must name what the stream holds. Only if the shard has not moved
   * since: the follower may have applied a newer message while the answer was on its way, and taking the stale
   * answer would leave the shard waiting for a message already applied.
   */
  #rewound(shard: Shard, askedAt: number, last: number): void {
    if (last < askedAt && shard.seq === askedAt) shard.seq = last;
  }

  // --- state in memory ------------------------------------------------------

  /** Makes `state` (a post-image: open holds, plus the records its batch closed) the account's state. */
  #keep(shard: Shard, key: string, state: AccountState, nowMs: number): void {
    let account = shard.accounts.get(key);
    if (account === undefined) {
      account = {
        key,
        shard,
        state: emptyAccount,
        recordOwner: -1,
        recordCount: 0,
        writtenMs: nowMs,
        refreshing: false,
      };
      shard.accounts.set(key, account);
    }
    account.writtenMs = nowMs;
    account.state =
      state.closed.length === 0 && state.archivedMs === 0
        ? state
        : { held: state.held, holds: state.holds, closed: emptyAccount.closed, archivedMs: 0 };
    const floorMs = nowMs - this.#limits.closedRetentionMs;
    // Past logClosedRecordsMax the oldest leave first, counted when still within retention.
    for (const record of state.closed) this.#stats.closedForgotten += this.#closed.keep(account, record, floorMs);
    this.#closed.forget(floorMs);
  }

  // --- appends --------------------------------------------------------------

  /**
   * Re-appends the accounts whose open holds (any not yet expired) were last written over half the window ago,
   * before the stream ages that post-image out. Several processes may refresh one account: the appends stay in
   * order, and the extra one costs one line. Forgets accounts left with nothing but holds expired past retention
   * (what pruning them would leave is the empty account).
   */
  #refresh(): void {
    const nowMs = this.#hooks.clock();
    const staleMs = nowMs - this.#settings.logWindowMs / 2;
    const floorMs = nowMs - this.#limits.closedRetentionMs;
    let queued = 0;
    for (const shard of this.#shards) {
      for (const [key, account] of shard.accounts) {
        const { holds } = account.state;
        if (account.recordCount === 0 && holds.every((hold) => hold.expiresMs <= floorMs)) {
          if (!account.refreshing) shard.accounts.delete(key);
          continue;
        }
        if (queued >= refreshAccountsMax) return;
        if (account.refreshing || account.writtenMs > staleMs || !holds.some((hold) => hold.expiresMs > nowMs))
          continue;
        queued++;
        account.refreshing = true;
        this.#stats.refreshed++;
        const done = (): void => {
          account.refreshing = false;
        };
        shard.queue.push({
          key,
          refresh: true,
          op: {
            target: undefined,
            apply: (state, atMs) => ({ state: prune(state, atMs, this.#limits), settle: done }),
            // A refresh that fails is retried by the next round (one every eighth of the window).
            reject: done,
          },
        });
        if (!shard.running) this.#schedule(shard);
      }
    }
  }

  /** Shards with work start their next append together, on the next turn (hold-kv.ts #schedule says why). */
  #schedule(shard: Shard): void {
    this.#ready.add(shard);
    if (this.#tickScheduled) return;
    this.#tickScheduled = true;
    setImmediate(this.#tick);
  }

  readonly #tick = (): void => {
    this.#tickScheduled = false;
    const shards = [...this.#ready];
    this.#ready.clear();
    for (const shard of shards) this.#run(shard);
  };

  #run(shard: Shard): void {
    shard.running = true;
    const batch = shard.queue.splice(0, this.#settings.batchOpsMax);
    this.#commit(shard, batch)
      .catch((error: unknown) => {
        // A bug (a transition threw, a state would not encode): fail this batch, keep the shard usable.
        for (const item of batch) item.op.reject(error);
      })
      .finally(() => {
        shard.running = false;
        if (shard.queue.length > 0) this.#schedule(shard);
      });
  }

  /** Answers every operation of `batch`, whatever happens (those that do not fit one message go back first in line). */
  async #commit(shard: Shard, batch: Item[]): Promise<void> {
    const { attemptsMax } = this.#settings;
    const retentionMs = this.#limits.closedRetentionMs;
    for (let attempt = 1; attempt <= attemptsMax; attempt++) {
      if (this.#followError !== undefined) {
        const failure = new HoldsUnavailableError(`following ${this.#stream}: ${messageOf(this.#followError)}`);
        for (const item of batch) item.op.reject(failure);
        return;
      }
      const nowMs = this.#hooks.clock();
      // The sequence the transitions below decide at: the follower may move the shard on while this waits.
      const at = shard.seq;
      const byAccount = new Map<string, Item[]>();
      for (const item of batch) {
        const items = byAccount.get(item.key);
        if (items === undefined) byAccount.set(item.key, [item]);
        else items.push(item);
      }
      const changed: { key: string; before: AccountState; after: AccountState }[] = [];
      const settles: (() => void)[] = [];
      const lines: string[] = [];
      let bytes = 0;
      let deferred: Item[] | undefined;
      for (const [key, items] of byAccount) {
        const account = shard.accounts.get(key);
        const before = account?.state ?? emptyAccount;
        const archived =
          account === undefined || account.recordCount === 0
            ? undefined
            : new RetainedView(this.#closed, account, nowMs - retentionMs);
        let state = before;
        const own: (() => void)[] = [];
        for (const { op } of items) {
          const step = op.apply(state, nowMs, archived);
          state = step.state;
          own.push(step.settle);
        }
        if (state !== before || items.some((item) => item.refresh === true)) {
          const line = `${key}\t${encodeAccount(state)}`;
          const size = Buffer.byteLength(line) + 1;
          if (lines.length > 0 && bytes + size > this.#messageBytesMax) {
            (deferred ??= []).push(...items);
            continue;
          }
          bytes += size;
          lines.push(line);
          changed.push({ key, before, after: state });
        }
        settles.push(...own);
      }
      if (deferred !== undefined) {
        // Their transitions are discarded (they are pure): they run again in the next append, against its state.
        const later = new Set(deferred);
        batch = batch.filter((item) => !later.has(item));
        shard.queue.unshift(...deferred);
      }

      if (changed.length === 0) {
        // Nothing to append. The answers stand only if the shard is current: another process may have appended.
        let last;
        try {
          last = await this.#lastSeq(shard);
        } catch (error) {
          for (const item of batch) item.op.reject(error);
          return;
        }
        if (last > at) {
          if (!(await this.#waited(shard, last, batch))) return;
          continue;
        }
        this.#rewound(shard, at, last);
        this.#stats.batches++;
        for (const settle of settles) settle();
        return;
      }

      // Buffer.from, not TextEncoder: the same UTF-8, at a fraction of TextEncoder's cost in Node 20.
      const body = Buffer.from(lines.join('\n'));
      const expected = at;
      try {
        const ack = await this.#js.publish(shard.subject, body, {
          expect: { lastSubjectSequence: expected },
          timeout: this.#settings.requestTimeoutMs,
        });
        this.#stats.writes++;
        this.#stats.bytesWritten += body.length;
        // The follower may have delivered this very message already (and more after it): then it is applied.
        if (shard.seq < ack.seq) {
          for (const { key, after } of changed) this.#keep(shard, key, after, nowMs);
          this.#advance(shard, ack.seq);
        }
        for (const { before, after } of changed) this.#hooks.onWrite?.(before, after, nowMs);
        this.#stats.batches++;
        for (const settle of settles) settle();
        return;
      } catch (error) {
        let last = wrongLastSequence(error);
        if (last === null) {
          try {
            last = await this.#lastSeq(shard);
          } catch (failure) {
            for (const item of batch) item.op.reject(failure);
            return;
          }
        }
        if (last === undefined) {
          const failure =
            error instanceof HoldError
              ? error
              : new HoldsUnavailableError(
                  `appending to ${shard.subject} (the append may or may not have been stored): ${messageOf(error)}`,
                  error,
                );
          for (const item of batch) item.op.reject(failure);
          return;
        }
        this.#stats.conflicts++;
        if (last > expected) {
          if (!(await this.#waited(shard, last, batch))) return;
        } else {
          this.#rewound(shard, expected, last);
        }
      }
    }
    this.#stats.contentionExhausted++;
    const exhausted = new ContentionExhaustedError(shard.subject, attemptsMax);
    for (const item of batch) item.op.reject(exhausted);
  }

  /** Waits for the shard to reach `seq`; false (the batch refused) when the follower does not get there in time. */
  async #waited(shard: Shard, seq: number, batch: Item[]): Promise<boolean> {
    try {
      await this.#caughtUpTo(shard, seq);
      return true;
    } catch (error) {
      for (const item of batch) item.op.reject(error);
      return false;
    }
  }
}

/** Adds the stream; when another process added it meanwhile (a refused add), its info. */
async function addOrFind(
  jsm: JetStreamManager,
  name: string,
  config: Parameters<JetStreamManager['streams']['add']>[0],
): Promise<StreamInfo> {
  try {
    return await jsm.streams.add(config);
  } catch (error) {
    try {
      return await jsm.streams.info(name);
    } catch {
      throw error;
    }
  }
}

/**
 * The subject's actual last sequence, when `error` refused an append for naming another (null: refused so, in a
 * form without the number); undefined for any other error.
 */
function wrongLastSequence(error: unknown): number | null | undefined {
  if (!isCasConflict(error)) return undefined;
  const match = wrongLastSequenceText.exec(error.message);
  return match === null ? null : Number(match[1]);
}
