/**
 * The ingest gateway: decode, validate, publish — nothing else. A batch is
 * answered 202 only after JetStream acknowledged it, and a batch with any
 * invalid event is refused whole, with every problem named by index and field.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { MeterDefinitions } from '../catalog/model.js';
import { decodeBatch, expectEventArray, validateEvents, type BatchFormat } from '../shared/events/batch.js';
import { DrawdownError } from '../shared/errors.js';
import { problemFor, readBody, sendJson, type Route } from '../shared/http.js';
import { incomingTrace, setRequestTraceId, type IncomingTrace } from '../shared/trace-context.js';
import type { RoleTracer, TraceSpan } from '../shared/tracing.js';
import type { BatchPublisher, PartTrace, PublishResult } from './publisher.js';
import { scanValidBatch } from './msgpack-split.js';
import { routeBatch, routeScanned, type BatchPart } from './route.js';
import { checkContentEncoding } from './content-encoding.js';
import { cloudEventsHandler } from './cloudevents-route.js';
import type { EventMappings } from '../catalog/event-mapping.js';

export interface GatewayLimits {
  batchEventsMax: number;
  bodyBytesMax: number;
  bodyTimeoutMs: number;
  lateMs: number;
  skewMs: number;
}

const idempotencyKeyPattern = /^[\x21-\x7e]{1,128}$/;

export function batchFormat(contentType: string | undefined): BatchFormat {
  const type = (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (type === 'application/msgpack' || type === 'application/x-msgpack' || type === 'application/vnd.msgpack')
    return 'msgpack';
  if (type === 'application/json') return 'json';
  throw new DrawdownError(
    'unsupported_media_type',
    `Content-Type ${JSON.stringify(type)} is not application/msgpack or application/json`,
  );
}

export function createIngestMetrics(registry: Registry) {
  return {
    events: new Counter({
      name: 'drawdown_ingest_events_total',
      help: 'Events accepted into the stream',
      registers: [registry],
    }),
    batches: new Counter({
      name: 'drawdown_ingest_batches_total',
      help: 'Batch requests by outcome',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: 'drawdown_ingest_batch_size',
      help: 'Events per accepted batch',
      buckets: [1, 10, 100, 1_000, 10_000, 100_000],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'drawdown_ingest_request_duration_seconds',
      help: 'POST /v1/events handling time, body read to stream acknowledgement',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  };
}

export type IngestMetrics = ReturnType<typeof createIngestMetrics>;

export interface IngestDeps {
  publisher: BatchPublisher;
  meters: MeterDefinitions;
  /** The catalog revision `meters` belong to (0 for a catalog file); travels with each batch. */
  catalogRevision: () => number;
  limits: GatewayLimits;
  metrics: IngestMetrics;
  now?: () => number;
  /** Event type → meters, for POST /api/v1/events (CloudEvents); none mapped when absent. */
  eventMappings?: () => EventMappings;
  /** Spans for each batch (DRAWDOWN_OTLP_TRACES_ENDPOINT); without it, a batch's traceparent is only passed on. */
  tracer?: RoleTracer | undefined;
}

