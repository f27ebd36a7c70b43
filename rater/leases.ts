/**
 * Partition ownership through leases in a NATS JetStream KV bucket, so any
 * number of raters can share the partitions and a dead one's are taken over
 * within seconds, while no two raters ever write one partition's flushes.
 *
 *   KV bucket drawdown_rater_leases (file storage, history 1, max age 1 day)
 *     <stream>.partition.<p>  {"owner", "token", "since"}    one per leased partition
 *     <stream>.rater.<id>     {"id", "wants", "host", "pid"} one per live rater
 *
 * - Taking: a free lease (no key, or deleted) by create; an expired one by
 *   update with the revision seen (CAS), so of raters racing for it exactly
 *   one gets it. `token` is new for every take, so a rater knows its own
 *   take from any other.
 * - Renewing: every TTL/4, update with the revision the rater last wrote
 *   (CAS). Refused: another rater holds it, lost.
 * - Expiry is judged by each observer on its own monotonic clock, never by
 *   comparing another host's timestamp: a lease is expired when the revision
 *   this rater last saw for it has not changed for a whole TTL since it first
 *   saw that revision. It saw it after it was written, so its holder sent
 *   that renewal before then, and the holder's deadline (below) passed at
 *   least TTL/4 before anyone can take the lease. The bucket's max age (a
 *   day) only clears leftovers; it decides nothing. A rater just started
 *   therefore waits a whole TTL before taking a lease it found.
 * - The fence (lease-fence.ts): a holder may act only while
 *   performance.now() < (send time of its last successful renewal) + TTL −
 *   TTL/4. The monotonic clock keeps running while a process is stopped
 *   (SIGSTOP, a VM pause), so a holder that wakes past it writes nothing;
 *   before each ClickHouse insert it also reads its lease back. A new owner
 *   resumes from the ClickHouse watermark, which covers everything the old
 *   owner committed.
 * - Members: each rater puts its key every TTL/4; one not renewed for a TTL
 *   (same rule) is dead. `auto` raters balance over the live ones
 *   (lease-plan.ts): a rater over its share hands the extra back (stops the
 *   partition, which writes what it holds, then deletes the lease), one
 *   under it takes free or expired leases.
 *
 * Renewing runs in a loop of its own, so starting or stopping a partition
 * (a ClickHouse read, a last flush) never delays a renewal.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { jetstream, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV, type KvEntry, type KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator } from '@nats-io/nats-core';
import type { Logger } from '../shared/log.js';
import { LeaseLostError, LeaseUnconfirmedError, type PartitionLease } from './lease-fence.js';
import { planLeases, type LeaseMember, type SeenLease, type Wants } from './lease-plan.js';
import type { RaterMetrics } from './metrics.js';

export const leaseBucket = 'drawdown_rater_leases';
/** Leftover keys (a rater gone for good, a partition count lowered) leave the bucket after this; it decides nothing. */
const bucketMaxAgeMs = 24 * 3_600_000;
/** A member key not renewed for this many TTLs is deleted by whoever sees it (tidiness only). */
const deadMemberTtls = 3;

/** Derived from the one setting, DRAWDOWN_RATER_LEASE_TTL_MS. */
export function leaseTimings(ttlMs: number): { renewEveryMs: number; marginMs: number; requestTimeoutMs: number } {
  const quarter = Math.floor(ttlMs / 4);
  return { renewEveryMs: quarter, marginMs: quarter, requestTimeoutMs: Math.max(500, quarter) };
}

export interface LeaseHooks {
  /** Starts the partition's loop under `lease` (it resumes from the watermark). */
  start(partition: number, lease: PartitionLease): Promise<void>;
  /** Stops it: 'hand-back' writes what it holds (through the fence), 'lost' writes nothing. */
  stop(partition: number, how: 'hand-back' | 'lost'): Promise<void>;
}

