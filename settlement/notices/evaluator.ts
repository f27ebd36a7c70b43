/**
 * Where balance changes become notices. Callers `touch(customer)` when a
 * customer's balance may have moved (a hold reserved or released, a
 * purchase, an adjustment, a rater flush, a settlement run); the evaluator
 * reads the customer's live figures once, and for each credit unit applies
 * the crossing rule (crossings.ts) under compare-and-set (crossing-store.ts),
 * then drains the account's outbox: posts a trusted top-up's purchase,
 * publishes each notice with its id as Nats-Msg-Id, and removes what was done.
 *
 *   touch ─▶ urgent | background queue (Sets: one entry per customer, ≤ queueCustomersMax in all)
 *              │ ≤ concurrency customers at once; touched again while running ─▶ once more after
 *              ▼
 *   figures (one read) ─▶ per unit: CAS(state → evaluateCrossings) ─▶ outbox ─▶ publish ─▶ CAS(outbox − done)
 *
 * A crash between the two compare-and-sets leaves the outbox in KV: the next
 * evaluation of the account, or the sweep, publishes it again under the same
 * ids, which the stream stores once (notice-stream.ts).
 */
import type { Catalog } from '../../catalog/model.js';
import { unitNamesJson } from '../balance.js';
import type { Logger } from '../../shared/log.js';
import { crashPoint } from '../../shared/fault.js';
import { money } from '../../shared/money.js';
import { CrossingStore, type Versioned } from './crossing-store.js';
import {
  belowEveryCondition,
  evaluateCrossings,
  markTopUpPosted,
  outboxItemsMax,
  withOutbox,
  withoutOutbox,
  type CrossingState,
  type OutboxItem,
} from './crossings.js';
import { noticeId, type Notice } from './notice.js';
import type { NoticePublisher } from './notice-stream.js';
import { expiringWithinFor, rulesFor, type NoticeSettingsStore } from './notice-settings.js';
import { decideExpiring, expiringBlocks, expiringNoticeId, type HeldBlock } from './expiring.js';
import type { NoticeMetrics } from './notice-metrics.js';

export interface CustomerFigures {
  readAtMs: number;
  /** `settled`: the ledger's sum; settled − available is what unsettled usage and open holds draw (grant.expiring). */
  units: { unit: string; available: string; settled?: string }[];
}

/**
 * How long "below every condition" spares usage touches, in ms: as long as the sweep's default period, which
 * re-evaluates every account below a threshold anyway. A purchase or hold release in this process clears it.
 */
const allBelowMs = 60_000;

export interface PostedPurchase {
  customer: string;
  unit: string;
  entryId: string;
  packageId: string;
  amount: string;
  key: string;
  postedAtMs: number;
}

/**
 * The unit's names as this customer's subscription shows them (catalog/names.ts, the one place names come from),
 * for a notice's `unit_name` and `unit_internal_name`: a rename after the subscription started does not reach them.
 */
export function noticeUnitNames(
  catalog: Catalog,
  customer: string,
  unit: string,
  atMs: number,
): { unit_name: string | null; unit_internal_name: string | null } {
  const names = unitNamesJson(catalog, unit, customer, atMs);
  return { unit_name: names.name, unit_internal_name: names.internal_name };
}

/** purchase.posted: its id comes from the ledger entry, so every answer to a retried purchase names one notice. */
export function purchasePostedNotice(
  purchase: PostedPurchase,
  names: { unit_name: string | null; unit_internal_name: string | null },
): Notice {
  return {
    id: noticeId(['purchase.posted', purchase.customer, purchase.entryId]),
    type: 'purchase.posted',
    timestamp: new Date(purchase.postedAtMs).toISOString(),
    data: {
      customer: purchase.customer,
      unit: purchase.unit,
      ...names,
      entry_id: purchase.entryId,
      package: purchase.packageId,
      amount: purchase.amount,
      idempotency_key: purchase.key,
    },
  };
}

export interface EvaluatorLimits {
  /** Customers waiting to be evaluated; past it touches are dropped (counted) and left to the next touch or sweep. */
  queueCustomersMax: number;
  /** Customers evaluated at once. */
  concurrency: number;
  /**
   * Of those, how many may be background touches: each evaluation is several ClickHouse reads, and an urgent one
   * (a hold) otherwise waits for a busy pipeline's usage evaluations ahead of it in the store.
   */
  backgroundConcurrency: number;
  /** Back-off before each retry of a customer's failed evaluation; after the last, the next touch decides. */
  retryDelaysMs: readonly number[];
}

