/**
 * The rater: a Piscina pool shared by one loop per owned stream partition.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
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

export interface RaterOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: Store;
  stream: StreamSettings;
  partitions: number[];
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
  readonly #partitions: PartitionRater[] = [];
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
      // Each partition loop has at most one task in flight.
      maxQueue: Math.max(1, options.partitions.length),
      idleTimeout: 60_000,
    });
  }

  /** False while any partition's ClickHouse writes keep failing past the bound (it keeps retrying). */
  get ready(): boolean {
    return this.#partitions.every((p) => p.ready);
  }

  async start(): Promise<void> {
    for (const partition of this.#options.partitions) {
      const rater = new PartitionRater({
        ...this.#options,
        pool: this.#pool,
        partition,
        metrics: this.#metrics,
        dedupeIdsMax: this.#options.dedupe.idsMax,
        metersJson: this.#metersJson,
      });
      await rater.start();
      this.#partitions.push(rater);
    }
    this.#lagTimer = setInterval(() => void this.#updateLag(), 5_000);
    this.#lagTimer.unref();
    const { idsMax, retentionDays } = this.#options.dedupe;
    this.#metrics.dedupeMemory.set(idsMax > 0 ? this.#options.partitions.length * IdSet.bytesFor(idsMax) : 0);
    if (idsMax > 0) {
      void this.#dropExpiredIds(retentionDays);
      this.#retentionTimer = setInterval(() => void this.#dropExpiredIds(retentionDays), retentionEveryMs);
      this.#retentionTimer.unref();
    }
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
    for (const rater of this.#partitions) {
      try {
        this.#metrics.lag.set(
          { partition: String(this.#options.partitions[this.#partitions.indexOf(rater)]) },
          await rater.pendingInStream(),
        );
      } catch {
        // Lag is best-effort; NATS being away is reported elsewhere.
      }
    }
  }

  /**
   * Stops the loops, waiting at most `stopWaitMs` for their last flush: an
   * unwritten flush is safe to abandon (its batches stay unacked in the
   * stream), a shutdown that never ends is not.
   */
  async stop(stopWaitMs = 15_000): Promise<void> {
    clearInterval(this.#lagTimer);
    clearInterval(this.#retentionTimer);
    const stopped = Promise.all(this.#partitions.map((p) => p.stop()));
    const timedOut = await Promise.race([
      stopped.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(true), stopWaitMs).unref()),
    ]);
    if (timedOut)
      this.#options.log.warn({ stopWaitMs }, 'rater loops did not stop in time; unflushed batches stay in the stream');
    await this.#pool.destroy();
  }
}
