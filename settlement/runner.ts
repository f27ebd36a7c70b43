/**
 * Runs settlement one run at a time (on demand and on a schedule), with
 * metrics and logs. One settlement process per deployment: runs are
 * serialised here, and entry ids make an accidental second process harmless
 * for re-runs of the same window.
 */
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { isDrawdownError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { money } from '../shared/money.js';
import type { createSettlementMetrics } from './metrics.js';
import { settle, type SettleRequest } from './settle.js';
import { unpricedOutstandingLines, unpricedWarningMessage, unpricedWarnings, type SettlementReport } from './report.js';

/**
 * The catalog a run prices with, asked for at the start of every run so a
 * catalog change applies without a restart (catalog/source.ts).
 */
export type RunCatalog = () => Promise<{ revision: number; catalog: Catalog }>;

/** A run's report, with the catalog revision it priced with (`catalogRevision`). */
export type RunReport = SettlementReport;

export class SettlementRunner {
  readonly #store: Store;
  readonly #catalog: Catalog | RunCatalog;
  readonly #log: Logger;
  readonly #metrics: ReturnType<typeof createSettlementMetrics>;
  readonly #snapshotRetentionDays: number | undefined;
  readonly #usageRetentionMonths: number | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  readonly #listeners: ((report: RunReport) => void)[] = [];

  constructor(
    store: Store,
    catalog: Catalog | RunCatalog,
    log: Logger,
    metrics: ReturnType<typeof createSettlementMetrics>,
    options: { snapshotRetentionDays?: number; usageRetentionMonths?: number } = {},
  ) {
    this.#store = store;
    this.#catalog = catalog;
    this.#log = log;
    this.#metrics = metrics;
    this.#snapshotRetentionDays = options.snapshotRetentionDays;
    this.#usageRetentionMonths = options.usageRetentionMonths;
  }

  /** Called with every completed run's report (balance notices re-evaluate its customers). */
  onCompleted(listener: (report: RunReport) => void): void {
    this.#listeners.push(listener);
  }

  run(request: SettleRequest): Promise<RunReport> {
    const next = this.#queue.then(() => this.#runNow(request));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #runNow(request: SettleRequest): Promise<RunReport> {
    const stop = this.#metrics.runDuration.startTimer();
    try {
      const { revision, catalog } =
        typeof this.#catalog === 'function' ? await this.#catalog() : { revision: undefined, catalog: this.#catalog };
      this.#log.info(
        { from: request.fromSec, until: request.untilSec, catalogRevision: revision },
        'settlement run starting',
      );
      const report: RunReport = await settle(this.#store, catalog, {
        ...(this.#snapshotRetentionDays === undefined ? {} : { snapshotRetentionDays: this.#snapshotRetentionDays }),
        ...(this.#usageRetentionMonths === undefined ? {} : { usageRetentionMonths: this.#usageRetentionMonths }),
        ...request,
        ...(revision === undefined ? {} : { catalogRevision: revision }),
        onProgress: (p) => {
          this.#log.info(
            { runId: p.runId, accountsDone: p.accountsDone, accountsTotal: p.accountsTotal, entries: p.entries },
            'settlement progress',
          );
          request.onProgress?.(p);
        },
      });
      this.#metrics.entriesPosted.inc(report.entriesPosted);
      if (report.entriesPosted > 0) {
        for (const customer of Object.values(report.customers)) {
          for (const [unit, amount] of Object.entries(customer.deducted))
            this.#metrics.creditsDeducted.inc({ unit }, money(amount).toNumber());
        }
      }
      this.#log.info(
        {
          runId: report.runId,
          catalogRevision: revision,
          entriesPosted: report.entriesPosted,
          alreadyPosted: report.entriesAlreadyPosted,
          customers: Object.keys(report.customers).length,
        },
        'settlement run finished',
      );
      this.#reportUnpriced(report);
      if ((report.snapshotMonthsDropped ?? 0) > 0)
        this.#log.info(
          { months: report.snapshotMonthsDropped, retentionDays: this.#snapshotRetentionDays },
          'old credit snapshots dropped',
        );
      if (report.usageMonthsDropped !== undefined)
        this.#log.info(
          { months: report.usageMonthsDropped, retentionMonths: this.#usageRetentionMonths },
          'settled minute usage of old flush months dropped',
        );
      this.#metrics.runs.inc({ outcome: 'completed' });
      for (const listener of this.#listeners) listener(report);
      return report;
    } catch (error) {
      this.#metrics.runs.inc({ outcome: 'failed' });
      throw error;
    } finally {
      stop();
    }
  }

  /**
   * Every run says what is still unpriced (SPEC §4: outstanding until priced): the gauges, and a warning naming each
   * outstanding line (report.ts, unpricedWarnings).
   */
  #reportUnpriced(report: RunReport): void {
    const lines = unpricedOutstandingLines(report);
    let billed = 0;
    for (const r of Object.values(report.customers)) billed += r.unpricedBilled?.length ?? 0;
    // A re-run or resumed run reports lines the first attempt may have counted already; the count is of runs' bills.
    if (report.entriesPosted > 0) this.#metrics.unpricedBilled.inc(billed);
    this.#metrics.unpricedLines.set(lines.length);
    this.#metrics.unpricedQuantity.reset();
    const byMeter = new Map<string, ReturnType<typeof money>>();
    for (const line of lines) byMeter.set(line.meter, (byMeter.get(line.meter) ?? money(0)).plus(line.quantity));
    for (const [meter, quantity] of byMeter) this.#metrics.unpricedQuantity.set({ meter }, quantity.toNumber());
    for (const warning of unpricedWarnings(report)) this.#log.warn(warning, unpricedWarningMessage);
  }

  /** Settles up to the last whole minute every `everyMs`. */
  schedule(everyMs: number): void {
    if (everyMs <= 0) return;
    this.#timer = setInterval(() => {
      this.run({ untilSec: Math.floor(Date.now() / 60_000) * 60 }).catch((error: unknown) => {
        // The only request a schedule can get wrong is settling behind the settled time (someone settled ahead of the
        // clock): it waits for the clock.
        if (isDrawdownError(error) && error.code === 'request_invalid')
          this.#log.warn({ detail: error.message }, 'scheduled settlement skipped');
        else this.#log.error({ err: error }, 'scheduled settlement failed');
      });
    }, everyMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#queue;
  }
}