export interface LeaseManagerOptions {
  nc: NatsConnection;
  stream: string;
  partitions: number;
  wants: Wants;
  ttlMs: number;
  replicas: number;
  log: Logger;
  metrics: RaterMetrics;
  hooks: LeaseHooks;
}

interface LeaseValue {
  owner: string;
  token: string;
  since: string;
}

interface MemberValue {
  id: string;
  wants: Wants;
  host: string;
  pid: number;
}

interface Seen {
  revision: number;
  deleted: boolean;
  value: Partial<LeaseValue & MemberValue> | undefined;
  /** performance.now() when this rater first saw this revision. */
  seenAtMs: number;
}

interface Held {
  partition: number;
  key: string;
  token: string;
  /** The revision this rater last wrote (or found its own write at). */
  revision: number;
  /** performance.now() when the last successful renewal (or the take) was sent. */
  renewedAtMs: number;
  /** When it was taken (wall clock, for people reading the bucket only). */
  since: string;
  state: 'starting' | 'running' | 'releasing' | 'lost';
  /** The partition's start and stop, in order. */
  task: Promise<void>;
  /** Its partition has stopped and this rater is deleting the lease: finding it gone is no loss. */
  deleting?: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

function parse(entry: KvEntry): Partial<LeaseValue & MemberValue> | undefined {
  try {
    const value: unknown = entry.json();
    return typeof value === 'object' && value !== null ? value : undefined;
  } catch {
    return undefined;
  }
}

/** A KV key token: what hostnames and ids may hold beyond [-\w] becomes '_'. */
function keyToken(text: string): string {
  return text.replace(/[^-\w]/g, '_').slice(0, 64) || '_';
}

export class LeaseManager {
  /** This process's member id: unique per start. */
  readonly id: string;
  readonly #kv: KV;
  readonly #options: LeaseManagerOptions;
  readonly #ttlMs: number;
  readonly #timings: ReturnType<typeof leaseTimings>;
  readonly #prefix: string;
  readonly #memberKey: string;
  readonly #view = new Map<string, Seen>();
  readonly #held = new Map<number, Held>();
  #memberRevision = 0;
  #memberWrittenAtMs = 0;
  #watchedMemberRevision = 0;
  #watcher: QueuedIterator<KvWatchEntry> | undefined;
  #watcherEnded = false;
  #planning = true;
  #renewing = true;
  #planLoop: Promise<void> | undefined;
  #renewLoop: Promise<void> | undefined;

  private constructor(kv: KV, options: LeaseManagerOptions) {
    this.#kv = kv;
    this.#options = options;
    this.#ttlMs = options.ttlMs;
    this.#timings = leaseTimings(options.ttlMs);
    this.#prefix = `${options.stream}.`;
    this.id = `${keyToken(hostname())}-${process.pid}-${randomBytes(4).toString('hex')}`;
    this.#memberKey = `${this.#prefix}rater.${this.id}`;
    options.metrics.leaseTakeovers.inc(0);
    options.metrics.leaseLost.inc(0);
    options.metrics.leaseHandbacks.inc(0);
    options.metrics.partitionsOwned.set(0);
  }

  static async open(options: LeaseManagerOptions): Promise<LeaseManager> {
    const js = jetstream(options.nc, { timeout: leaseTimings(options.ttlMs).requestTimeoutMs });
    const kv = await new Kvm(js).create(leaseBucket, {
      storage: StorageType.File,
      replicas: options.replicas,
      history: 1,
      ttl: bucketMaxAgeMs,
      // Reads go to the stream leader: a direct get may be answered by a replica that lags.
      allow_direct: false,
      description: 'drawdown rater partition leases and live raters',
    });
    return new LeaseManager(kv, options);
  }

