import { Registry, collectDefaultMetrics } from 'prom-client';

/**
 * prom-client's `nodejs_active_{handles,requests,resources}_total` are gauges
 * whose names end in `_total`, which Prometheus reserves for counters
 * (`promtool check metrics` refuses them). Each is the sum of its per-type
 * gauge without the suffix, so `sum(drawdown_nodejs_active_handles)` says the same.
 */
const nonCounterTotals = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** One registry per process, with Node's default process metrics under drawdown_. */
export function createRegistry(): Registry {
  const registry = new Registry();
  const prefix = 'drawdown_';
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of nonCounterTotals) registry.removeSingleMetric(prefix + name);
  return registry;
}