export const evaluatorDefaults: EvaluatorLimits = {
  queueCustomersMax: 100_000,
  concurrency: 8,
  backgroundConcurrency: 2,
  retryDelaysMs: [250, 1_000, 4_000, 15_000, 60_000],
};

export interface EvaluatorDeps {
  crossings: CrossingStore;
  settings: NoticeSettingsStore;
  publisher: NoticePublisher;
  catalog: Catalog;
  /** The customer's live figures: available after open holds, per unit. */
  figures: (customer: string) => Promise<CustomerFigures>;
  /** Posts a trusted top-up's purchase under `key` (idempotent by key): what purchase.posted reports. */
  purchase: (customer: string, packageId: string, key: string) => Promise<PostedPurchase>;
  metrics: NoticeMetrics;
  log: Logger;
  limits?: Partial<EvaluatorLimits>;
}

export class NoticeEvaluator {
  readonly #deps: EvaluatorDeps;
  readonly #limits: EvaluatorLimits;
  readonly #urgent = new Set<string>();
  readonly #background = new Set<string>();
  /** Background touches of least interest (a lapsed "below every condition" re-check): taken after the rest. */
  readonly #recheck = new Set<string>();
  /** Evaluations running with figures read in a group (prime()): they wait on NATS only, not on ClickHouse. */
  #runningPrimed = 0;
  /**
   * Queued background customers that had grouped figures when touched, oldest first: picked ahead of the rest
   * (a sweep's hundred reads must not hold up a crossing whose figures are already here). Entries that left the
   * queue or lost their figures are dropped when met.
   */
  readonly #primedQueued = new Set<string>();
  readonly #running = new Set<string>();
  #runningBackground = 0;
  /** Customers an evaluation found below every condition of every unit, until when that is trusted (ms). */
  readonly #allBelowUntil = new Map<string, number>();
  /** Touched while being evaluated: evaluate once more after (true: urgently). */
  readonly #again = new Map<string, boolean>();
  readonly #idle: (() => void)[] = [];
  /**
   * Figures read for many customers at once after a rater flush (prime()), taken by the customer's next
   * evaluation instead of a read of its own. Any touch but usage's drops them: a hold, purchase or run since
   * the read is not in them.
   */
  readonly #primed = new Map<string, CustomerFigures>();
  /** Customers whose last evaluations failed, and how many in a row (retryDelaysMs bounds them). */
  readonly #failures = new Map<string, number>();
  #stopped = false;

  constructor(deps: EvaluatorDeps) {
    this.#deps = deps;
    this.#limits = { ...evaluatorDefaults, ...deps.limits };
  }

