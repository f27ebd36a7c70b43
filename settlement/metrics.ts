/** Settlement's Prometheus metrics (docs/metrics.md), shared by its runner and its API. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type SettlementMetrics = ReturnType<typeof createSettlementMetrics>;

export function createSettlementMetrics(registry: Registry) {
  return {
    runDuration: new Histogram({
      name: 'drawdown_settlement_run_duration_seconds',
      help: 'Settlement run time',
      buckets: [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    runs: new Counter({
      name: 'drawdown_settlement_runs_total',
      help: 'Settlement runs by outcome (completed, failed)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    entriesPosted: new Counter({
      name: 'drawdown_settlement_entries_posted_total',
      help: 'Ledger entries posted by settlement',
      registers: [registry],
    }),
    creditsDeducted: new Counter({
      name: 'drawdown_settlement_credits_deducted_total',
      help: 'Credits deducted by usage entries, by unit',
      labelNames: ['unit'] as const,
      registers: [registry],
    }),
    unpricedLines: new Gauge({
      name: 'drawdown_settlement_unpriced_lines',
      help: 'Usage lines no rate prices, outstanding after the last settlement run',
      registers: [registry],
    }),
    unpricedQuantity: new Gauge({
      name: 'drawdown_settlement_unpriced_quantity',
      help: 'Quantity of outstanding unpriced usage after the last settlement run, by meter (summed over its lines)',
      labelNames: ['meter'] as const,
      registers: [registry],
    }),
    unpricedBilled: new Counter({
      name: 'drawdown_settlement_unpriced_billed_total',
      help: 'Outstanding unpriced usage lines that a run priced and billed',
      registers: [registry],
    }),
  };
}

export type HoldMetrics = ReturnType<typeof createHoldMetrics>;

/**
 * Holds and live balances (docs/metrics.md). Counters count what this process decided or stored; the open-holds
 * gauge is the whole bucket's, read now and then (every process reports the same figure: use max()).
 */
export function createHoldMetrics(registry: Registry) {
  return {
    admitted: new Counter({
      name: 'drawdown_holds_admitted_total',
      help: 'Holds created (a retried reserve answered with its existing hold is not counted again)',
      labelNames: ['unit'] as const,
      registers: [registry],
    }),
    refused: new Counter({
      name: 'drawdown_holds_refused_total',
      help: 'Reserves refused, by unit and error code (insufficient_credits, too_many_open_holds, ...)',
      labelNames: ['unit', 'reason'] as const,
      registers: [registry],
    }),
    released: new Counter({
      name: 'drawdown_holds_released_total',
      help: 'Holds released by their callers',
      labelNames: ['unit'] as const,
      registers: [registry],
    }),
    expired: new Counter({
      name: 'drawdown_holds_expired_total',
      help: 'Holds that reached their TTL, counted by the process whose write recorded the expiry',
      registers: [registry],
    }),
    archived: new Counter({
      name: 'drawdown_holds_archived_total',
      help: 'Closed holds this process moved from busy accounts to the archive bucket (drawdown_holds_closed)',
      registers: [registry],
    }),
    archiveFailures: new Counter({
      name: 'drawdown_holds_archive_failures_total',
      help: 'Rounds of archive puts that failed (the closed holds stay in their account and are retried)',
      registers: [registry],
    }),
    closedForgotten: new Counter({
      name: 'drawdown_holds_closed_forgotten_total',
      help: 'Log engine: closed holds this process forgot before their retention, past its in-memory bound (a retried reserve under such a key makes a new hold)',
      registers: [registry],
    }),
    closedRetained: new Gauge({
      name: 'drawdown_holds_log_closed_retained',
      help: 'Log engine: closed holds this process keeps in memory so a retried reserve or a late release finds them (about the close rate times the 2-minute retention, at most DRAWDOWN_HOLDS_LOG_CLOSED_RECORDS_MAX)',
      registers: [registry],
    }),
    refreshed: new Counter({
      name: 'drawdown_holds_log_refreshed_total',
      help: 'Log engine: accounts this process re-appended so their open holds stay within the log window',
      registers: [registry],
    }),
    open: new Gauge({
      name: 'drawdown_holds_open',
      help: 'Open holds in the hold store, all accounts (read every DRAWDOWN_HOLDS_GAUGE_MS)',
      registers: [registry],
    }),
    liveReadDuration: new Histogram({
      name: 'drawdown_live_balance_read_duration_seconds',
      help: 'Time to read a customer’s live figures (settled, pending, hold coverage) from ClickHouse',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    liveAge: new Histogram({
      name: 'drawdown_live_balance_age_seconds',
      help: 'Age of the live figures a hold or entitlement decision used (the cache’s share of live-balance lag)',
      buckets: [0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2],
      registers: [registry],
    }),
  };
}
