/**
 * The rater: a Piscina pool shared by one loop per partition whose lease it
 * holds (rater/leases.ts decides which, and starts and stops the loops).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Registry } from 'prom-client';
import type { Store } from '../shared/clickhouse/store.js';
import type { Logger } from '../shared/log.js';
import type { StreamSettings } from '../shared/nats/stream.js';
import { createRaterMetrics } from './metrics.js';
import { PartitionRater, type PartitionLimits } from './partition-rater.js';
import type { AggregateResult, AggregateTask } from './task.js';
import { IdSet } from './dedupe/id-set.js';
import { dropExpiredIds } from './dedupe/id-log.js';
import type { MeterCatalog } from './meter-catalog.js';
import type { RoleTracer } from '../shared/tracing.js';
import { LeaseManager } from './leases.js';
import type { PartitionLease } from './lease-fence.js';
import type { Wants } from './lease-plan.js';

export interface RaterOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: Store;
  stream: StreamSettings;
  /** `auto` (share the partitions with the other live raters) or the partitions this rater wants. */
  partitions: Wants;
  /** Partition leases: DRAWDOWN_RATER_LEASE_TTL_MS, and the bucket's replicas when this rater creates it. */
  lease: { ttlMs: number; replicas: number };
  limits: PartitionLimits;
  threads: number;
  catalog: MeterCatalog;
  log: Logger;
  registry: Registry;
  /** Event ids remembered per partition (0 = dedupe off) and how many days ClickHouse keeps them. */
  dedupe: { idsMax: number; retentionDays: number };
  /** Spans per batch and flush, when exported. */
  tracer?: RoleTracer | undefined;
}

// Retention is a cheap DROP PARTITION of whole days; hourly is plenty.
const retentionEveryMs = 3_600_000;

/**
 * Worker threads load JavaScript. Under the compiled build the worker sits
 * beside this file; when this module runs from TypeScript source (tests), the
 * compiled copy in dist/ is used.
 */
function workerFile(): string {
  const beside = fileURLToPath(new URL('./worker.js', import.meta.url));
  if (existsSync(beside)) return beside;
  const compiled = fileURLToPath(new URL('../dist/rater/worker.js', import.meta.url));
  if (existsSync(compiled)) return compiled;
  throw new Error(`rater worker not found at ${beside} or ${compiled}; run npm run build`);
}

export class Rater {
  readonly #options: RaterOptions;
  readonly #pool: Piscina<AggregateTask, AggregateResult>;
  readonly #partitions = new Map<number, PartitionRater>();
  #leases: LeaseManager | undefined;
  readonly #metrics;
  #lagTimer: NodeJS.Timeout | undefined;
  #retentionTimer: NodeJS.Timeout | undefined;
  #metersCache: { revision: number; json: string } | undefined;
  /** The definitions in force as tasks carry them, serialised once per revision for every partition. */
  readonly #metersJson = (): { revision: number; json: string } => {
    const revision = this.#options.catalog.revision();
    if (this.#metersCache?.revision !== revision)
      this.#metersCache = { revision, json: JSON.stringify(this.#options.catalog.meters) };
    return this.#metersCache;
  };

