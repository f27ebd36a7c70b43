/**
 * Starts credit holds in a settlement process: the hold store on NATS
 * JetStream KV, live figures from ClickHouse, their routes and metrics.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import type { Registry } from 'prom-client';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import type { Logger } from '../shared/log.js';
import type { Route } from '../shared/http.js';
import { HoldStore, UnsafeHoldsClusterError } from './holds/hold-store.js';
import { HoldsUnavailableError } from './holds/hold-errors.js';
import { DrawdownError } from '../shared/errors.js';
import { LiveBalances } from './live-balance.js';
import { balanceWithHolds, figuresFor, holdRouteTable, holdRoutes } from './holds-api.js';
import { createHoldMetrics } from './metrics.js';
import type { Balance } from './balance.js';

export interface HoldsSettings {
  holdTtlDefaultMs: number;
  holdTtlMaxMs: number;
  holdReleaseGraceMs: number;
  holdsEngine: string;
  holdsLogWindowMs: number;
  holdsLogClosedRecordsMax: number;
  holdsReplicas: number;
  liveBalanceCacheMs: number;
  holdsGaugeMs: number;
  /** The gateway's accepted clock skew: usage naming a hold may be stamped this far before it. */
  skewMs: number;
}

export interface RunningHolds {
  routes: Route[];
  /** The balance GET /v1/customers/{id}/balance serves: read now, open holds subtracted (undefined: holds off). */
  balance: ((customer: string) => Promise<Balance>) | undefined;
  /** balance for many customers with one read of each kind (balance notices); undefined: holds off. */
  balances: ((customers: readonly string[]) => Promise<Map<string, Balance>>) | undefined;
  stop(): Promise<void>;
}

const gaugeAccountsMax = 10_000;
/** Customers whose open holds one grouped balance read lists at once. */
const holdListsConcurrency = 32;

/**
 * Holds off: every hold route answers 503 holds_unavailable saying why, and the balance is served without holds.
 * For a NATS cluster that cannot decide holds safely: settlement still runs (balances, ledger, purchases), and
 * the refusal is in the log and in every hold answer, instead of the process refusing to start.
 */
export function holdsOff(why: string): RunningHolds {
  const refuse = async (): Promise<never> => {
    throw new DrawdownError('holds_unavailable', `credit holds are off in this process: ${why}`, {
      cause: new HoldsUnavailableError(why),
    });
  };
  return {
    routes: holdRouteTable.map(({ method, path, scope }) => ({ method, path, scope, handler: refuse })),
    balance: undefined,
    balances: undefined,
    stop: async () => {},
  };
}

export async function startHolds(deps: {
  nc: NatsConnection;
  store: Store;
  catalog: Catalog;
  settings: HoldsSettings;
  registry: Registry;
  log: Logger;
  now?: () => number;
  /** A hold was reserved or released (balance notices re-evaluate the customer). */
  onChange?: (customer: string) => void;
}): Promise<RunningHolds> {
  const { settings, catalog, log } = deps;
  const metrics = createHoldMetrics(deps.registry);
  const live = new LiveBalances(deps.store, catalog, {
    cacheMs: settings.liveBalanceCacheMs,
    cachedCustomersMax: 10_000,
    // A hold lives at most holdTtlMaxMs; its usage is stamped after it was made, give or take clock skew.
    holdLookbackMs: settings.holdTtlMaxMs + settings.skewMs + 60_000,
    ...(deps.now ? { now: deps.now } : {}),
    onRead: (seconds) => metrics.liveReadDuration.observe(seconds),
  });
  const now = deps.now ?? Date.now;
  let holds: HoldStore;
  try {
    holds = await HoldStore.open(deps.nc, {
      ttlDefaultMs: settings.holdTtlDefaultMs,
      ttlMaxMs: settings.holdTtlMaxMs,
      replicas: settings.holdsReplicas,
      engine: settings.holdsEngine as 'auto' | 'kv' | 'log',
      logWindowMs: settings.holdsLogWindowMs,
      logClosedRecordsMax: settings.holdsLogClosedRecordsMax,
      ...(deps.now ? { clock: deps.now } : {}),
      balance: async ({ customer, unit }) => {
        const figures = await live.figures(customer);
        metrics.liveAge.observe(Math.max(0, now() - figures.readAtMs) / 1000);
        return figuresFor(figures, catalog, unit);
      },
      onWrite: (before, after, nowMs) => {
        let expired = 0;
        const kept = new Set(after.holds.map((h) => h.id));
        for (const hold of before.holds) if (hold.expiresMs <= nowMs && !kept.has(hold.id)) expired++;
        if (expired > 0) metrics.expired.inc(expired);
      },
      onArchive: (outcome) => {
        if ('archived' in outcome) metrics.archived.inc(outcome.archived);
        else {
          metrics.archiveFailures.inc();
          log.warn(
            { err: outcome.failed },
            'could not archive closed holds; they stay in their account and are retried',
          );
        }
      },
    });
  } catch (error) {
    if (!(error instanceof UnsafeHoldsClusterError)) throw error;
    log.error({ err: error }, 'credit holds are off: the NATS cluster cannot decide them safely');
    return holdsOff(error.message);
  }

  log.info({ engine: holds.settings.engine }, 'credit holds are on');
  let counting = false;
  let counted = holds.stats();
  const recount = async (): Promise<void> => {
    if (counting) return;
    counting = true;
    // The engine counts; the metrics take what it counted since the last round.
    const stats = holds.stats();
    metrics.closedForgotten.inc(stats.closedForgotten - counted.closedForgotten);
    metrics.refreshed.inc(stats.refreshed - counted.refreshed);
    metrics.closedRetained.set(stats.closedRetained);
    counted = stats;
    try {
      const { open, complete } = await holds.countOpen(gaugeAccountsMax);
      metrics.open.set(open);
      if (!complete) log.warn({ accountsRead: gaugeAccountsMax }, 'drawdown_holds_open counts only the first accounts');
    } catch (error) {
      log.warn({ err: error }, 'could not count open holds');
    } finally {
      counting = false;
    }
  };
  void recount();
  const timer = setInterval(() => void recount(), settings.holdsGaugeMs);
  timer.unref();

  return {
    routes: holdRoutes({
      holds,
      live,
      catalog,
      metrics,
      releaseGraceMs: settings.holdReleaseGraceMs,
      ...(deps.onChange ? { onChange: deps.onChange } : {}),
    }),
    balance: async (customer) => balanceWithHolds(holds, catalog, await live.fresh(customer)),
    balances: async (customers) => {
      const figures = await live.freshMany(customers);
      const out = new Map<string, Balance>();
      // Holds are per account in KV: a handful at a time, not thousands of reads at once.
      for (let i = 0; i < customers.length; i += holdListsConcurrency)
        await Promise.all(
          customers
            .slice(i, i + holdListsConcurrency)
            .map(async (c) => out.set(c, await balanceWithHolds(holds, catalog, figures.get(c)!))),
        );
      return out;
    },
    stop: async () => {
      clearInterval(timer);
      await holds.shutdown();
    },
  };
}
