import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export function createRaterMetrics(registry: Registry) {
  return {
    events: new Counter({
      name: 'drawdown_rater_events_total',
      help: 'Events aggregated',
      labelNames: ['partition'] as const,
      registers: [registry],
    }),
    redeliveries: new Counter({
      name: 'drawdown_rater_redeliveries_total',
      help: 'Stream redeliveries not counted: held by a flush in progress, or named by a committed flush',
      labelNames: ['partition'] as const,
      registers: [registry],
    }),
    deadLetters: new Counter({
      name: 'drawdown_rater_dead_letters_total',
      help: 'Stream messages stored in the dead-letter stream, not counted (a copy JetStream already held is not counted again): refused (decode, event rules, time window) or insert_refused (ClickHouse refused their rows)',
      labelNames: ['partition', 'cause'] as const,
      registers: [registry],
    }),
    committedSequence: new Gauge({
      name: 'drawdown_rater_committed_sequence',
      help: 'Label of the last flush committed to ClickHouse (the watermark)',
      labelNames: ['partition'] as const,
      registers: [registry],
    }),
    duplicates: new Counter({
      name: 'drawdown_rater_duplicate_events_total',
      help: 'Events dropped because their (customer, id) was already counted',
      labelNames: ['partition'] as const,
      registers: [registry],
    }),
    dedupeIds: new Gauge({
      name: 'drawdown_rater_dedupe_ids',
      help: 'Event ids remembered for duplicate dropping',
      labelNames: ['partition'] as const,
      registers: [registry],
    }),
    dedupeMemory: new Gauge({
      name: 'drawdown_rater_dedupe_memory_bytes',
      help: 'Memory reserved for remembered event ids (fixed at start)',
      registers: [registry],
    }),
    lag: new Gauge({
      name: 'drawdown_rater_lag_messages',
      help: 'Batches in the stream not yet delivered to the rater',
      labelNames: ['partition'] as const,
      registers: [registry],
    }),
    flushRows: new Histogram({
      name: 'drawdown_rater_flush_rows',
      help: 'Aggregate rows per ClickHouse insert',
      buckets: [1, 10, 100, 1_000, 10_000, 100_000],
      registers: [registry],
    }),
    insertDuration: new Histogram({
      name: 'drawdown_clickhouse_insert_duration_seconds',
      help: 'Time to write one flush, retries included',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    partitionsOwned: new Gauge({
      name: 'drawdown_rater_partitions_owned',
      help: 'Partitions whose lease this rater holds and whose loop runs',
      registers: [registry],
    }),
    leaseTakeovers: new Counter({
      name: 'drawdown_rater_lease_takeovers_total',
      help: 'Partition leases taken from a rater that stopped renewing them (expired), not handed back',
      registers: [registry],
    }),
    leaseLost: new Counter({
      name: 'drawdown_rater_lease_lost_total',
      help: 'Partition leases this rater lost (not renewed in time, or held by another): the partition stopped without writing',
      registers: [registry],
    }),
    leaseHandbacks: new Counter({
      name: 'drawdown_rater_lease_handbacks_total',
      help: 'Partition leases this rater handed back (more than its share, or stopping) after writing what it held',
      registers: [registry],
    }),
    insertErrors: new Counter({
      name: 'drawdown_clickhouse_insert_errors_total',
      help: 'Failed ClickHouse insert attempts',
      registers: [registry],
    }),
  };
}

export type RaterMetrics = ReturnType<typeof createRaterMetrics>;
