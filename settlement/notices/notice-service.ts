/**
 * Starts notices and webhooks in a settlement process that has NATS: the
 * notices stream, the crossing-state, settings, endpoint and delivery-log
 * buckets, the evaluator with its triggers (usage watch, sweep), the webhook
 * dispatcher, their routes and metrics.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { Registry } from 'prom-client';
import type { Catalog } from '../../catalog/model.js';
import type { Store } from '../../shared/clickhouse/store.js';
import type { Logger } from '../../shared/log.js';
import type { Route } from '../../shared/http.js';
import { formatAmount } from '../../shared/money.js';
import { blocksExpiringBetween } from '../ledger.js';
import { purchasePackage } from '../purchases.js';
import type { HeldBlock } from './expiring.js';
import { CrossingStore } from './crossing-store.js';
import { DeliveryLog } from './delivery-log.js';
import { WebhookDispatcher } from './dispatcher.js';
import { NoticeEvaluator, type CustomerFigures, type PostedPurchase } from './evaluator.js';
import { createNoticeMetrics } from './notice-metrics.js';
import { NoticeSettingsStore } from './notice-settings.js';
import { ensureNoticeStream, NoticePublisher, noticeStreamDefaults } from './notice-stream.js';
import { noticeRoutes } from './notices-api.js';
import { UsageWatch } from './usage-watch.js';
import { EndpointStore } from './webhook-endpoints.js';

/** The webhook delivery stream's max_bytes (reserved against nats-server's max_file_store). */
export const webhookStreamBytesMax = 256 * 1024 * 1024;
export interface NoticesSettings {
  noticesPollMs: number;
  noticesSweepMs: number;
  noticesExpiringCheckMs: number;
  noticesReplicas: number;
  noticesMaxAgeMs: number;
  noticesDuplicateWindowMs: number;
  webhookRetryScheduleMs: string;
  webhookTimeoutMs: number;
  webhookConcurrency: number;
  webhookLogRetentionMs: number;
}

export interface RunningNotices {
  routes: Route[];
  evaluator: NoticeEvaluator;
  /** A balance may have moved (holds, adjustments; `background` for settlement runs). */
  touch(customer: string, options?: { background?: boolean }): void;
  /** A purchase was answered: publish purchase.posted, confirm a top-up request it names. */
  purchasePosted(purchase: PostedPurchase): Promise<void>;
  /**
   * One grant.expiring check now (after a settlement run; also every noticesExpiringCheckMs): resolves with the
   * notices it published once a check that started after this call has finished.
   */
  checkExpiring(): Promise<number>;
  stop(): Promise<void>;
}

/** "5000,300000" → [5000, 300000]; refused (RangeError naming the setting) unless 1–20 delays of 1 ms – 2 days. */
export function parseRetrySchedule(text: string): number[] {
  const delays = text.split(',').map((part) => Number(part.trim()));
  if (delays.length < 1 || delays.length > 20 || delays.some((d) => !Number.isInteger(d) || d < 1 || d > 172_800_000))
    throw new RangeError(
      `DRAWDOWN_WEBHOOK_RETRY_SCHEDULE_MS must be 1–20 comma-separated delays in ms, each 1–172800000: ${text}`,
    );
  return delays;
}

const sweepAccountsMax = 10_000;
/** Blocks one grant.expiring check reads (soonest expiry first; the rest wait for a later check, with a warning). */
const expiringBlocksMax = 100_000;
/** Customers one grant.expiring check decides at once. */
const expiringConcurrency = 4;
const usageCustomersMax = 50_000;
/** Customers whose live figures one grouped read takes, after a flush touched them. */
const usagePrimeChunk = 500;
/** A usage look or an evaluation this slow is logged (a notice waited for it). */
const slowMs = 2_000;

