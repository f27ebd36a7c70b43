/** Settlement's Prometheus metrics (docs/metrics.md), shared by its runner and its API. */
import { Counter, Histogram, type Registry } from 'prom-client';

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
  };
}
