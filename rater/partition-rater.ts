/**
 * One partition's loop: pull batches in stream order, aggregate them in the
 * worker pool, write a flush to ClickHouse, then ack. Crash anywhere and the
 * restart resumes exactly after the watermark ClickHouse holds:
 *
 *   fetch ─▶ decode+dedupe+aggregate (worker) ─▶ merge ─▶ INSERT ids ─▶ INSERT rows+watermark ─▶ ack
 *   crash before INSERT: nothing written; messages redelivered and counted once.
 *   crash after INSERT, before ack: watermark covers them; purged at restart.
 *
 * Repeated event ids are dropped against the partition's id set, which is
 * rebuilt from ClickHouse (ids committed up to the watermark) whenever the
 * loop resumes, so it never remembers an id whose event was not committed.
 */
import type { Consumer, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import type { Piscina } from 'piscina';
import type { Logger } from '../shared/log.js';
import type { Store } from '../shared/clickhouse/store.js';
import { crashPoint } from '../shared/fault.js';
import { batchHeaders, resetPartitionConsumer, type ConsumerSettings, type StreamSettings } from '../shared/nats/stream.js';
import { Aggregator } from './aggregate.js';
import { flushPayload, writeFlush } from './flush.js';
import type { RaterMetrics } from './metrics.js';
import { packMessages, type AggregateResult, type AggregateTask } from './task.js';
import { readWatermark } from './watermark.js';
import { IdSet } from './dedupe/id-set.js';
import type { MeterCatalog } from './meter-catalog.js';
import { idsPayload, readRecentIds } from './dedupe/id-log.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface PartitionLimits extends ConsumerSettings {
  flushIntervalMs: number;
  flushRowsMax: number;
  fetchMessagesMax: number;
  retryDelayMaxMs: number;
}

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
}

export class PartitionRater {
  readonly #deps: PartitionDeps;
  readonly #aggregator: Aggregator;
  readonly #label: { partition: string };
  #consumer: Consumer | undefined;
  #stopping = false;
  #loop: Promise<void> | undefined;
  #committedSeq = 0;
  /** Highest stream sequence taken into this process; anything at or below is a redelivery. */
  #highestSeen = 0;
  /** Messages merged into the aggregator but not yet in ClickHouse, in stream order. */
  #pending: JsMsg[] = [];
  /** Fingerprints of the pending messages' counted event ids, written with their flush. */
  #pendingIds: Uint32Array[] = [];
  #pendingSinceMs = 0;
  readonly #ids: IdSet | undefined;
  /** The id set's hand-over epoch the next task must find. */
  #idsEpoch = 0;

  constructor(deps: PartitionDeps) {
    this.#deps = deps;
    this.#aggregator = new Aggregator(deps.catalog.meters);
    this.#label = { partition: String(deps.partition) };
    this.#ids = deps.dedupeIdsMax > 0 ? IdSet.create(deps.dedupeIdsMax) : undefined;
  }

  get committedSequence(): number {
    return this.#committedSeq;
  }

  async start(): Promise<void> {
    await this.#resumeFromWatermark();
    this.#loop = this.#run();
  }

  /**
   * (Re)starts consumption right after what ClickHouse holds, forgetting
   * anything held in memory: it was not committed, and the new consumer
   * delivers it again. Used at start and after any unexpected error, so the
   * in-memory state can never drift from the stream's.
   */
  async #resumeFromWatermark(): Promise<void> {
    const { jsm, js, store, stream, partition, limits } = this.#deps;
    this.#aggregator.drain();
    this.#pending = [];
    this.#pendingIds = [];
    this.#committedSeq = await readWatermark(store, partition);
    this.#highestSeen = this.#committedSeq;
    await this.#rebuildIds();
    const name = await resetPartitionConsumer(jsm, stream, partition, this.#committedSeq, limits);
    this.#consumer = await js.consumers.get(stream.name, name);
    this.#deps.metrics.committedSequence.set(this.#label, this.#committedSeq);
    this.#deps.log.info({ partition, committedSeq: this.#committedSeq }, 'partition consumer ready');
  }