  /** Partitions held now (starting or running), for tests and logs. */
  get owned(): number[] {
    return [...this.#held.values()]
      .filter((h) => h.state === 'starting' || h.state === 'running')
      .map((h) => h.partition)
      .sort((a, b) => a - b);
  }

  /**
   * Announces this rater, reads the bucket, takes what is free and starts
   * those partitions, then keeps renewing and balancing in the background.
   */
  async start(): Promise<void> {
    await this.#putMember();
    await this.#watch();
    await this.#plan();
    // Renewals run while the first partitions resume (a resume can take a while); start() returns once they run.
    const firstStarts = Promise.all([...this.#held.values()].map((h) => h.task));
    this.#renewLoop = this.#every(
      'renew',
      () => this.#renewAll(),
      () => this.#renewing,
    );
    await firstStarts;
    this.#planLoop = this.#every(
      'balance',
      () => this.#plan(),
      () => this.#planning,
    );
  }

  /**
   * Hands every partition back (each writes what it holds) and leaves. A
   * partition not stopped within `stopWaitMs` keeps its lease until it
   * expires: renewals stop, so its own deadline stops it from writing.
   */
  async stop(stopWaitMs: number): Promise<void> {
    this.#planning = false;
    await this.#planLoop;
    for (const held of this.#held.values()) this.#end(held, 'hand-back', 'the rater is stopping');
    const ended = Promise.all([...this.#held.values()].map((h) => h.task));
    const timedOut = await Promise.race([ended.then(() => false), sleep(stopWaitMs).then(() => true)]);
    if (timedOut)
      this.#options.log.warn(
        { stopWaitMs, partitions: [...this.#held.keys()] },
        'rater partitions did not stop in time; their leases expire by themselves and their batches stay in the stream',
      );
    this.#renewing = false;
    await this.#renewLoop;
    try {
      await this.#kv.delete(this.#memberKey);
    } catch (error) {
      // Only balancing is at stake: the others count this rater dead after a TTL.
      this.#options.log.debug({ err: error }, 'could not delete the rater member key');
    }
    this.#watcher?.stop();
  }

  async #every(label: string, step: () => Promise<void>, running: () => boolean): Promise<void> {
    while (running()) {
      const began = performance.now();
      try {
        await step();
      } catch (error) {
        this.#options.log.warn({ err: error }, `rater lease ${label} step failed; trying again`);
      }
      if (!running()) break;
      await sleep(Math.max(50, this.#timings.renewEveryMs - (performance.now() - began)));
    }
  }

  // --- renewing -----------------------------------------------------------

  async #putMember(): Promise<void> {
    const value: MemberValue = { id: this.id, wants: this.#options.wants, host: hostname(), pid: process.pid };
    const sentAt = performance.now();
    const revision = await this.#kv.put(this.#memberKey, JSON.stringify(value));
    if (revision > this.#memberRevision) {
      this.#memberRevision = revision;
      this.#memberWrittenAtMs = sentAt;
    }
  }

  async #renewAll(): Promise<void> {
    const member = this.#putMember().catch((error: unknown) =>
      this.#options.log.debug({ err: error }, 'could not renew the rater member key; trying again'),
    );
    const leases = [...this.#held.values()].filter((h) => h.state !== 'lost').map((h) => this.#renew(h));
    await Promise.all([member, ...leases]);
  }

  #alive(held: Held, nowMs = performance.now()): boolean {
    return held.state !== 'lost' && nowMs < held.renewedAtMs + this.#ttlMs - this.#timings.marginMs;
  }

  #leaseValue(held: Held): string {
    const value: LeaseValue = { owner: this.id, token: held.token, since: held.since };
    return JSON.stringify(value);
  }

  #isMine(entry: KvEntry | null, held: Held): boolean {
    return entry !== null && entry.operation === 'PUT' && parse(entry)?.token === held.token;
  }

  async #renew(held: Held): Promise<void> {
    const sentAt = performance.now();
    if (!this.#alive(held, sentAt)) {
      this.#lose(held, 'its deadline passed before a renewal succeeded');
      return;
    }
    try {
      const revision = await this.#kv.update(held.key, this.#leaseValue(held), held.revision);
      if (held.state === 'lost') return;
      held.revision = revision;
      held.renewedAtMs = sentAt;
    } catch (error) {
      // Refused (the bucket holds another revision) or unanswered (it may have landed): look.
      let entry: KvEntry | null;
      try {
        entry = await this.#kv.get(held.key);
      } catch {
        // NATS away: the deadline decides.
        this.#options.log.debug({ err: error, partition: held.partition }, 'rater lease renewal failed; retrying');
        return;
      }
      if (this.#isMine(entry, held)) {
        // A renewal of ours landed unanswered: its revision is adopted, not its time. The bucket's
        // revision, even below the one this rater last wrote (a write lost in a leader change), is
        // what the next compare-and-set must name.
        held.revision = entry!.revision;
        return;
      }
      this.#seeRead(held.key, entry);
      this.#lose(held, 'another rater holds its lease');
    }
  }

  #fence(held: Held): PartitionLease {
    const { partition } = held;
    return {
      partition,
      held: () => this.#alive(held),
      confirm: async () => {
        if (!this.#alive(held))
          throw new LeaseLostError(`the lease of partition ${partition} was not renewed in time (or was lost)`);
        let entry: KvEntry | null;
        try {
          entry = await this.#kv.get(held.key);
        } catch (error) {
          throw new LeaseUnconfirmedError(
            `cannot read the lease of partition ${partition}: ${(error as Error).message}`,
          );
        }
        if (!this.#isMine(entry, held)) {
          this.#seeRead(held.key, entry);
          this.#lose(held, 'another rater holds its lease');
          throw new LeaseLostError(`another rater holds the lease of partition ${partition}`);
        }
        // The read took time: the deadline again, last thing before the insert.
        if (!this.#alive(held)) throw new LeaseLostError(`the lease of partition ${partition} was not renewed in time`);
      },
    };
  }

  /** The lease is gone: the partition stops writing nothing, and the lease is deleted if it is still ours. */
  #lose(held: Held, reason: string): void {
    if (held.state === 'lost') return;
    if (held.deleting === true) {
      // A renewal sent before this rater's own delete, refused after it: nothing is lost, nothing can write.
      held.state = 'lost';
      return;
    }
    const wasEnding = held.state === 'releasing';
    held.state = 'lost';
    this.#options.metrics.leaseLost.inc();
    this.#updateOwned();
    this.#options.log.warn(
      { partition: held.partition, reason, raterId: this.id },
      'rater lease lost; the partition stops without writing',
    );
    // A hand-back in progress already stops the partition; its fence now refuses every write.
    if (!wasEnding) this.#finish(held, 'lost');
  }