  constructor(options: RaterOptions) {
    this.#options = options;
    this.#metrics = createRaterMetrics(options.registry);
    this.#pool = new Piscina<AggregateTask, AggregateResult>({
      filename: workerFile(),
      workerData: { meters: options.catalog.meters },
      minThreads: options.threads,
      maxThreads: options.threads,
      // Each partition loop has at most one task in flight, and a rater runs at most every partition.
      maxQueue: Math.max(1, options.stream.partitions),
      idleTimeout: 60_000,
    });
  }

  /** False while any partition's ClickHouse writes keep failing past the bound (it keeps retrying). */
  get ready(): boolean {
    return [...this.#partitions.values()].every((p) => p.ready);
  }

  /** This rater's member id in the lease bucket (unique per start). */
  get id(): string | undefined {
    return this.#leases?.id;
  }

  /** Partitions whose lease this rater holds now. */
  get owned(): number[] {
    return this.#leases?.owned ?? [];
  }

  /**
   * Joins the lease bucket and starts the partitions it could take at once
   * (every free one it wants); the rest follow as leases free up or expire.
   */
  async start(): Promise<void> {
    const { nc, stream, partitions, lease, log } = this.#options;
    this.#leases = await LeaseManager.open({
      nc,
      stream: stream.name,
      partitions: stream.partitions,
      wants: partitions,
      ttlMs: lease.ttlMs,
      replicas: lease.replicas,
      log,
      metrics: this.#metrics,
      hooks: {
        start: (partition, held) => this.#startPartition(partition, held),
        stop: (partition, how) => this.#stopPartition(partition, how),
      },
    });
    log.info(
      { raterId: this.#leases.id, wants: partitions, leaseTtlMs: lease.ttlMs },
      'rater joining the partition leases',
    );
    await this.#leases.start();
    this.#lagTimer = setInterval(() => void this.#updateLag(), 5_000);
    this.#lagTimer.unref();
    const { idsMax, retentionDays } = this.#options.dedupe;
    if (idsMax > 0) {
      void this.#dropExpiredIds(retentionDays);
      this.#retentionTimer = setInterval(() => void this.#dropExpiredIds(retentionDays), retentionEveryMs);
      this.#retentionTimer.unref();
    }
  }

  async #startPartition(partition: number, lease: PartitionLease): Promise<void> {
    const rater = new PartitionRater({
      ...this.#options,
      pool: this.#pool,
      partition,
      metrics: this.#metrics,
      dedupeIdsMax: this.#options.dedupe.idsMax,
      metersJson: this.#metersJson,
      lease,
    });
    this.#partitions.set(partition, rater);
    this.#updateDedupeMemory();
    await rater.start();
  }

  async #stopPartition(partition: number, how: 'hand-back' | 'lost'): Promise<void> {
    const rater = this.#partitions.get(partition);
    if (rater === undefined) return;
    await rater.stop({ write: how === 'hand-back' });
    this.#partitions.delete(partition);
    this.#updateDedupeMemory();
    // Another rater reports it now.
    const label = { partition: String(partition) };
    for (const gauge of [this.#metrics.lag, this.#metrics.committedSequence, this.#metrics.dedupeIds])
      gauge.remove(label);
  }

  #updateDedupeMemory(): void {
    const { idsMax } = this.#options.dedupe;
    this.#metrics.dedupeMemory.set(idsMax > 0 ? this.#partitions.size * IdSet.bytesFor(idsMax) : 0);
  }

  async #dropExpiredIds(retentionDays: number): Promise<void> {
    try {
      const days = await dropExpiredIds(this.#options.store, retentionDays, Math.floor(Date.now() / 1000));
      if (days > 0) this.#options.log.info({ days, retentionDays }, 'dropped expired event-id days');
    } catch (error) {
      // Retention is housekeeping: ClickHouse being away delays it, nothing else.
      this.#options.log.warn({ err: error }, 'could not drop expired event ids; will retry');
    }
  }

  async #updateLag(): Promise<void> {
    for (const [partition, rater] of this.#partitions) {
      try {
        const pending = await rater.pendingInStream();
        // Handed back meanwhile: its series belongs to another rater now.
        if (this.#partitions.get(partition) === rater) this.#metrics.lag.set({ partition: String(partition) }, pending);
      } catch {
        // Lag is best-effort; NATS being away is reported elsewhere.
      }
    }
  }

  /**
   * Hands every partition back, waiting at most `stopWaitMs` for their last
   * flush: an unwritten flush is safe to abandon (its batches stay unacked in
   * the stream, and its lease expires), a shutdown that never ends is not.
   */
  async stop(stopWaitMs = 15_000): Promise<void> {
    clearInterval(this.#lagTimer);
    clearInterval(this.#retentionTimer);
    await this.#leases?.stop(stopWaitMs);
    await this.#pool.destroy();
  }
}
