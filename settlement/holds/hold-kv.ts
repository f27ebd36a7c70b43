/**
 * The KV engine of the hold store: one value per (customer, unit) account,
 * changed only by compare-and-set on its revision, so every process decides
 * from the state the previous decision left (README.md in this folder).
 *
 *   submitted operation ──▶ lane (one per account in this process)
 *                             ▼ ≤ batchOpsMax operations per write
 *          cached {state, revision} ──▶ pure transitions (hold-account.ts)
 *                             ▼
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
import { StorageType, type JetStreamClient } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import {
  archiveCandidates,
  archiveMayHold,
  closedRecordText,
  decodeAccount,
  decodeClosedRecord,
  dropArchived,
  emptyAccount,
  encodeAccountBytes,
  findHold,
  type AccountLimits,
  type AccountState,
  type Archived,
  type ClosedHold,
} from './hold-account.js';
import { ContentionExhaustedError, HoldError, HoldsUnavailableError } from './hold-errors.js';
import { holdIdOf } from './hold-ids.js';
import type { HoldStoreSettings } from './hold-options.js';
import {
  emptyEngineStats,
  messageOf,
  type EngineHooks,
  type AccountRead,
  type HoldEngine,
  type OpenCount,
  type PendingOp,
} from './hold-op.js';
import { isCasConflict } from '../../shared/nats/cas-conflict.js';

interface Snapshot {
  state: AccountState;
  revision: number;
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

/** The bucket closed holds move to (header). */
export function archiveBucketOf(bucket: string): string {
  return `${bucket}_closed`;
}

export class HoldKv implements HoldEngine {
  readonly #kv: KV;
  readonly #archive: KV;
  readonly #settings: Readonly<HoldStoreSettings>;
  readonly #limits: AccountLimits;
  readonly #valueBytesMax: number;
  readonly #clock: () => number;
  readonly #onWrite: EngineHooks['onWrite'];
  readonly #onArchive: EngineHooks['onArchive'];
  // Insertion order is recency: a lane is moved to the end when used, evicted from the front.
  readonly #lanes = new Map<string, Lane>();
  readonly #ready = new Set<Lane>();
  #tickScheduled = false;
  readonly #stats = emptyEngineStats();

  private constructor(
    kv: KV,
    archive: KV,
    settings: Readonly<HoldStoreSettings>,
    limits: AccountLimits,
    valueBytesMax: number,
    hooks: EngineHooks,
  ) {
    this.#kv = kv;
    this.#archive = archive;
    this.#settings = settings;
    this.#limits = limits;
    this.#valueBytesMax = valueBytesMax;
    this.#clock = hooks.clock;
    this.#onWrite = hooks.onWrite;
    this.#onArchive = hooks.onArchive;
  }

  /** Opens (creating if missing) the holds bucket and its archive. */
  static async open(
    js: JetStreamClient,
    settings: Readonly<HoldStoreSettings>,
    limits: AccountLimits,
    valueBytesMax: number,
    hooks: EngineHooks,
  ): Promise<HoldKv> {
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
    return new HoldKv(kv, archive, settings, limits, valueBytesMax, hooks);
  }

  stats() {
    return { ...this.#stats };
  }

  async read(key: string, targets: readonly string[], nowMs: number): Promise<AccountRead> {
    const { state, revision } = await this.#read(key);
    const archived = targets.length === 0 ? undefined : await this.#lookUpArchived(key, state, targets, nowMs);
    return { state, revision, archived };
  }

  async countOpen(accountsMax: number, nowMs: number): Promise<OpenCount> {
    let open = 0;
    let accounts = 0;
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

  async close(): Promise<void> {}

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

  submit(key: string, op: PendingOp): void {
    let lane = this.#lanes.get(key);
    if (lane === undefined)
      lane = { key, cached: undefined, queue: [], running: false, archived: new Set(), archiving: false };
    else this.#lanes.delete(key);
    this.#lanes.set(key, lane);
    lane.queue.push(op);
    if (!lane.running) this.#schedule(lane);
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
        if (lane.queue.length > 0) this.#schedule(lane);
        else this.#evictIdle();
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
        if (!isCasConflict(error)) {
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