  /** Stops a partition this rater holds: handing it back, or because its lease is lost. */
  #end(held: Held, how: 'hand-back' | 'lost', reason: string): void {
    if (how === 'lost') {
      this.#lose(held, reason);
      return;
    }
    if (held.state === 'releasing' || held.state === 'lost') return;
    held.state = 'releasing';
    this.#updateOwned();
    this.#options.log.info({ partition: held.partition, reason, raterId: this.id }, 'handing a rater lease back');
    this.#finish(held, 'hand-back');
  }

  #finish(held: Held, how: 'hand-back' | 'lost'): void {
    const { partition, key } = held;
    held.task = held.task
      .catch(() => {})
      .then(() => this.#options.hooks.stop(partition, how))
      .catch((error: unknown) => this.#options.log.warn({ err: error, partition }, 'error while stopping a partition'))
      .then(async () => {
        // Deleted only at the revision this rater wrote: if another took it, this is refused.
        held.deleting = true;
        try {
          await this.#kv.delete(key, { previousSeq: held.revision });
          if (how === 'hand-back' && held.state === 'releasing') {
            this.#options.metrics.leaseHandbacks.inc();
            this.#options.log.info({ partition, raterId: this.id }, 'rater lease handed back');
          }
        } catch (error) {
          this.#options.log.debug({ err: error, partition }, 'lease not deleted (taken, or NATS away): it expires');
        }
        this.#held.delete(partition);
        this.#updateOwned();
      });
  }

  #updateOwned(): void {
    this.#options.metrics.partitionsOwned.set(this.owned.length);
  }

