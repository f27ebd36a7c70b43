/**
 * One partition's loop: pull batches, aggregate them in the worker pool,
 * write a flush to ClickHouse, then ack. Each flush records the stream
 * sequences it counted in the same INSERT as its rows, and a message is
 * acked, or skipped when delivered again, only if such a record names it:
 *
 *   fetch ─▶ decode+dedupe+aggregate (worker) ─▶ merge ─▶ INSERT ids ─▶ INSERT rows+record ─▶ ack
 *   crash before INSERT: nothing written; messages redelivered and counted once.
 *   crash after INSERT, before ack: the record names them; acked when redelivered.
 *   a delivery lost (NATS restart, a fetch cut short): the message is not in
 *     any record, so whenever it comes again, however late and whatever was
 *     counted above it meanwhile, it is counted (docs/exactly-once.md §2).
 *
 * Repeated event ids are dropped against the partition's id set, which is
 * rebuilt from ClickHouse (ids committed up to the watermark) whenever the
 * loop resumes, so it never remembers an id whose event was not committed.
 *
 * The loop runs only while this rater holds the partition's lease
 * (rater/leases.ts): it checks the lease's local deadline before each fetch
 * and consumer recreation, and has the lease confirmed right before each
 * ClickHouse insert (rater/lease-fence.ts). Lost, it stops writing nothing:
 * what it held stays unacked in the stream for the next owner, which resumes
 * from the watermark like any restart.
 */