export function ingestRoutes(deps: IngestDeps): Route[] {
  const now = deps.now ?? Date.now;
  async function postEvents(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const stopTimer = deps.metrics.duration.startTimer();
    // A header read, and a copy onto each part: the trace costs nothing more unless spans are exported.
    const { traceparent, tracestate } = req.headers;
    const incoming = traceparent === undefined ? undefined : incomingTrace(traceparent, tracestate);
    const span = deps.tracer === undefined ? undefined : startServerSpan(deps.tracer, req, incoming);
    try {
      const format = batchFormat(req.headers['content-type']);
      checkContentEncoding(req.headers['content-encoding']);
      const keyHeader = req.headers['idempotency-key'];
      const idempotencyKey = Array.isArray(keyHeader) ? keyHeader[0] : keyHeader;
      if (idempotencyKey !== undefined && !idempotencyKeyPattern.test(idempotencyKey)) {
        throw new DrawdownError('idempotency_key_invalid', 'Idempotency-Key must be 1–128 printable ASCII characters');
      }
      const body = await readBody(req, deps.limits.bodyBytesMax, deps.limits.bodyTimeoutMs);
      const receivedMs = now();
      const catalogRevision = deps.catalogRevision();
      const window = { receivedMs, lateMs: deps.limits.lateMs, skewMs: deps.limits.skewMs };
      const { partitions } = deps.publisher;
      // Each customer's events go to one partition (for event-id dedupe); the
      // client's bytes are copied, never re-encoded, on the hot path. A
      // MessagePack batch is first tried on the one-pass scanner, which proves
      // it valid without building objects; anything it is unsure of takes the
      // full decoder and validator, which also words the 422.
      const scanned =
        format === 'msgpack'
          ? scanValidBatch(body, deps.meters, window, deps.limits.batchEventsMax, partitions)
          : undefined;
      let events: number;
      let parts: BatchPart[];
      if (scanned !== undefined) {
        events = scanned.count;
        parts = routeScanned(body, scanned);
      } else {
        const raw = expectEventArray(decodeBatch(body, format), deps.limits.batchEventsMax);
        validateEvents(raw, deps.meters, window);
        if (raw.length === 0) {
          deps.metrics.batches.inc({ outcome: 'empty' });
          sendJson(res, 202, { accepted: 0, duplicate: false });
          return;
        }
        events = raw.length;
        parts = routeBatch(body, format, raw, partitions);
      }
      const publish = (trace: PartTrace | undefined): Promise<PublishResult> =>
        deps.publisher.publish(parts, format, receivedMs, idempotencyKey, catalogRevision, body, trace);
      const result =
        span === undefined
          ? await publish(incoming)
          : await publishInSpan(deps.tracer!, span, deps.publisher.streamName, parts.length, events, incoming, publish);
      deps.metrics.batches.inc({ outcome: result.duplicate ? 'duplicate' : 'accepted' });
      if (!result.duplicate) {
        deps.metrics.events.inc(events);
        deps.metrics.batchSize.observe(events);
      }
      sendJson(res, 202, {
        accepted: events,
        duplicate: result.duplicate,
        sequence: result.sequence,
        parts: result.parts,
      });
    } catch (error) {
      deps.metrics.batches.inc({ outcome: error instanceof DrawdownError ? error.code : 'internal' });
      if (span !== undefined) {
        const problem = problemFor(error);
        span.setAttributes({ 'http.response.status_code': problem.status, 'error.type': problem.code });
        // A server span fails on 5xx only: a refused batch is the client's error, not the server's.
        if (problem.status >= 500) span.fail(problem.code);
      }
      throw error;
    } finally {
      stopTimer();
      if (span !== undefined) {
        // Answered here (202, the empty batch included); a refusal is answered by the router and set above.
        if (res.headersSent) span.setAttributes({ 'http.response.status_code': res.statusCode });
        span.end();
      }
    }
  }
  return [
    { method: 'POST', path: /^\/v1\/events$/, scope: 'ingest', handler: postEvents },
    // OpenMeter's ingest route, so an OpenMeter client can send here (ingest/cloudevents-route.ts).
    { method: 'POST', path: /^\/api\/v1\/events$/, scope: 'ingest', handler: cloudEventsHandler(deps) },
  ];
}

/**
 * The request's server span, under the caller's traceparent. Without a
 * valid one it starts a new trace, whose id the request's log lines then carry.
 */
function startServerSpan(tracer: RoleTracer, req: IncomingMessage, trace: IncomingTrace | undefined): TraceSpan {
  const span = tracer.startSpan('POST /v1/events', {
    kind: 'server',
    parent: trace === undefined ? undefined : { remote: trace.parent, tracestate: trace.tracestate },
    attributes: { 'http.request.method': 'POST', 'http.route': '/v1/events', 'url.path': '/v1/events' },
  });
  if (trace === undefined) setRequestTraceId(req, span.traceId);
  return span;
}

/** The publish as a producer span; the parts carry its traceparent, so the rater's spans hang under it. */
async function publishInSpan(
  tracer: RoleTracer,
  server: TraceSpan,
  streamName: string,
  parts: number,
  events: number,
  incoming: PartTrace | undefined,
  publish: (trace: PartTrace) => Promise<PublishResult>,
): Promise<PublishResult> {
  const span = tracer.startSpan(`publish ${streamName}`, {
    kind: 'producer',
    parent: { local: server },
    attributes: {
      'messaging.system': 'nats',
      'messaging.operation.type': 'send',
      'messaging.destination.name': streamName,
      'messaging.batch.message_count': parts,
      'drawdown.events': events,
    },
  });
  try {
    const result = await publish({ traceparent: span.traceparent, tracestate: incoming?.tracestate });
    span.setAttributes({ 'drawdown.duplicate': result.duplicate, 'drawdown.stream_sequence': result.sequence });
    return result;
  } catch (error) {
    span.fail(problemFor(error).code);
    throw error;
  } finally {
    span.end();
  }
}