  /**
   * Remembers exactly the ids ClickHouse holds up to the watermark (at least
   * the last dedupeIdsMax of them). No task runs meanwhile: this thread owns
   * the set until it hands it on with a new epoch.
   */
  async #rebuildIds(): Promise<void> {
    const ids = this.#ids;
    if (ids === undefined) return;
    const chunks = await readRecentIds(this.#deps.store, this.#deps.partition, this.#committedSeq, ids.idsPerGeneration);
    ids.clear();
    let loaded = 0;
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length; at += 3) ids.add(chunk[at]!, chunk[at + 1]!, chunk[at + 2]!);
      loaded += chunk.length / 3;
    }
    this.#idsEpoch = ids.release();
    this.#deps.metrics.dedupeIds.set(this.#label, ids.size);
    this.#deps.log.info({ partition: this.#deps.partition, loaded, remembered: ids.size }, 'event-id dedupe set rebuilt');
  }

  /** Stops pulling, writes what is pending (unless ClickHouse is down), and returns. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { log, partition } = this.#deps;
    let resumeNeeded = false;
    while (!this.#stopping) {
      try {
        if (resumeNeeded) {
          await this.#resumeFromWatermark();
          resumeNeeded = false;
        }
      } catch (error) {
        log.warn({ err: error, partition }, 'cannot resume partition yet; retrying');
        await sleep(1_000);
        continue;
      }
      let messages: JsMsg[];
      try {
        messages = await this.#fetch();
      } catch (error) {
        // Nothing was taken from this fetch, so nothing is lost: just pull again.
        if (this.#stopping) break;
        log.warn({ err: error, partition }, 'fetch failed; retrying');
        await sleep(500);
        continue;
      }
      try {
        if (messages.length > 0) await this.#aggregate(messages);
        if (this.#flushDue()) await this.#flush();
      } catch (error) {
        // Messages taken but not committed: start over from the watermark.
        log.error({ err: error, partition }, 'partition loop error; resuming from the committed watermark');
        resumeNeeded = true;
        await sleep(500);
      }
    }
    if (this.#pending.length > 0 && !resumeNeeded) await this.#flush();
  }

  async #fetch(): Promise<JsMsg[]> {
    const { limits } = this.#deps;
    const batch = await this.#consumer!.fetch({
      max_messages: limits.fetchMessagesMax,
      // Short enough that an idle partition still flushes on time.
      expires: Math.max(1_000, Math.min(limits.flushIntervalMs, 5_000)),
    });
    const out: JsMsg[] = [];
    try {
      await this.#take(batch, out);
    } catch (error) {
      // A fetch can fail half-way (NATS restart, stream leader change). The
      // messages already taken count as seen, so they must be processed —
      // dropping them here would later get them acked as "redeliveries".
      if (out.length === 0) throw error;
      this.#deps.log.warn({ err: error, partition: this.#deps.partition, taken: out.length }, 'fetch ended early; processing what arrived');
    }
    return out;
  }

  async #take(batch: AsyncIterable<JsMsg>, out: JsMsg[]): Promise<void> {
    for await (const message of batch) {
      if (message.seq <= this.#highestSeen) {
        // A redelivery: ack wait passed while we held it, or our ack was lost
        // (NATS restarted). Already committed → ack again, so it leaves the
        // stream; still pending here → its flush will ack it.
        this.#deps.metrics.redeliveries.inc(this.#label);
        if (message.seq <= this.#committedSeq) message.ack();
        continue;
      }
      this.#highestSeen = message.seq;
      out.push(message);
      if (this.#stopping) break;
    }
  }

  async #aggregate(messages: JsMsg[]): Promise<void> {
    const { limits } = this.#deps;
    // A task's rows are bounded by its events; keep each task within one flush.
    let start = 0;
    while (start < messages.length) {
      let end = start;
      let events = 0;
      while (end < messages.length) {
        const count = Number(messages[end]!.headers?.get(batchHeaders.events) ?? '0');
        if (end > start && events + count > limits.flushRowsMax) break;
        events += count;
        end++;
      }
      const group = messages.slice(start, end);
      start = end;
      await this.#catchUpCatalog(group);
      if (this.#aggregator.size + events > limits.flushRowsMax && this.#pending.length > 0) await this.#flush();
      const task = packMessages(
        group.map((m) => m.data),
        group.map((m) => (m.headers?.get(batchHeaders.format) === 'json' ? 'json' : 'msgpack')),
        this.#deps.metersJson(),
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
        // Only a publisher bypassing the gateway can put these here; they are
        // logged with their sequence and skipped so the partition keeps moving.
        this.#deps.metrics.poisonMessages.inc(this.#label);
        this.#deps.log.error({ partition: this.#deps.partition, seq: group[rejected.message]!.seq, reason: rejected.reason }, 'skipping undecodable stream message');
      }
      for (const row of result.rows) this.#aggregator.addRow(row);
      this.#deps.metrics.events.inc(this.#label, result.events);
      if (this.#pending.length === 0) this.#pendingSinceMs = Date.now();
      this.#pending.push(...group);
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
    if (needed > catalog.revision()) throw new Error(`batch validated against catalog revision ${needed}, but the newest this rater can read is ${catalog.revision()}`);
    this.#deps.log.info({ partition: this.#deps.partition, revision: catalog.revision() }, 'caught up with the catalog revision a batch was validated against');
  }

  #flushDue(): boolean {
    if (this.#pending.length === 0) return false;
    return this.#aggregator.size >= this.#deps.limits.flushRowsMax || Date.now() - this.#pendingSinceMs >= this.#deps.limits.flushIntervalMs;
  }

  async #flush(): Promise<void> {
    const { store, partition, metrics, log, limits } = this.#deps;
    const messages = this.#pending;
    const flushSeq = messages[messages.length - 1]!.seq;
    const rows = this.#aggregator.drain();
    const nowSec = Math.floor(Date.now() / 1000);
    const payload = flushPayload(rows, partition, flushSeq, nowSec);
    const ids = idsPayload(this.#pendingIds, partition, flushSeq, nowSec);
    const stopTimer = metrics.insertDuration.startTimer();
    const written = await writeFlush(store, partition, flushSeq, payload, {
      delayMaxMs: limits.retryDelayMaxMs,
      // While stopping, one attempt is made; unwritten messages stay in the stream.
      shouldContinue: () => !this.#stopping,
      onError: (error, attempt) => {
        metrics.insertErrors.inc();
        log.warn({ err: error, partition, flushSeq, attempt }, 'ClickHouse insert failed; will retry');
      },
    }, ids);
    stopTimer();
    if (!written) {
      log.warn({ partition, flushSeq, messages: messages.length }, 'stopping with an unwritten flush; the stream keeps those batches');
      return;
    }
    crashPoint('after-insert');
    this.#pending = [];
    this.#pendingIds = [];
    this.#committedSeq = flushSeq;
    for (const message of messages) message.ack();
    metrics.flushRows.observe(rows.length);
    metrics.committedSequence.set(this.#label, flushSeq);
    log.debug({ partition, flushSeq, rows: rows.length, messages: messages.length }, 'flush committed');
  }

  /** Messages in the stream for this partition not yet delivered, for the lag gauge. */
  async pendingInStream(): Promise<number> {
    const info = await this.#consumer?.info(true);
    return info?.num_pending ?? 0;
  }
}