import type { Consumer, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import type { Piscina } from 'piscina';
import type { Logger } from '../shared/log.js';
import type { Store } from '../shared/clickhouse/store.js';
import { crashPoint, pausePoint } from '../shared/fault.js';
import {
  batchHeaders,
  lowestPartitionSequence,
  partitionSubject,
  recreatePartitionConsumer,
  type ConsumerSettings,
  type StreamSettings,
} from '../shared/nats/stream.js';
import { Aggregator } from './aggregate.js';
import { flushPayload, flushStampSec, raterTables, writeFlush } from './flush.js';
import { flushBoundsPayload } from '../shared/clickhouse/flush-bounds.js';
import { publishDeadLetter, type DeadLetterCause } from './dead-letter.js';
import type { RaterMetrics } from './metrics.js';
import { packMessages, type AggregateResult, type AggregateTask } from './task.js';
import { readPartitionMarks } from '../shared/clickhouse/usage-minute.js';
import { assertCaughtUp } from '../shared/clickhouse/replication.js';
import { IdSet } from './dedupe/id-set.js';
import type { MeterCatalog } from './meter-catalog.js';
import { highestIdsLabel, idsPayload, readRecentIds } from './dedupe/id-log.js';
import { encodeCounted, encodeSeqs, messageFingerprint, readCountedRecord } from './counted-log.js';
import { debugAck, debugAcksOn } from './debug-acks.js';
import { messageTraceFields, messagesTraceFields } from './trace-fields.js';
import { BatchSpans } from './batch-spans.js';
import type { RoleTracer } from '../shared/tracing.js';
import { LeaseLostError, LeaseUnconfirmedError, isFenceError, type PartitionLease } from './lease-fence.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** How often sequences that left the stream are forgotten from the counted set. */
const countedPruneEveryMs = 2_000;
/** How often an idle partition checks that its consumer has not passed over a message the stream still holds. */
const strandedCheckEveryMs = 2_000;

export interface PartitionLimits extends ConsumerSettings {
  flushIntervalMs: number;
  flushRowsMax: number;
  fetchMessagesMax: number;
  retryDelayMaxMs: number;
  /** Failed ClickHouse attempts in a row after which the partition reports itself unready (and keeps retrying). */
  storeAttemptsBeforeUnready: number;
  /** Wait for JetStream to acknowledge a dead letter, in ms. */
  publishTimeoutMs: number;
  /** The time window events must fall in around their message's arrival (rater/window.ts). */
  window: { lateMs: number; skewMs: number };
}

/**
 * Thrown inside the loop to start again from the committed watermark on
 * purpose (not a failure): the loop logs it at warn with its reason.
 */
class ResumeFromWatermark extends Error {}

export interface PartitionDeps {
  /** Event ids remembered for duplicate dropping (at least this many most recent); 0 = off. */
  dedupeIdsMax: number;
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: Store;
  pool: Piscina<AggregateTask, AggregateResult>;
  stream: StreamSettings;
  partition: number;
  limits: PartitionLimits;
  catalog: MeterCatalog;
  /** The definitions in force, serialised once per revision (shared by the rater's partitions). */
  metersJson: () => { revision: number; json: string };
  log: Logger;
  metrics: RaterMetrics;
  /** Spans per batch and flush (DRAWDOWN_OTLP_TRACES_ENDPOINT); trace ids are logged either way. */
  tracer?: RoleTracer | undefined;
  /** The partition's lease: the loop acts only while it holds it. */
  lease: PartitionLease;
}

/** A pull request being read: its iterator, and the delivery awaited when #fetch last handed back. */
interface OpenFetch {
  iterator: AsyncIterator<JsMsg>;
  next: Promise<IteratorResult<JsMsg>> | undefined;
}

/**
 * A pause in deliveries this long, with something taken or pending, counts
 * as a quiet partition (#fetch). Parts of one request reach a partition
 * within a millisecond or two; a busy partition never pauses this long.
 */
const quietFlushMs = 20;

export class PartitionRater {
  readonly #deps: PartitionDeps;
  readonly #aggregator: Aggregator;
  readonly #label: { partition: string };
  #consumer: Consumer | undefined;
  #stopping = false;
  /** The lease is lost (or the stop says so): nothing more is written, not even a last flush. */
  #fenced = false;
  #loop: Promise<void> | undefined;
  /** The label of the last committed flush: max(flush_seq) of the partition's rows, the watermark. */
  #committedSeq = 0;
  /**
   * The highest flush label used or attempted. Labels only grow, one per
   * flush, so settlement's watermark snapshots stay exact, and an attempt
   * that crashed after writing its ids never shares its label with a flush
   * that committed other messages (rater/dedupe/id-log.ts).
   */
  #labelFloor = 0;
  /** The latest flushed_at stamped: stamps only grow with labels (rater/flush.ts flushStampSec). */
  #stampFloor = 0;
  /** The pending messages, as "seq:fingerprint": a redelivery of one is ignored, its flush acks it. */
  readonly #held = new Set<string>();
  /**
   * Sequences committed flushes counted that may still be in the stream (an
   * ack lost or not yet sent), with the fingerprints of the messages counted
   * under them (undefined: recorded without, any message): such a message is
   * acked again, never counted again, when redelivered. A different message
   * under a counted sequence (JetStream replicas that disagree, issue 16) is
   * counted. Pruned to the partition's lowest sequence in the stream, so it
   * is bounded by the stream's own message limit.
   */
  readonly #counted = new Map<number, Set<string> | undefined>();
  /** Each taken message's fingerprint, computed once on delivery. */
  readonly #fingerprints = new WeakMap<JsMsg, string>();
  /** Messages at or below this were covered by flushes written before records existed (rater/counted-log.ts). */
  #legacyFloor = 0;
  #lastPruneMs = 0;
  #lastStrandedCheckMs = 0;
  /** The partition's lowest message in the stream at the last check that found its consumer with nothing to deliver. */
  #strandedCandidate: number | undefined;
  /** A fetch failed: after flushing what is held, the consumer is recreated so lost deliveries come again now. */
  #reconsume = false;
  /** Messages merged into the aggregator but not yet in ClickHouse. */
  #pending: JsMsg[] = [];
  /** Fingerprints of the pending messages' counted event ids, written with their flush. */
  #pendingIds: Uint32Array[] = [];
  #pendingSinceMs = 0;
  /** Messages the current (or last) fetch delivered, taken or not. */
  #delivered = 0;
  /**
   * A fetch handed back early, at a pause in deliveries (#fetch), still open:
   * the next #fetch reads on from it. Dropped before the consumer is recreated
   * (its deliveries come again from the new consumer) and when the loop ends.
   */
  #openFetch: OpenFetch | undefined;
  /** How the last #fetch returned: filled, ended (expired before it filled) or paused (no delivery for a while). */
  #fetchEnd: 'filled' | 'ended' | 'paused' = 'filled';
  #lastFlushMs = 0;
  readonly #ids: IdSet | undefined;
  /** The id set's hand-over epoch the next task must find. */
  #idsEpoch = 0;
  readonly #spans: BatchSpans | undefined;
  /**
   * Messages of a flush ClickHouse refused (not retryably), as "seq:fingerprint":
   * each is written in a flush of its own when it comes again, so the one(s)
   * whose rows are refused are found and dead-lettered, and the others are
   * counted. At most one flush's messages; pruned like the counted set.
   */
  readonly #suspects = new Set<string>();
  /** Failed ClickHouse attempts (flushes or resumes) since the last success; past a bound the partition is unready. */
  #storeUnready = false;

  constructor(deps: PartitionDeps) {
    this.#deps = deps;
    this.#aggregator = new Aggregator(deps.catalog.meters);
    this.#label = { partition: String(deps.partition) };
    this.#ids = deps.dedupeIdsMax > 0 ? IdSet.create(deps.dedupeIdsMax) : undefined;
    // Present from the start at 0, so increase() sees the first dead letter (a series born at 1 shows no increase).
    for (const cause of ['refused', 'insert_refused'] as const)
      deps.metrics.deadLetters.inc({ partition: String(deps.partition), cause }, 0);
    this.#spans =
      deps.tracer === undefined
        ? undefined
        : new BatchSpans(deps.tracer, deps.partition, partitionSubject(deps.stream, deps.partition));
  }

  get committedSequence(): number {
    return this.#committedSeq;
  }

  /** False while ClickHouse has failed this partition's writes (or resumes) more than the bound in a row. */
  get ready(): boolean {
    return !this.#storeUnready;
  }

  /** Resumes from the watermark and starts the loop; a resume that fails is retried by the loop. */
  async start(): Promise<void> {
    let resumed = true;
    try {
      await this.#resumeFromWatermark();
    } catch (error) {
      if (error instanceof LeaseLostError) {
        this.#fenceOff(error);
        return;
      }
      resumed = false;
      this.#deps.log.warn({ err: error, partition: this.#deps.partition }, 'cannot resume partition yet; retrying');
    }
    this.#loop = this.#run(!resumed);
  }

  /** The lease is gone: stop at once, writing and acking nothing more. */
  #fenceOff(error: Error): void {
    if (this.#fenced && this.#stopping) return;
    this.#fenced = true;
    this.#stopping = true;
    this.#spans?.abandonAll('not committed: the partition lease was lost; the stream keeps the batch');
    this.#deps.log.warn(
      { partition: this.#deps.partition, reason: error.message, pending: this.#pending.length },
      'partition lease lost; stopping without writing (the stream keeps what was not committed)',
    );
  }

  /**
   * (Re)starts consumption from what ClickHouse holds, forgetting anything
   * held in memory: it was not committed, and the new consumer delivers it
   * again. Used at start and after any unexpected error, so the in-memory
   * state can never drift from the stream's.
   */
  async #resumeFromWatermark(): Promise<void> {
    const { store, partition } = this.#deps;
    this.#aggregator.drain();
    this.#spans?.abandonAll('not committed: the loop resumed from the watermark; delivered again');
    this.#pending = [];
    this.#pendingIds = [];
    this.#held.clear();
    this.#reconsume = false;
    this.#strandedCandidate = undefined;
    // On a cluster, everything resumed from must be on the replica read (shared/clickhouse/replication.ts).
    await assertCaughtUp(store, raterTables);
    const marks = await readPartitionMarks(store, partition);
    this.#committedSeq = marks.watermark;
    this.#stampFloor = marks.stampSec;
    this.#labelFloor = Math.max(this.#committedSeq, await highestIdsLabel(store, partition));
    await this.#rebuildIds();
    await this.#recreateConsumer();
    // Read after the old consumer is gone: from here on only this loop acks,
    // so every message delivered from now on is at or above the bound.
    const lowest = await lowestPartitionSequence(this.#deps.jsm, this.#deps.stream, partition);
    const fingerprints = new Map<number, Set<string>>();
    const record =
      lowest === undefined
        ? { counted: new Set<number>(), legacyFloor: 0 }
        : await readCountedRecord(store, partition, lowest, fingerprints);
    this.#counted.clear();
    for (const seq of record.counted) this.#counted.set(seq, fingerprints.get(seq));
    this.#legacyFloor = record.legacyFloor;
    this.#lastPruneMs = Date.now();
    this.#deps.metrics.committedSequence.set(this.#label, this.#committedSeq);
    debugAck(partition, 'resume', {
      committedSeq: this.#committedSeq,
      lowest,
      counted: debugAcksOn ? encodeSeqs([...this.#counted.keys()]) : '',
      legacyFloor: this.#legacyFloor,
    });
    this.#deps.log.info(
      { partition, committedSeq: this.#committedSeq, lowestInStream: lowest, countedInStream: this.#counted.size },
      'partition consumer ready',
    );
  }

  async #recreateConsumer(): Promise<void> {
    const { jsm, js, stream, partition, limits } = this.#deps;
    this.#dropOpenFetch();
    // Recreating deletes the consumer the partition's owner reads from: never without the lease.
    if (!this.#deps.lease.held()) throw new LeaseLostError(`the lease of partition ${partition} is no longer held`);
    const name = await recreatePartitionConsumer(jsm, stream, partition, limits);
    this.#consumer = await js.consumers.get(stream.name, name);
    debugAck(partition, 'consumer-recreated', { held: [...this.#held], pending: this.#pending.length });
  }

  /**
   * After a failed fetch some deliveries may be lost in transit; they would
   * come again only after the ack wait. Committing what is held and then
   * recreating the consumer has every unacked message delivered again now:
   * the counted set tells the committed ones from the lost ones.
   */
  async #reconsumeAfterFetchError(): Promise<void> {
    debugAck(this.#deps.partition, 'reconsume', { pending: this.#pending.length });
    if (this.#pending.length > 0) await this.#flush();
    if (this.#pending.length > 0) return; // stopping with an unwritten flush
    await this.#recreateConsumer();
    this.#reconsume = false;
    this.#deps.log.info({ partition: this.#deps.partition }, 'partition consumer recreated after a failed fetch');
  }

  /**
   * Forgets counted sequences below the partition's lowest message in the stream: they were acked and can never come
   * again.
   */
  async #pruneCounted(): Promise<void> {
    if ((this.#counted.size === 0 && this.#suspects.size === 0) || Date.now() - this.#lastPruneMs < countedPruneEveryMs)
      return;
    this.#lastPruneMs = Date.now();
    let lowest: number | undefined;
    try {
      lowest = await lowestPartitionSequence(this.#deps.jsm, this.#deps.stream, this.#deps.partition);
    } catch (error) {
      // Only memory is at stake: try again at the next prune.
      this.#deps.log.debug(
        { err: error, partition: this.#deps.partition },
        'cannot read the lowest stream sequence; pruning later',
      );
      return;
    }
    for (const key of this.#suspects)
      if (lowest === undefined || Number(key.slice(0, key.indexOf(':'))) < lowest) this.#suspects.delete(key);
    const pruned: number[] = [];
    for (const seq of this.#counted.keys())
      if (lowest === undefined || seq < lowest) {
        this.#counted.delete(seq);
        pruned.push(seq);
      }
    if (debugAcksOn && pruned.length > 0)
      debugAck(this.#deps.partition, 'prune', { lowest, pruned: encodeSeqs(pruned) });
  }

  /**
   * On a JetStream cluster losing nodes (nats-server 2.9.10, issue 16) a
   * consumer can pass over messages its replica of the stream lacked: they
   * stay in the stream, unacked, and it never delivers them. An idle
   * partition whose consumer has nothing pending or unacked, while the
   * stream holds a message of the partition (the same lowest one at two
   * checks in a row), recreates its consumer, which delivers from the start.
   */
  async #checkStranded(): Promise<void> {
    if (this.#pending.length > 0 || Date.now() - this.#lastStrandedCheckMs < strandedCheckEveryMs) return;
    this.#lastStrandedCheckMs = Date.now();
    const { jsm, stream, partition, log } = this.#deps;
    let lowest: number | undefined;
    try {
      const info = await this.#consumer!.info();
      lowest =
        info.num_pending > 0 || info.num_ack_pending > 0
          ? undefined
          : await lowestPartitionSequence(jsm, stream, partition);
    } catch (error) {
      // Only delay is at stake: look again at the next check.
      log.debug({ err: error, partition }, 'cannot check for stranded messages; checking later');
      return;
    }
    const seen = this.#strandedCandidate;
    this.#strandedCandidate = lowest;
    if (lowest === undefined || lowest !== seen) return;
    this.#strandedCandidate = undefined;
    this.#reconsume = true;
    debugAck(partition, 'stranded', { lowest });
    log.warn(
      { partition, lowest },
      'the stream holds a message of this partition its consumer will not deliver; recreating the consumer',
    );
  }

  /**
   * Remembers exactly the ids ClickHouse holds up to the watermark (at least
   * the last dedupeIdsMax of them). No task runs meanwhile: this thread owns
   * the set until it hands it on with a new epoch.
   */
  async #rebuildIds(): Promise<void> {
    const ids = this.#ids;
    if (ids === undefined) return;
    const chunks = await readRecentIds(
      this.#deps.store,
      this.#deps.partition,
      this.#committedSeq,
      ids.idsPerGeneration,
    );
    ids.clear();
    let loaded = 0;
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length; at += 3) ids.add(chunk[at]!, chunk[at + 1]!, chunk[at + 2]!);
      loaded += chunk.length / 3;
    }
    this.#idsEpoch = ids.release();
    this.#deps.metrics.dedupeIds.set(this.#label, ids.size);
    this.#deps.log.info(
      { partition: this.#deps.partition, loaded, remembered: ids.size },
      'event-id dedupe set rebuilt',
    );
  }

  /**
   * Stops pulling and returns once the loop ended. With `write` (handing the
   * partition back, or shutting down) it first writes what is pending, through
   * the lease fence, unless ClickHouse is down; without (the lease is lost) it
   * writes nothing.
   */
  async stop(options: { write: boolean } = { write: true }): Promise<void> {
    if (!options.write) this.#fenced = true;
    this.#stopping = true;
    await this.#loop;
  }

  async #run(resumeFirst: boolean): Promise<void> {
    const { log, partition, limits, lease } = this.#deps;
    let resumeNeeded = resumeFirst;
    let resumeFailures = 0;
    while (!this.#stopping) {
      if (!lease.held()) {
        this.#fenceOff(new LeaseLostError(`the lease of partition ${partition} is no longer held`));
        break;
      }
      try {
        if (resumeNeeded) {
          await this.#resumeFromWatermark();
          resumeNeeded = false;
          if (resumeFailures > 0) {
            // ClickHouse answered the whole resume: ready again (a flush failing past the bound says otherwise).
            resumeFailures = 0;
            this.#setUnready(false);
          }
        } else if (this.#reconsume) {
          await this.#reconsumeAfterFetchError();
        }
      } catch (error) {
        if (error instanceof LeaseLostError) {
          this.#fenceOff(error);
          break;
        }
        if (error instanceof ResumeFromWatermark || error instanceof LeaseUnconfirmedError) {
          log.warn({ partition, reason: error.message }, 'resuming from the committed watermark');
          resumeNeeded = true;
          if (error instanceof LeaseUnconfirmedError) await sleep(500);
          continue;
        }
        resumeFailures++;
        if (resumeFailures >= limits.storeAttemptsBeforeUnready) this.#setUnready(true);
        log.warn({ err: error, partition, attempt: resumeFailures }, 'cannot resume partition yet; retrying');
        resumeNeeded = true;
        await sleep(1_000);
        continue;
      }
      let messages: JsMsg[];
      try {
        messages = await this.#fetch();
      } catch (error) {
        // Nothing was taken from this fetch; deliveries may have been lost on the way.
        if (this.#stopping) break;
        log.warn({ err: error, partition }, 'fetch failed; retrying');
        debugAck(partition, 'fetch-failed', { err: String(error) });
        this.#reconsume = true;
        await sleep(500);
        continue;
      }
      try {
        if (messages.length > 0) await this.#aggregate(messages);
        if (this.#flushDue()) await this.#flush();
        await this.#pruneCounted();
        if (messages.length === 0) await this.#checkStranded();
      } catch (error) {
        if (error instanceof LeaseLostError) {
          debugAck(partition, 'lease-lost', { reason: error.message });
          this.#fenceOff(error);
          break;
        }
        if (error instanceof ResumeFromWatermark || error instanceof LeaseUnconfirmedError) {
          // On purpose: what is held is delivered again and counted (or dead-lettered) then.
          log.warn({ partition, reason: error.message }, 'resuming from the committed watermark');
          debugAck(partition, 'resume-wanted', { reason: error.message });
          resumeNeeded = true;
          if (error instanceof LeaseUnconfirmedError) await sleep(500);
          continue;
        }
        // Messages taken but not committed: start over from the watermark.
        log.error(
          { err: error, partition, ...messagesTraceFields([...this.#pending, ...messages]) },
          'partition loop error; resuming from the committed watermark',
        );
        debugAck(partition, 'loop-error', { err: String(error) });
        resumeNeeded = true;
        await sleep(500);
      }
    }
    this.#dropOpenFetch();
    if (this.#pending.length > 0 && !resumeNeeded && !this.#fenced)
      try {
        await this.#flush();
      } catch (error) {
        // Unwritten: the stream keeps those batches for the next rater.
        log.warn({ err: error, partition }, 'stopping with an unwritten flush; the stream keeps those batches');
      }
  }

  #setUnready(unready: boolean): void {
    if (this.#storeUnready === unready) return;
    this.#storeUnready = unready;
    if (unready)
      this.#deps.log.error(
        { partition: this.#deps.partition, attempts: this.#deps.limits.storeAttemptsBeforeUnready },
        'ClickHouse keeps failing this partition; reporting unready (retrying; the stream buffers, nothing is dropped)',
      );
    else this.#deps.log.info({ partition: this.#deps.partition }, 'ClickHouse writes succeed again; ready');
  }

  #keyOf(message: JsMsg): string {
    return `${message.seq}:${this.#fingerprints.get(message)}`;
  }

  /**
   * Publishes `message` to the dead-letter stream (rater/dead-letter.ts):
   * before its ack, under an id a redelivery makes again. Throws when
   * JetStream did not store it; the loop then resumes and tries again.
   */
  async #deadLetter(message: JsMsg, cause: DeadLetterCause, reason: string): Promise<void> {
    const { js, stream, partition, limits, log, metrics } = this.#deps;
    const fingerprint = this.#fingerprints.get(message)!;
    const { duplicate } = await publishDeadLetter(
      js,
      stream,
      message,
      { partition, fingerprint, cause, reason },
      limits.publishTimeoutMs,
    );
    debugAck(partition, 'dead-letter', { seq: message.seq, fingerprint, cause, reason, duplicate });
    // Dead-lettered again (after a resume or a restart): JetStream kept the first copy; counted and logged once.
    if (duplicate) return;
    metrics.deadLetters.inc({ partition: String(partition), cause });
    log.error(
      { partition, seq: message.seq, fingerprint, cause, reason, ...messageTraceFields(message) },
      'stream message dead-lettered: it is not counted, and its partition goes on',
    );
  }

  /**
   * Takes what the partition's consumer delivers. A pull request lasts until
   * it fills or expires (at least 1 s: nats.js's floor), so a lone event on a
   * quiet partition used to wait out the expiry before its flush. Now, once
   * something is taken or pending, a pause in deliveries (quietFlushMs, but
   * not before a flush interval since the last flush) hands back what was
   * taken with the request still open, and the loop may flush it; the next
   * call reads on from the same request.
   */
  async #fetch(): Promise<JsMsg[]> {
    const { limits } = this.#deps;
    if (this.#openFetch === undefined) {
      const batch = await this.#consumer!.fetch({
        max_messages: limits.fetchMessagesMax,
        // Short enough that an idle partition still flushes on time.
        expires: Math.max(1_000, Math.min(limits.flushIntervalMs, 5_000)),
      });
      this.#openFetch = { iterator: batch[Symbol.asyncIterator](), next: undefined };
      this.#delivered = 0;
    }
    const open = this.#openFetch;
    const out: JsMsg[] = [];
    try {
      this.#fetchEnd = await this.#take(open, out);
    } catch (error) {
      // A fetch can fail half-way (NATS restart, stream leader change): what
      // was taken is processed, and what was lost is delivered again once
      // the consumer is recreated.
      this.#dropOpenFetch();
      this.#fetchEnd = 'ended';
      this.#reconsume = true;
      debugAck(this.#deps.partition, 'fetch-ended-early', { err: String(error), taken: out.length });
      if (out.length === 0) throw error;
      this.#deps.log.warn(
        { err: error, partition: this.#deps.partition, taken: out.length },
        'fetch ended early; processing what arrived',
      );
    }
    return out;
  }

  /** Closes a fetch handed back early; what it would still deliver is delivered again (ack wait, or a new consumer). */
  #dropOpenFetch(): void {
    const open = this.#openFetch;
    if (open === undefined) return;
    this.#openFetch = undefined;
    open.next?.catch(() => undefined);
    void open.iterator.return?.()?.catch(() => undefined);
  }

  /** How long a pause in deliveries hands back what was taken (#fetch); 0 while nothing is taken or pending. */
  #pauseMs(taken: number): number {
    if (taken === 0 && this.#pending.length === 0) return 0;
    return Math.max(quietFlushMs, this.#lastFlushMs + this.#deps.limits.flushIntervalMs - Date.now());
  }

  async #take(open: OpenFetch, out: JsMsg[]): Promise<'filled' | 'ended' | 'paused'> {
    for (;;) {
      const next = open.next ?? open.iterator.next();
      open.next = next;
      const pauseMs = this.#pauseMs(out.length);
      let result: IteratorResult<JsMsg> | 'paused';
      if (pauseMs <= 0) result = await next;
      else {
        let timer: NodeJS.Timeout | undefined;
        result = await Promise.race([
          next,
          new Promise<'paused'>((resolve) => (timer = setTimeout(() => resolve('paused'), pauseMs))),
        ]);
        clearTimeout(timer);
      }
      if (result === 'paused') return 'paused';
      open.next = undefined;
      if (result.done === true) {
        this.#openFetch = undefined;
        return this.#delivered < this.#deps.limits.fetchMessagesMax ? 'ended' : 'filled';
      }
      const message = result.value;
      this.#delivered++;
      const seq = message.seq;
      const fingerprint = messageFingerprint(message.data);
      const key = `${seq}:${fingerprint}`;
      const countedUnder = this.#counted.get(seq);
      const counted =
        seq <= this.#legacyFloor ||
        (this.#counted.has(seq) && (countedUnder === undefined || countedUnder.has(fingerprint)));
      if (debugAcksOn)
        debugAck(this.#deps.partition, 'deliver', {
          seq,
          id: message.headers?.get('Nats-Msg-Id'),
          fingerprint,
          dc: message.info.deliveryCount,
          dseq: message.info.deliverySequence,
          ...messageTraceFields(message),
          decision: this.#held.has(key) ? 'held' : counted ? 'counted-ack' : 'take',
        });
      if (this.#held.has(key)) {
        // The ack wait passed while a flush still holds it: that flush acks it.
        this.#deps.metrics.redeliveries.inc(this.#label);
        continue;
      }
      if (counted) {
        // Committed, but the ack was lost (NATS restarted) or never sent (a
        // crash after the insert): ack again so it leaves the stream.
        this.#deps.metrics.redeliveries.inc(this.#label);
        message.ack();
        continue;
      }
      // Anything else is counted, whatever its sequence: a delivery lost
      // earlier arrives below sequences already counted, and is not one of them.
      if (this.#counted.has(seq))
        this.#deps.log.warn(
          { partition: this.#deps.partition, seq, fingerprint, ...messageTraceFields(message) },
          'a different message under a stream sequence already counted (JetStream replicas disagree); counting it',
        );
      this.#held.add(key);
      this.#fingerprints.set(message, fingerprint);
      this.#spans?.taken(message);
      out.push(message);
      if (this.#stopping || !this.#deps.lease.held()) {
        this.#dropOpenFetch();
        return 'ended';
      }
    }
  }

  async #aggregate(messages: JsMsg[]): Promise<void> {
    const { limits } = this.#deps;
    // A task's rows are bounded by its events; keep each task within one flush.
    // A suspect (a message of a flush ClickHouse refused) is a task and a flush of its own.
    const isSuspect = (m: JsMsg): boolean => this.#suspects.size > 0 && this.#suspects.has(this.#keyOf(m));
    let start = 0;
    while (start < messages.length) {
      const isolated = isSuspect(messages[start]!);
      let end = start;
      let events = 0;
      while (end < messages.length) {
        const count = Number(messages[end]!.headers?.get(batchHeaders.events) ?? '0');
        if (end > start && (isolated || isSuspect(messages[end]!) || events + count > limits.flushRowsMax)) break;
        events += count;
        end++;
      }
      const group = messages.slice(start, end);
      start = end;
      await this.#catchUpCatalog(group);
      if (this.#pending.length > 0 && (isolated || this.#aggregator.size + events > limits.flushRowsMax))
        await this.#flush();
      if (this.#pending.length > 0 && isolated) return; // stopping with an unwritten flush
      const task = packMessages(
        group.map((m) => m.data),
        group.map((m) => (m.headers?.get(batchHeaders.format) === 'json' ? 'json' : 'msgpack')),
        this.#deps.metersJson(),
        // When JetStream stored each message: set by the server, whoever published it (rater/window.ts).
        group.map((m) => Math.floor(m.info.timestampNanos / 1_000_000)),
        limits.window,
      );
      if (this.#ids !== undefined) task.dedupe = { buffer: this.#ids.buffer, epoch: this.#idsEpoch };
      const result = await this.#deps.pool.run(task, { transferList: [task.data.buffer as ArrayBuffer] });
      if (this.#ids !== undefined) {
        this.#idsEpoch = (this.#idsEpoch + 1) | 0;
        if (result.ids.length > 0) this.#pendingIds.push(result.ids);
        if (result.duplicates > 0) this.#deps.metrics.duplicates.inc(this.#label, result.duplicates);
        this.#deps.metrics.dedupeIds.set(this.#label, this.#ids.size);
      }
      for (const rejected of result.rejected) {
        // Only a publisher bypassing the gateway (or a gateway with a wrong
        // clock) can put these here: nothing of the message was counted or
        // remembered. Dead-lettered before its flush acks it, so the
        // partition keeps moving and the message is kept.
        const message = group[rejected.message]!;
        this.#spans?.undecodable(message, rejected.reason);
        await this.#deadLetter(message, 'refused', rejected.reason);
      }
      for (const row of result.rows) this.#aggregator.addRow(row);
      this.#deps.metrics.events.inc(this.#label, result.events);
      if (this.#pending.length === 0) this.#pendingSinceMs = Date.now();
      this.#pending.push(...group);
      if (isolated) await this.#flush();
    }
  }

  /**
   * Makes sure the meters in force are at least as new as the catalog each
   * batch was validated against. Still behind after a refresh (a store that
   * lags the gateway's): an error, so the loop resumes and tries again later —
   * never a skipped batch.
   */
  async #catchUpCatalog(group: readonly JsMsg[]): Promise<void> {
    let needed = 0;
    for (const m of group) needed = Math.max(needed, Number(m.headers?.get(batchHeaders.catalogRevision) || '0'));
    const { catalog } = this.#deps;
    if (needed <= catalog.revision()) return;
    await catalog.refresh();
    if (needed > catalog.revision())
      throw new Error(
        `batch validated against catalog revision ${needed}, but the newest this rater can read is ${catalog.revision()}`,
      );
    this.#deps.log.info(
      { partition: this.#deps.partition, revision: catalog.revision(), ...messagesTraceFields(group) },
      'caught up with the catalog revision a batch was validated against',
    );
  }

  #flushDue(): boolean {
    if (this.#pending.length === 0) return false;
    // A fetch that expired before it filled, or a pause in deliveries (#fetch): the partition is quiet, and what
    // it holds need not wait longer (usage reaches live balances and holds that much sooner: issue 12) — but a
    // partition flushes at most once per interval (#pauseMs waits out the rest; 1 ms spares timer rounding).
    if (this.#fetchEnd !== 'filled' && Date.now() >= this.#lastFlushMs + this.#deps.limits.flushIntervalMs - 1)
      return true;
    return (
      this.#aggregator.size >= this.#deps.limits.flushRowsMax ||
      Date.now() - this.#pendingSinceMs >= this.#deps.limits.flushIntervalMs
    );
  }

  async #flush(): Promise<void> {
    const { store, partition, metrics, log, limits } = this.#deps;
    // Paces flushes of a partition that pauses often (#pauseMs): at most one per flush interval.
    this.#lastFlushMs = Date.now();
    const messages = this.#pending;
    let highestSeq = 0;
    for (const m of messages) highestSeq = Math.max(highestSeq, m.seq);
    // At least the highest sequence, so legacy readers of the watermark stay
    // right; above every label before, so each flush has its own.
    const flushSeq = Math.max(highestSeq, this.#labelFloor + 1);
    this.#labelFloor = flushSeq;
    const rows = this.#aggregator.drain();
    const nowSec = Math.floor(Date.now() / 1000);
    // The rows and their flush record carry one stamp: settlement's floor on flushed_at comes from the record.
    const stampSec = flushStampSec(nowSec, rows, this.#stampFloor);
    this.#stampFloor = stampSec;
    const counted = messages.map((m) => ({ seq: m.seq, fingerprint: this.#fingerprints.get(m)! }));
    const payload = flushPayload(rows, partition, flushSeq, stampSec, encodeCounted(counted));
    const ids = idsPayload(this.#pendingIds, partition, flushSeq, nowSec);
    let firstMinuteSec: number | undefined;
    for (const row of rows) if (firstMinuteSec === undefined || row[3] < firstMinuteSec) firstMinuteSec = row[3];
    const bounds = flushBoundsPayload(partition, flushSeq, firstMinuteSec, stampSec);
    const flushSpan = this.#spans?.startFlush(messages, flushSeq, rows.length);
    let failedAttempts = 0;
    pausePoint('before-flush');
    const stopTimer = metrics.insertDuration.startTimer();
    const outcome = await writeFlush(
      store,
      partition,
      flushSeq,
      payload,
      {
        delayMaxMs: limits.retryDelayMaxMs,
        attemptsBeforeUnready: limits.storeAttemptsBeforeUnready,
        // While stopping, one attempt is made; unwritten messages stay in the stream.
        shouldContinue: () => !this.#stopping,
        onError: (error, attempt, failure) => {
          metrics.insertErrors.inc();
          failedAttempts++;
          log.warn(
            { err: error, partition, flushSeq, attempt, messages: messages.length, ...messagesTraceFields(messages) },
            failure === 'retry'
              ? 'ClickHouse insert failed; will retry'
              : 'ClickHouse refused the flush; isolating its messages',
          );
        },
        onUnready: (unready) => this.#setUnready(unready),
        fence: async () => {
          await this.#deps.lease.confirm();
          // What the lease tests read: an insert of a partition leaves only after this line.
          if (log.isLevelEnabled('debug')) log.debug({ partition, flushSeq }, 'lease confirmed; inserting');
        },
      },
      ids,
      bounds,
    ).catch((error: unknown) => {
      if (!isFenceError(error)) throw error;
      stopTimer();
      flushSpan?.fail(`not written: ${(error as Error).message}`);
      flushSpan?.end();
      debugAck(partition, 'flush-fenced', { flushSeq, seqs: encodeSeqs(messages.map((m) => m.seq)) });
      log.warn(
        { partition, flushSeq, rows: rows.length, messages: messages.length, reason: (error as Error).message },
        'flush not written: the partition lease could not be confirmed',
      );
      throw error;
    });
    const written = outcome.written;
    stopTimer();
    if (flushSpan !== undefined) {
      flushSpan.setAttributes({ 'drawdown.insert_failed_attempts': failedAttempts });
      if (!written) flushSpan.fail('stopping with the flush unwritten');
      flushSpan.end();
    }
    if (debugAcksOn)
      debugAck(partition, written ? 'flush' : 'flush-unwritten', {
        flushSeq,
        rows: rows.length,
        seqs: encodeSeqs(messages.map((m) => m.seq)),
        ids: messages.map((m) => m.headers?.get('Nats-Msg-Id')),
        ...messagesTraceFields(messages),
      });
    if (!outcome.written && !outcome.stopped) {
      await this.#refused(messages, outcome.refused);
      return;
    }
    if (!written) {
      this.#spans?.finish(messages, 'not committed: the rater stopped; the stream keeps the batch');
      log.warn(
        { partition, flushSeq, messages: messages.length, ...messagesTraceFields(messages) },
        'stopping with an unwritten flush; the stream keeps those batches',
      );
      return;
    }
    crashPoint('after-insert');
    this.#pending = [];
    this.#pendingIds = [];
    for (const message of messages) if (this.#suspects.size > 0) this.#suspects.delete(this.#keyOf(message));
    // A flush with no rows wrote nothing: its messages counted no event (all
    // repeats, or undecodable), and delivered again they count none again.
    if (rows.length > 0) this.#committedSeq = flushSeq;
    for (const [i, message] of messages.entries()) {
      const { seq, fingerprint } = counted[i]!;
      this.#held.delete(`${seq}:${fingerprint}`);
      if (!this.#counted.has(seq)) this.#counted.set(seq, new Set([fingerprint]));
      else this.#counted.get(seq)?.add(fingerprint);
      message.ack();
    }
    this.#spans?.finish(messages);
    metrics.flushRows.observe(rows.length);
    metrics.committedSequence.set(this.#label, flushSeq);
    if (log.isLevelEnabled('debug'))
      log.debug(
        { partition, flushSeq, rows: rows.length, messages: messages.length, ...messagesTraceFields(messages) },
        'flush committed',
      );
  }

  /**
   * ClickHouse refused a flush's rows, not retryably (writeFlush wrote
   * nothing). One message: it is the culprit, dead-lettered then acked, and
   * the id set forgets its ids. More: each is suspect, and the loop resumes
   * so they come again and are written one flush each (bounded: one insert
   * per message of this flush); only the ones refused alone are
   * dead-lettered, the others are counted once.
   */
  async #refused(messages: JsMsg[], error: unknown): Promise<void> {
    const { partition } = this.#deps;
    const reason = `ClickHouse refused the message's rows: ${(error as Error).message ?? String(error)}`;
    if (messages.length > 1) {
      for (const message of messages) this.#suspects.add(this.#keyOf(message));
      this.#spans?.finish(messages, 'not committed: ClickHouse refused the flush; its messages are written one by one');
      throw new ResumeFromWatermark(
        `ClickHouse refused a flush of ${messages.length} messages; writing them one per flush to find the culprit`,
      );
    }
    const message = messages[0]!;
    const key = this.#keyOf(message);
    await this.#deadLetter(message, 'insert_refused', reason);
    this.#spans?.finish(messages, reason);
    this.#pending = [];
    this.#pendingIds = [];
    this.#aggregator.drain();
    this.#held.delete(key);
    this.#suspects.delete(key);
    // Handled: a redelivery (a lost ack) is acked again, never counted.
    if (!this.#counted.has(message.seq)) this.#counted.set(message.seq, new Set([this.#fingerprints.get(message)!]));
    else this.#counted.get(message.seq)?.add(this.#fingerprints.get(message)!);
    message.ack();
    // Its event ids are in the id set but were never counted: rebuild the set from what ClickHouse holds
    // (nothing is pending, so that is exactly what this partition counted).
    await this.#rebuildIds();
    debugAck(partition, 'dead-lettered-ack', { seq: message.seq });
  }

  /** Messages in the stream for this partition not yet delivered, for the lag gauge. */
  async pendingInStream(): Promise<number> {
    const info = await this.#consumer?.info(true);
    return info?.num_pending ?? 0;
  }
}
