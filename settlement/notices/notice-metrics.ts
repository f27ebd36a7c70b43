/** Notices and webhooks (docs/metrics.md). Counters count what this process did. */
import { Counter, Histogram, type Registry } from 'prom-client';

export type NoticeMetrics = ReturnType<typeof createNoticeMetrics>;

export function createNoticeMetrics(registry: Registry) {
  return {
    emitted: new Counter({
      name: 'drawdown_notices_emitted_total',
      help: 'Notices this process stored on the notices stream, by type (a publish the stream already held is not counted)',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    duplicates: new Counter({
      name: 'drawdown_notices_duplicate_publishes_total',
      help: 'Publishes of a notice the stream already held (a retry after a crash, or another process), by type',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    evaluationDuration: new Histogram({
      name: 'drawdown_notices_evaluation_duration_seconds',
      help: 'Time to evaluate one customer: live figures read, crossings decided, notices published',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    usageLookDuration: new Histogram({
      name: 'drawdown_notices_usage_look_duration_seconds',
      help: 'Time of one look for usage the rater flushed that found customers: watermarks, their customers, their grouped figures read, evaluations queued',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    evaluationFailures: new Counter({
      name: 'drawdown_notices_evaluation_failures_total',
      help: 'Customer evaluations that failed (retried by the next touch or the sweep)',
      registers: [registry],
    }),
    touchesDropped: new Counter({
      name: 'drawdown_notices_touches_dropped_total',
      help: 'Balance changes not queued for evaluation because the queue was full',
      registers: [registry],
    }),
    deliveries: new Counter({
      name: 'drawdown_webhook_deliveries_total',
      help: 'Webhook delivery attempts by outcome (delivered, retrying, failed, skipped)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    deliveryLatency: new Histogram({
      name: 'drawdown_webhook_delivery_latency_seconds',
      help: 'From a notice’s timestamp to its endpoint’s 2xx answer, including retries',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 300, 3600, 86400],
      registers: [registry],
    }),
    attemptDuration: new Histogram({
      name: 'drawdown_webhook_attempt_duration_seconds',
      help: 'Time of one webhook HTTP attempt, answered or not',
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    endpointsDisabled: new Counter({
      name: 'drawdown_webhook_endpoints_disabled_total',
      help: 'Webhook endpoints disabled after sustained failure',
      registers: [registry],
    }),
  };
}