  /**
   * The customer's balance may have changed: evaluate it soon (coalesced with other touches). `background`
   * touches (usage the rater flushed, settlement runs, the sweep) wait behind the others (a hold, a purchase,
   * an adjustment, a settings edit), so a busy pipeline's many customers do not delay an API caller's crossing.
   */
  touch(customer: string, options: { background?: boolean; usage?: boolean; recheck?: boolean } = {}): void {
    if (this.#stopped) return;
    if (options.usage !== true) this.#primed.delete(customer);
    // Usage only lowers available (prices are never negative): an account below every threshold it has cannot
    // cross on usage, down or up. Known for allBelowMs after an evaluation found it so (another process's
    // purchase may lift it meanwhile; that process evaluates it, and this one again once the mark expires).
    if (options.usage === true && this.sparesUsage(customer)) {
      this.#primed.delete(customer);
      return;
    }
    const background = options.background === true;
    if (this.#running.has(customer)) {
      this.#again.set(customer, (this.#again.get(customer) ?? false) || !background);
      return;
    }
    const recheck = background && options.recheck === true;
    if (this.#urgent.has(customer) || (background && this.#background.has(customer))) return;
    if (recheck && this.#recheck.has(customer)) return;
    if (this.#queued() >= this.#limits.queueCustomersMax) {
      this.#deps.metrics.touchesDropped.inc();
      return;
    }
    this.#recheck.delete(customer);
    if (recheck) this.#recheck.add(customer);
    else if (background) this.#background.add(customer);
    else {
      this.#background.delete(customer);
      this.#urgent.add(customer);
    }
    if (background && this.#primed.has(customer)) {
      this.#primedQueued.delete(customer);
      this.#primedQueued.add(customer);
      if (this.#primedQueued.size > this.#limits.queueCustomersMax) {
        const oldest = this.#primedQueued.keys().next().value;
        if (oldest !== undefined) this.#primedQueued.delete(oldest);
      }
    }
    this.#pump();
  }

  /** Whether an evaluation found the customer below every condition (its mark may have lapsed since). */
  wasBelowEveryCondition(customer: string): boolean {
    return this.#allBelowUntil.has(customer);
  }

  /** Whether a usage touch of this customer would be ignored now (below every condition, lately). */
  sparesUsage(customer: string): boolean {
    const untilMs = this.#allBelowUntil.get(customer);
    return untilMs !== undefined && untilMs > Date.now();
  }

  /**
   * Figures read (with many other customers') after usage was committed, for the usage touch that follows:
   * at most one per customer, the queue's bound in all (the oldest dropped first).
   */
  prime(customer: string, figures: CustomerFigures): void {
    if (this.#stopped) return;
    this.#primed.delete(customer);
    this.#primed.set(customer, figures);
    if (this.#primed.size > this.#limits.queueCustomersMax) {
      const oldest = this.#primed.keys().next().value;
      if (oldest !== undefined) this.#primed.delete(oldest);
    }
  }

  /** Resolves when nothing is queued or running (tests, shutdown). */
  idle(): Promise<void> {
    if (this.#queued() === 0 && this.#running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  stop(): void {
    this.#stopped = true;
    this.#urgent.clear();
    this.#background.clear();
    this.#recheck.clear();
    this.#primedQueued.clear();
    this.#primed.clear();
    this.#failures.clear();
  }

  #queued(): number {
    return this.#urgent.size + this.#background.size + this.#recheck.size;
  }

  /**
   * The next customer to evaluate and the share it runs in: urgent touches first; then background ones with
   * grouped figures, in up to all but two of the slots (they wait on NATS only); then the other background ones
   * (before re-checks) in `backgroundConcurrency` slots (each reads ClickHouse).
   */
  #pick(): { customer: string; share: 'urgent' | 'background' | 'primed'; from: Set<string> } | undefined {
    const first = this.#urgent.values().next();
    if (first.done !== true) return { customer: first.value, share: 'urgent', from: this.#urgent };
    if (this.#runningPrimed < Math.max(1, this.#limits.concurrency - 2))
      for (const customer of this.#primedQueued) {
        this.#primedQueued.delete(customer);
        const from = this.#background.has(customer) ? this.#background : this.#recheck;
        if (from.has(customer) && this.#primed.has(customer)) return { customer, share: 'primed', from };
      }
    if (this.#runningBackground >= this.#limits.backgroundConcurrency) return undefined;
    for (const from of [this.#background, this.#recheck]) {
      const next = from.values().next();
      if (next.done !== true) {
        this.#primedQueued.delete(next.value);
        return { customer: next.value, share: 'background', from };
      }
    }
    return undefined;
  }

  #pump(): void {
    while (this.#running.size < this.#limits.concurrency) {
      const picked = this.#pick();
      if (picked === undefined) return;
      const { customer, share } = picked;
      picked.from.delete(customer);
      this.#running.add(customer);
      if (share === 'background') this.#runningBackground++;
      if (share === 'primed') this.#runningPrimed++;
      void this.evaluate(customer)
        .then(
          () => this.#failures.delete(customer),
          (error: unknown) => {
            this.#deps.metrics.evaluationFailures.inc();
            this.#retryLater(customer, error);
          },
        )
        .finally(() => {
          this.#running.delete(customer);
          if (share === 'background') this.#runningBackground--;
          if (share === 'primed') this.#runningPrimed--;
          const again = this.#again.get(customer);
          this.#again.delete(customer);
          if (again !== undefined && !this.#stopped) (again ? this.#urgent : this.#background).add(customer);
          this.#pump();
          if (this.#queued() === 0 && this.#running.size === 0) for (const done of this.#idle.splice(0)) done();
        });
    }
  }

  /**
   * A failed evaluation (ClickHouse or NATS away for a moment) is tried again after a back-off, a bounded number
   * of times: the touch that caused it may be the customer's last (one usage event, one hold), and the sweep only
   * looks at accounts already recorded below a threshold, so without a retry the crossing would wait for some
   * later touch.
   */
  #retryLater(customer: string, error: unknown): void {
    const failures = (this.#failures.get(customer) ?? 0) + 1;
    const delayMs = this.#limits.retryDelaysMs[failures - 1];
    if (delayMs === undefined || this.#stopped) {
      this.#failures.delete(customer);
      this.#deps.log.warn({ err: error, customer, failures }, 'notice evaluation failed; left to the next touch');
      return;
    }
    this.#deps.log.warn({ err: error, customer, failures, retryInMs: delayMs }, 'notice evaluation failed; will retry');
    this.#failures.delete(customer);
    this.#failures.set(customer, failures);
    if (this.#failures.size > this.#limits.queueCustomersMax) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    setTimeout(() => this.touch(customer, { background: true }), delayMs).unref();
  }

  /** Evaluates every unit of the customer now; answers the notices published (new or repeated). */
  async evaluate(customer: string): Promise<Notice[]> {
    const { catalog } = this.#deps;
    const started = performance.now();
    // Settings are read afresh: an admin's edit in another process applies to the next evaluation anywhere.
    const primed = this.#primed.get(customer);
    this.#primed.delete(customer);
    const [figures, settings] = await Promise.all([
      primed ?? this.#deps.figures(customer),
      this.#deps.settings.read(customer),
    ]);
    // Units the customer has figures in, and units a customer setting names: a customer who never held a unit is
    // not "exhausted" of it.
    const units = new Set(figures.units.map((u) => u.unit));
    for (const unit of Object.keys(settings?.units ?? {})) if (catalog.creditUnits.has(unit)) units.add(unit);
    const published: Notice[] = [];
    let allBelow = units.size > 0;
    for (const unit of units) {
      const line = figures.units.find((u) => u.unit === unit);
      const rules = rulesFor(catalog, settings, unit);
      const key = CrossingStore.key(customer, unit);
      const account = { customer, unit, names: noticeUnitNames(catalog, customer, unit, figures.readAtMs) };
      const accountFigures = {
        available: money(line?.available ?? '0'),
        allowance: catalog.creditUnits.get(unit)?.allowedNegativeBalance ?? money(0),
        readAtMs: figures.readAtMs,
      };
      const stored = await this.#deps.crossings.update(key, (state) => {
        // An outbox that cannot drain (the stream away) stops new decisions from piling up behind it.
        if (state.outbox.length >= outboxItemsMax) return state;
        return evaluateCrossings(account, state, accountFigures, rules).state;
      });
      if (!belowEveryCondition(accountFigures, rules)) allBelow = false;
      published.push(...(await this.#drain(customer, key, stored)));
    }
    this.#allBelowUntil.delete(customer);
    if (allBelow) {
      this.#allBelowUntil.set(customer, Date.now() + allBelowMs);
      if (this.#allBelowUntil.size > this.#limits.queueCustomersMax) {
        const oldest = this.#allBelowUntil.keys().next().value;
        if (oldest !== undefined) this.#allBelowUntil.delete(oldest);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    this.#deps.metrics.evaluationDuration.observe(seconds);
    if (seconds >= 2)
      this.#deps.log.warn(
        { customer, ms: Math.round(seconds * 1000), primed: primed !== undefined },
        'notice evaluation was slow',
      );
    return published;
  }

  /**
   * grant.expiring for one customer (expiring.ts): `blocks` are the customer's blocks with credits left that expire
   * within the check's horizon, per unit (ledger.ts blocksExpiringBetween). Per unit with a lead time in force, the
   * blocks already inside it that are not yet announced are decided under compare-and-set — so two processes, or a
   * check repeated after a restart, announce each (block, expiry) once — and published. Live figures are read only
   * when some block is due and unannounced. Answers the notices published.
   */
  async evaluateExpiring(
    customer: string,
    blocks: ReadonlyMap<string, readonly HeldBlock[]>,
    nowMs: number,
  ): Promise<Notice[]> {
    const { catalog } = this.#deps;
    const settings = await this.#deps.settings.read(customer);
    let figures: CustomerFigures | undefined;
    const published: Notice[] = [];
    for (const [unit, held] of blocks) {
      const lead = expiringWithinFor(catalog, settings, unit);
      if (lead === undefined) continue;
      const key = CrossingStore.key(customer, unit);
      const dueBy = nowMs + lead.ms;
      const due = held.filter((b) => b.expiresAtMs !== undefined && b.expiresAtMs <= dueBy);
      if (due.length === 0) continue;
      const known = (await this.#deps.crossings.read(key)).state.expiring ?? {};
      if (due.every((b) => expiringNoticeId(customer, unit, b.id, b.expiresAtMs!) in known)) continue;
      figures ??= await this.#deps.figures(customer);
      const line = figures.units.find((u) => u.unit === unit);
      // What is drawn and not yet settled: pending usage and open holds (settled − available).
      const draw = line?.settled === undefined ? money(0) : money(line.settled).minus(money(line.available));
      const expiring = expiringBlocks(held, draw, figures.readAtMs, lead.ms);
      if (expiring.length === 0) continue;
      const account = { customer, unit, names: noticeUnitNames(catalog, customer, unit, figures.readAtMs) };
      let deferred = 0;
      const stored = await this.#deps.crossings.update(key, (state) => {
        if (state.outbox.length >= outboxItemsMax) return state;
        const decided = decideExpiring(account, state, expiring, figures!.readAtMs, lead);
        deferred = decided.deferred;
        return decided.state;
      });
      if (deferred > 0)
        this.#deps.log.warn({ customer, unit, deferred }, 'notices: grant.expiring deferred to the next check');
      published.push(...(await this.#drain(customer, key, stored)));
    }
    return published;
  }

  /** Publishes what the account's outbox holds (after a crash: again, under the same ids). */
  async drainAccount(key: string): Promise<Notice[]> {
    const account = CrossingStore.account(key);
    if (account === undefined) return [];
    return this.#drain(account.customer, key, await this.#deps.crossings.read(key));
  }

  async #drain(customer: string, key: string, stored: Versioned): Promise<Notice[]> {
    if (stored.state.outbox.length === 0) return [];
    crashPoint('notices-after-state');
    const done = new Set<string>();
    const posted: string[] = [];
    const published: Notice[] = [];
    for (const item of stored.state.outbox) {
      const notices = [item.notice];
      if (item.purchase !== undefined) {
        // Trusted top-up: the purchase first (idempotent by the request's id), then the request and its purchase.
        const purchase = await this.#deps.purchase(customer, item.purchase.package, item.purchase.key);
        posted.push(item.purchase.key);
        notices.push(
          purchasePostedNotice(
            purchase,
            noticeUnitNames(this.#deps.catalog, purchase.customer, purchase.unit, purchase.postedAtMs),
          ),
        );
      }
      for (const notice of notices) {
        const result = await this.#deps.publisher.publish(notice);
        if (result.stored) this.#deps.metrics.emitted.inc({ type: notice.type });
        else this.#deps.metrics.duplicates.inc({ type: notice.type });
        published.push(notice);
      }
      done.add(item.notice.id);
    }
    crashPoint('notices-after-publish');
    await this.#deps.crossings.update(key, (state) => {
      let next = withoutOutbox(state, done);
      for (const id of posted) next = markTopUpPosted(next, id);
      return next;
    });
    // A trusted top-up moved the balance: look again (it may have recovered).
    if (posted.length > 0) this.touch(customer);
    return published;
  }

  /**
   * A purchase is in the ledger (the purchases route): publish purchase.posted, and mark the top-up request it
   * confirms (its Idempotency-Key is the request's id) posted; then re-evaluate the customer.
   */
  async purchasePosted(purchase: PostedPurchase): Promise<void> {
    const key = CrossingStore.key(purchase.customer, purchase.unit);
    const item: OutboxItem = {
      notice: purchasePostedNotice(
        purchase,
        noticeUnitNames(this.#deps.catalog, purchase.customer, purchase.unit, purchase.postedAtMs),
      ),
    };
    const stored = await this.#deps.crossings.update(key, (state: CrossingState) =>
      markTopUpPosted(withOutbox(state, [item]), purchase.key),
    );
    await this.#drain(purchase.customer, key, stored);
    this.touch(purchase.customer);
  }

  /**
   * The backstop, over up to `accountsMax` accounts: drains outboxes a crashed process left, and re-evaluates
   * accounts below a threshold, whose recovery may come from nothing anyone touches (a hold reaching its TTL).
   */
  async sweep(accountsMax: number): Promise<number> {
    let drained = 0;
    for (const key of await this.#deps.crossings.keys(accountsMax)) {
      if (this.#stopped) break;
      const stored = await this.#deps.crossings.read(key);
      const account = CrossingStore.account(key);
      if (account === undefined) continue;
      if (stored.state.outbox.length > 0) drained += (await this.#drain(account.customer, key, stored)).length;
      if (Object.values(stored.state.conditions).some((c) => c.below))
        this.touch(account.customer, { background: true });
    }
    return drained;
  }
}
