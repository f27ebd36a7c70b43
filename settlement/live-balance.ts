/**
 * A customer's live figures, as holds and entitlement checks use them:
 * per credit unit, `base` = settled − live cost of unsettled usage, and what
 * each hold's usage has cost so far (its coverage). Both are read as of one
 * snapshot of the rater's watermarks, so a flush is in both or in neither:
 * a hold and the usage it covers are never both subtracted, nor neither
 * (hold-coverage.ts); reads are shared for `cacheMs` and by concurrent
 * callers, so thousands of holds per second cost a few reads per customer.
 *
 * The ledger stays the source of truth: these figures only decide holds and
 * show `available`; settlement posts what it always posted.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { money } from '../shared/money.js';
import { balanceOf, balancesOf, type Balance } from './balance.js';
import { readHoldCoverage, readHoldCoverages, type HoldCoverage } from './hold-coverage.js';
import { LiveWatermarks } from './live-watermarks.js';

export interface LiveFigures {
  balance: Balance;
  coverage: HoldCoverage;
  /** When the read started (ms since the epoch): the figures hold at least everything committed before it. */
  readAtMs: number;
}

export interface LiveBalanceOptions {
  /** How long one read serves later callers, in ms (0: every caller reads, concurrent ones still share). */
  cacheMs: number;
  /** Customers whose figures are kept; the least recently read are dropped first. */
  cachedCustomersMax: number;
  /** How far back usage can name a still-open hold: the longest hold life plus the gateway's accepted lateness. */
  holdLookbackMs: number;
  now?: () => number;
  /** Called with each read's duration in seconds (a metric). */
  onRead?: (seconds: number) => void;
}

interface Entry {
  startedMs: number;
  figures: Promise<LiveFigures>;
}

export class LiveBalances {
  readonly #store: Store;
  readonly #catalog: Catalog;
  readonly #options: LiveBalanceOptions;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #watermarks: LiveWatermarks;

  constructor(store: Store, catalog: Catalog, options: LiveBalanceOptions) {
    this.#store = store;
    this.#watermarks = LiveWatermarks.of(store);
    this.#catalog = catalog;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Figures read at most cacheMs ago (or being read now). */
  figures(customer: string): Promise<LiveFigures> {
    const nowMs = this.#now();
    const entry = this.#entries.get(customer);
    if (entry !== undefined && nowMs - entry.startedMs <= this.#options.cacheMs) return entry.figures;
    return this.#read(customer, nowMs);
  }

  /** Figures read now, for callers that must see everything committed before the call (GET balance). */
  fresh(customer: string): Promise<LiveFigures> {
    const nowMs = this.#now();
    const entry = this.#entries.get(customer);
    // A read that started at this very instant already sees everything committed before the call.
    if (entry !== undefined && entry.startedMs >= nowMs) return entry.figures;
    return this.#read(customer, nowMs);
  }

  /** base for one credit unit: settled − pending; zero for a unit the customer has never used nor been granted. */
  static baseOf(figures: LiveFigures, unit: string): Decimal {
    const line = figures.balance.units.find((u) => u.unit === unit);
    return line === undefined ? money(0) : money(line.available);
  }

  /**
   * fresh() for many customers with one read of each kind, cached for each as fresh() caches one: balance notices
   * evaluate every customer a rater flush touched, and one read per customer would queue them behind each other.
   */
  async freshMany(customers: readonly string[]): Promise<Map<string, LiveFigures>> {
    const nowMs = this.#now();
    const started = performance.now();
    const all = (async (): Promise<Map<string, LiveFigures>> => {
      const watermarks = Object.fromEntries(await this.#watermarks.read());
      const sinceSec = Math.floor((nowMs - this.#options.holdLookbackMs) / 60_000) * 60;
      const coverage = await readHoldCoverages(this.#store, this.#catalog, customers, sinceSec, watermarks);
      const balances = await balancesOf(this.#store, this.#catalog, customers, nowMs, watermarks);
      this.#options.onRead?.((performance.now() - started) / 1000);
      return new Map(
        customers.map((c) => [c, { balance: balances.get(c)!, coverage: coverage.get(c)!, readAtMs: nowMs }]),
      );
    })();
    for (const customer of customers)
      this.#remember(customer, { startedMs: nowMs, figures: all.then((m) => m.get(customer)!) });
    return all;
  }

  #remember(customer: string, entry: Entry): void {
    this.#entries.delete(customer);
    this.#entries.set(customer, entry);
    if (this.#entries.size > this.#options.cachedCustomersMax) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    // A failed read is not served to later callers.
    entry.figures.catch(() => {
      if (this.#entries.get(customer) === entry) this.#entries.delete(customer);
    });
  }

  #read(customer: string, nowMs: number): Promise<LiveFigures> {
    const started = performance.now();
    const figures = (async (): Promise<LiveFigures> => {
      // One snapshot of what the rater committed, for both reads: a flush lands in both or in neither.
      const watermarks = Object.fromEntries(await this.#watermarks.read());
      const coverage = await readHoldCoverage(
        this.#store,
        this.#catalog,
        customer,
        Math.floor((nowMs - this.#options.holdLookbackMs) / 60_000) * 60,
        watermarks,
      );
      const balance = await balanceOf(this.#store, this.#catalog, customer, nowMs, watermarks);
      this.#options.onRead?.((performance.now() - started) / 1000);
      return { balance, coverage, readAtMs: nowMs };
    })();
    this.#remember(customer, { startedMs: nowMs, figures });
    return figures;
  }
}