export async function startNotices(deps: {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: Store;
  catalog: Catalog;
  settings: NoticesSettings;
  registry: Registry;
  log: Logger;
  /** Available per unit after open holds (holds-service.ts), or the ledger-and-usage balance without holds. */
  balance: (customer: string) => Promise<{ units: { unit: string; available: string; settled: string }[] }>;
  /** balance for many customers with one read of each kind; without it each customer a flush touched reads alone. */
  balances?: (
    customers: readonly string[],
  ) => Promise<ReadonlyMap<string, { units: { unit: string; available: string; settled: string }[] }>>;
  now?: () => number;
}): Promise<RunningNotices> {
  const { settings, catalog, log, nc } = deps;
  const now = deps.now ?? Date.now;
  const metrics = createNoticeMetrics(deps.registry);
  const streamSettings = {
    ...noticeStreamDefaults,
    replicas: settings.noticesReplicas,
    maxAgeMs: settings.noticesMaxAgeMs,
    duplicateWindowMs: Math.min(settings.noticesDuplicateWindowMs, settings.noticesMaxAgeMs),
  };
  await ensureNoticeStream(deps.jsm, streamSettings);
  const publisher = new NoticePublisher(deps.js, streamSettings);
  const replicas = settings.noticesReplicas;
  const [crossings, customerSettings, endpoints, deliveries] = await Promise.all([
    CrossingStore.open(nc, { replicas }),
    NoticeSettingsStore.open(nc, {
      bucket: 'drawdown_notice_settings',
      replicas,
      requestTimeoutMs: 5_000,
    }),
    EndpointStore.open(nc, { replicas, cacheMs: 1_000, requestTimeoutMs: 5_000 }),
    DeliveryLog.open(nc, { replicas, retentionMs: settings.webhookLogRetentionMs, requestTimeoutMs: 5_000 }),
  ]);

  const figures = async (customer: string): Promise<CustomerFigures> => {
    // Taken before the read: the figures hold at least everything committed before this instant.
    const readAtMs = now();
    const balance = await deps.balance(customer);
    return {
      readAtMs,
      units: balance.units.map((u) => ({ unit: u.unit, available: u.available, settled: u.settled })),
    };
  };
  const purchase = async (customer: string, packageId: string, key: string): Promise<PostedPurchase> => {
    const nowMs = now();
    const result = await purchasePackage(deps.store, catalog, {
      customer,
      packageId,
      idempotencyKey: key,
      nowSec: Math.floor(nowMs / 1000),
    });
    return {
      customer,
      unit: result.entry.unit,
      entryId: result.entry.entryId,
      packageId,
      amount: formatAmount(result.entry.amount),
      key,
      postedAtMs: result.entry.postedAtSec * 1000,
    };
  };
  const evaluator = new NoticeEvaluator({
    crossings,
    settings: customerSettings,
    publisher,
    catalog,
    figures,
    purchase,
    metrics,
    log,
  });

  const dispatcher = new WebhookDispatcher({
    js: deps.js,
    jsm: deps.jsm,
    endpoints,
    deliveries,
    publisher,
    settings: {
      retryScheduleMs: parseRetrySchedule(settings.webhookRetryScheduleMs),
      jitterRatio: 0.2,
      timeoutMs: settings.webhookTimeoutMs,
      concurrency: settings.webhookConcurrency,
      pendingMax: 50_000,
      // ~250,000 deliveries waiting; the bytes are reserved against nats-server's max_file_store.
      streamMessagesMax: 250_000,
      streamBytesMax: webhookStreamBytesMax,
      replicas,
      noticeStream: streamSettings.name,
    },
    metrics,
    log,
    now,
  });
  await dispatcher.start();

  // Usage the rater committed moves `available`: look every noticesPollMs.
  const watch = new UsageWatch(deps.store, usageCustomersMax);
  let watching = false;
  let rechecking = false;
  /** Reads the customers' figures together (chunks of usagePrimeChunk), hands them over, and touches them. */
  const primeAndTouch = async (customers: readonly string[], recheck = false): Promise<void> => {
    for (let i = 0; i < customers.length; i += usagePrimeChunk) {
      const chunk = customers.slice(i, i + usagePrimeChunk);
      const balances = deps.balances;
      if (balances !== undefined) {
        // Taken before the read: the figures hold the flushes the watch just saw.
        const readAtMs = now();
        try {
          for (const [customer, balance] of await balances(chunk))
            evaluator.prime(customer, {
              readAtMs,
              units: balance.units.map((u) => ({ unit: u.unit, available: u.available, settled: u.settled })),
            });
        } catch (error) {
          // Each customer's evaluation then reads its own figures.
          log.warn({ err: error, customers: chunk.length }, 'notices: grouped balance read failed');
        }
      }
      for (const customer of chunk) evaluator.touch(customer, { background: true, usage: true, recheck });
    }
  };
  const poll = async (): Promise<void> => {
    if (watching) return;
    watching = true;
    const started = performance.now();
    let looked = 0;
    try {
      const { customers, truncated } = await watch.changed();
      looked = customers.length;
      // Customers usage cannot move across any threshold (below every one) are not read at all. Those an earlier
      // evaluation found so, whose mark has lapsed, are re-checked for safety off this loop, one batch at a time:
      // a busy account's large read must not hold up the next look, nor a customer whose usage may be crossing a
      // threshold now. A lapsed customer not re-checked now is re-checked on its next usage.
      const wanted = customers.filter((customer) => !evaluator.sparesUsage(customer));
      await primeAndTouch(wanted.filter((customer) => !evaluator.wasBelowEveryCondition(customer)));
      const lapsed = wanted.filter((customer) => evaluator.wasBelowEveryCondition(customer));
      if (lapsed.length > 0 && !rechecking) {
        rechecking = true;
        void primeAndTouch(lapsed, true).finally(() => {
          rechecking = false;
        });
      }
      if (truncated)
        log.warn({ customersMax: usageCustomersMax }, 'notices: more customers had usage than one look takes');
    } catch (error) {
      log.warn({ err: error }, 'notices: could not read which customers had usage');
    } finally {
      watching = false;
      const elapsedMs = performance.now() - started;
      if (looked > 0) metrics.usageLookDuration.observe(elapsedMs / 1000);
      const ms = Math.round(elapsedMs);
      // Usage notices wait for this look: a slow one is worth a line.
      if (ms >= slowMs) log.warn({ ms, customers: looked }, 'notices: a look for usage was slow');
    }
  };
  void poll();
  const pollTimer = setInterval(() => void poll(), settings.noticesPollMs);
  pollTimer.unref();

  // The backstop: outboxes left by a process that died between deciding and publishing.
  let sweeping = false;
  const sweep = async (): Promise<void> => {
    if (sweeping) return;
    sweeping = true;
    try {
      const drained = await evaluator.sweep(sweepAccountsMax);
      if (drained > 0) log.info({ notices: drained }, 'notices: published what an earlier process left unpublished');
    } catch (error) {
      log.warn({ err: error }, 'notices: sweep failed');
    } finally {
      sweeping = false;
    }
  };
  void sweep();
  const sweepTimer = setInterval(() => void sweep(), settings.noticesSweepMs);
  sweepTimer.unref();

  // grant.expiring: the blocks with credits left whose expiry is within the longest lead time anyone has, read from
  // the ledger in one query; each customer's are decided by the evaluator (expiring.ts, under compare-and-set).
  let stopped = false;
  const expiringPass = async (): Promise<number> => {
    const nowMs = now();
    let horizonMs = await customerSettings.expiringWithinMaxMs();
    for (const unit of catalog.creditUnits.values())
      if (unit.expiringWithin !== undefined && unit.expiringWithin.ms > horizonMs) horizonMs = unit.expiringWithin.ms;
    if (horizonMs === 0) return 0;
    const { blocks, truncated } = await blocksExpiringBetween(
      deps.store,
      Math.floor(nowMs / 1000),
      Math.ceil((nowMs + horizonMs) / 1000),
      expiringBlocksMax,
    );
    if (truncated)
      log.warn(
        { blocksMax: expiringBlocksMax },
        'notices: more blocks expire within the lead time than one check reads',
      );
    const byCustomer = new Map<string, Map<string, HeldBlock[]>>();
    for (const row of blocks) {
      const units = byCustomer.get(row.customer) ?? new Map<string, HeldBlock[]>();
      byCustomer.set(row.customer, units);
      const list = units.get(row.unit) ?? [];
      units.set(row.unit, list);
      list.push({ ...row, ...(row.origin === undefined ? {} : { origin: row.origin }) });
    }
    const customers = [...byCustomer.keys()];
    let next = 0;
    let published = 0;
    const worker = async (): Promise<void> => {
      while (next < customers.length && !stopped) {
        const customer = customers[next++]!;
        try {
          published += (await evaluator.evaluateExpiring(customer, byCustomer.get(customer)!, nowMs)).length;
        } catch (error) {
          metrics.evaluationFailures.inc();
          log.warn(
            { err: error, customer },
            'notices: grant.expiring check failed for a customer; the next check retries',
          );
        }
      }
    };
    await Promise.all(Array.from({ length: expiringConcurrency }, worker));
    return published;
  };
  // One check at a time; a request during one is served by one more check after it (requests coalesce).
  let checking: Promise<number> | undefined;
  let checkQueued: Promise<number> | undefined;
  const checkExpiring = (): Promise<number> => {
    if (checking === undefined) {
      checking = expiringPass().finally(() => {
        checking = undefined;
      });
      return checking;
    }
    checkQueued ??= checking
      .catch(() => 0)
      .then(() => {
        checkQueued = undefined;
        return checkExpiring();
      });
    return checkQueued;
  };
  const expiringCheck = (): void => {
    checkExpiring().catch((error: unknown) => log.warn({ err: error }, 'notices: grant.expiring check failed'));
  };
  expiringCheck();
  const expiringTimer = setInterval(expiringCheck, settings.noticesExpiringCheckMs);
  expiringTimer.unref();

  return {
    routes: noticeRoutes({
      endpoints,
      deliveries,
      dispatcher,
      settings: customerSettings,
      crossings,
      catalog,
      touch: (customer) => evaluator.touch(customer),
      now,
    }),
    evaluator,
    touch: (customer, options) => evaluator.touch(customer, options),
    purchasePosted: (p) => evaluator.purchasePosted(p),
    checkExpiring,
    stop: async () => {
      stopped = true;
      clearInterval(pollTimer);
      clearInterval(sweepTimer);
      clearInterval(expiringTimer);
      await checking?.catch(() => 0);
      evaluator.stop();
      await dispatcher.stop();
      await evaluator.idle();
    },
  };
}
