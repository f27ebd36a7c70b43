import { Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per process, with Node's default process metrics under drawdown_. */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'drawdown_' });
  return registry;
}