  // --- watching -----------------------------------------------------------

  #see(key: string, entry: KvEntry | null): void {
    if (entry === null) return;
    const seen = this.#view.get(key);
    if (seen !== undefined && seen.revision >= entry.revision) return;
    this.#view.set(key, {
      revision: entry.revision,
      deleted: entry.operation !== 'PUT',
      value: entry.operation === 'PUT' ? parse(entry) : undefined,
      seenAtMs: performance.now(),
    });
  }

  /**
   * What a read of the bucket answered, over whatever the watch delivered:
   * the bucket can hold less than this rater saw. A write the watch
   * delivered can be lost in a JetStream leader change (nats-server before
   * 2.11), and a key left alone for the bucket's max age leaves no marker.
   * A view ahead of the bucket would name a revision in every take that no
   * compare-and-set can match, and the partition would never be taken again
   * (seen in the cluster node-loss test). So the read replaces the view, even
   * with a lower revision or none; a key the bucket lacks is free. Taking stays
   * a compare-and-set, so a wrong view only costs a refused take.
   */
  #seeRead(key: string, entry: KvEntry | null): void {
    if (entry === null) {
      this.#view.delete(key);
      return;
    }
    const seen = this.#view.get(key);
    if (seen !== undefined && seen.revision === entry.revision) return;
    this.#view.delete(key);
    this.#see(key, entry);
  }

  /** Follows the bucket; resolves once the keys present at the start were read (or after a TTL). */
  async #watch(): Promise<void> {
    const watcher = await this.#kv.watch({ key: `${this.#prefix}>` });
    this.#watcher = watcher;
    this.#watcherEnded = false;
    let initialRead!: () => void;
    const initial = new Promise<void>((resolve) => (initialRead = resolve));
    void (async () => {
      try {
        // This rater's member key is written first, so the first read has at least one key and ends with an update.
        for await (const entry of watcher) {
          this.#see(entry.key, entry);
          if (entry.key === this.#memberKey)
            this.#watchedMemberRevision = Math.max(this.#watchedMemberRevision, entry.revision);
          if (entry.isUpdate) initialRead();
        }
      } catch (error) {
        this.#options.log.warn({ err: error }, 'rater lease watch ended');
      } finally {
        initialRead();
        if (this.#watcher === watcher) this.#watcherEnded = true;
      }
    })();
    await Promise.race([initial, sleep(this.#ttlMs)]);
  }

  /**
   * A watch that stopped delivering would freeze this rater's view: others
   * would look dead and their leases expired (only failed takes follow, as
   * each take is a CAS, but nothing would balance). Its own member key's
   * renewals must come back through it; when they do not, it is restarted.
   */
  async #checkWatcher(): Promise<void> {
    const behind =
      this.#memberRevision > this.#watchedMemberRevision &&
      performance.now() - this.#memberWrittenAtMs > this.#ttlMs / 2;
    if (!this.#watcherEnded && !behind) return;
    this.#options.log.warn(
      { ended: this.#watcherEnded, memberRevision: this.#memberRevision, watched: this.#watchedMemberRevision },
      'rater lease watch stalled; restarting it',
    );
    const old = this.#watcher;
    this.#watcher = undefined;
    old?.stop();
    await this.#watch();
  }

  // --- balancing ----------------------------------------------------------

  async #plan(): Promise<void> {
    await this.#checkWatcher();
    const { partitions, wants } = this.#options;
    const now = performance.now();
    const members: LeaseMember[] = [{ id: this.id, wants }];
    const leases = new Map<number, SeenLease>();
    for (const [key, seen] of this.#view) {
      if (!key.startsWith(this.#prefix) || seen.deleted) continue;
      const [kind, name] = key.slice(this.#prefix.length).split('.', 2) as [string, string | undefined];
      const silentMs = now - seen.seenAtMs;
      if (kind === 'rater' && name !== undefined && name !== this.id) {
        if (silentMs < this.#ttlMs) members.push({ id: name, wants: wantsOf(seen.value?.wants) });
        else if (silentMs > deadMemberTtls * this.#ttlMs) void this.#forgetMember(key, seen.revision);
      } else if (kind === 'partition' && name !== undefined && /^\d+$/.test(name)) {
        leases.set(Number(name), { owner: String(seen.value?.owner ?? 'unknown'), expired: silentMs >= this.#ttlMs });
      }
    }
    const held = new Set<number>();
    const releasing = new Set<number>();
    for (const h of this.#held.values())
      (h.state === 'starting' || h.state === 'running' ? held : releasing).add(h.partition);
    const plan = planLeases({ self: { id: this.id, wants }, partitions, members, leases, held, releasing });
    for (const p of plan.release) this.#end(this.#held.get(p)!, 'hand-back', 'more than its share');
    await Promise.all(plan.acquire.map((p) => this.#acquire(p, leases.get(p)?.owner)));
  }

  async #forgetMember(key: string, revision: number): Promise<void> {
    try {
      await this.#kv.delete(key, { previousSeq: revision });
    } catch {
      // It renewed after all, or another rater deleted it first.
    }
  }

  async #acquire(partition: number, previousOwner: string | undefined): Promise<void> {
    const key = `${this.#prefix}partition.${partition}`;
    const seen = this.#view.get(key);
    const token = randomBytes(8).toString('hex');
    const held: Held = {
      partition,
      key,
      token,
      revision: 0,
      renewedAtMs: 0,
      since: new Date().toISOString(),
      state: 'starting',
      task: Promise.resolve(),
    };
    const sentAt = performance.now();
    try {
      held.revision =
        seen === undefined || seen.deleted
          ? await this.#kv.create(key, this.#leaseValue(held))
          : await this.#kv.update(key, this.#leaseValue(held), seen.revision);
    } catch (error) {
      // Another rater was first, or this view was behind (or the write landed unanswered): read what is there.
      let entry: KvEntry | null = null;
      try {
        entry = await this.#kv.get(key);
      } catch {
        // Looked at again next round.
      }
      if (entry === null || !this.#isMine(entry, held)) {
        this.#seeRead(key, entry);
        this.#options.log.debug({ err: error, partition }, 'rater lease not taken: another rater was first');
        return;
      }
      held.revision = entry.revision;
    }
    // Sent before the bucket stored it, so every other rater saw it after this instant.
    held.renewedAtMs = sentAt;
    this.#held.set(partition, held);
    this.#updateOwned();
    const takeover = seen !== undefined && !seen.deleted;
    if (takeover) {
      this.#options.metrics.leaseTakeovers.inc();
      this.#options.log.warn(
        { partition, raterId: this.id, from: previousOwner },
        'took over an expired rater lease (its holder stopped renewing)',
      );
    } else this.#options.log.info({ partition, raterId: this.id }, 'rater lease acquired');
    held.task = this.#options.hooks.start(partition, this.#fence(held)).then(
      () => {
        if (held.state === 'starting') held.state = 'running';
      },
      (error: unknown) => {
        this.#options.log.warn({ err: error, partition }, 'partition did not start; handing its lease back');
        this.#end(held, 'hand-back', 'it did not start');
      },
    );
  }
}

function wantsOf(value: unknown): Wants {
  if (Array.isArray(value) && value.every((p) => Number.isInteger(p))) return value as number[];
  return 'auto';
}
