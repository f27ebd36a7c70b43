/**
 * Optional span export over OTLP/HTTP (`DRAWDOWN_OTLP_TRACES_ENDPOINT`),
 * through the OpenTelemetry SDK. The SDK is imported only when export is
 * on, so a default process loads none of it; stages see the few calls
 * below, not the SDK. Nothing is registered globally: spans are started
 * under parents built from the `traceparent` a batch carries, never from an
 * ambient context, so the loops that span many batches cannot mix them up.
 *
 * Each role (drawdown-ingest, drawdown-rater, …) gets its own tracer
 * provider, so the all-in-one's spans still name the stage that made them.
 * Spans go out through a batch span processor: a bounded queue (2048 spans
 * unless OTEL_BSP_MAX_QUEUE_SIZE says otherwise; the SDK drops spans when
 * it is full) that a background timer exports, so an unreachable collector
 * costs memory up to that bound and never blocks a request.
 */
import type { Attributes, Context, Link, Span, SpanContext, Tracer } from '@opentelemetry/api';
import type { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { DrawdownError } from './errors.js';
import type { Logger } from './log.js';
import type { TraceParent } from './trace-context.js';

export type SpanKindName = 'server' | 'client' | 'producer' | 'consumer' | 'internal';

/** A remote parent (a batch's traceparent) or a span this process started. */
export type SpanParent = { remote: TraceParent; tracestate?: string | undefined } | { local: TraceSpan };

export interface SpanOptions {
  kind: SpanKindName;
  parent?: SpanParent | undefined;
  links?: readonly TraceSpan[];
  attributes?: Attributes;
}

export interface TraceSpan {
  readonly traceId: string;
  /** This span as a `traceparent`, for the next hop to continue the trace under. */
  readonly traceparent: string;
  setAttributes(attributes: Attributes): void;
  /** Marks the span failed (OpenTelemetry status ERROR) with a short reason. */
  fail(reason: string): void;
  end(): void;
}

export interface RoleTracer {
  startSpan(name: string, options: SpanOptions): TraceSpan;
}

export interface Tracing {
  /** The tracer of one role; `service` becomes the spans' service.name. */
  tracer(service: string): RoleTracer;
  /** Exports what is queued (bounded by the exporter's timeout) and stops. */
  shutdown(): Promise<void>;
}

/** Loads the SDK and starts exporting to `endpoint` (the full URL, e.g. http://collector:4318/v1/traces). */
export async function startTracing(endpoint: string, log: Logger): Promise<Tracing> {
  const [api, sdk, otlp, resources] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]).catch((cause: unknown) => {
    // An install slimmed of them still runs, without export; asked to export, it says what is missing.
    throw new DrawdownError(
      'config_invalid',
      `DRAWDOWN_OTLP_TRACES_ENDPOINT is set but the OpenTelemetry packages cannot be loaded (${(cause as Error).message}); install them or unset it`,
      { cause },
    );
  });
  // The SDK reports failed exports through its diagnostic logger; without one they would be silent.
  // Its messages can be whole serialised errors: one bounded line each.
  const report = (message: string): void => log.warn({ detail: message.slice(0, 500) }, 'trace export failed');
  api.diag.setLogger(
    {
      error: report,
      warn: report,
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    { logLevel: api.DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
  const kinds: Record<SpanKindName, number> = {
    server: api.SpanKind.SERVER,
    client: api.SpanKind.CLIENT,
    producer: api.SpanKind.PRODUCER,
    consumer: api.SpanKind.CONSUMER,
    internal: api.SpanKind.INTERNAL,
  };
  const spans = new WeakMap<TraceSpan, Span>();

  function parentContext(parent: SpanParent | undefined): Context {
    if (parent === undefined) return api.ROOT_CONTEXT;
    if ('local' in parent) {
      const span = spans.get(parent.local);
      return span === undefined ? api.ROOT_CONTEXT : api.trace.setSpan(api.ROOT_CONTEXT, span);
    }
    const { traceId, parentId, flags } = parent.remote;
    const context: SpanContext = { traceId, spanId: parentId, traceFlags: flags, isRemote: true };
    if (parent.tracestate !== undefined) context.traceState = api.createTraceState(parent.tracestate);
    return api.trace.setSpanContext(api.ROOT_CONTEXT, context);
  }

  function wrap(span: Span): TraceSpan {
    const context = span.spanContext();
    const flags = (context.traceFlags & 0xff).toString(16).padStart(2, '0');
    const handle: TraceSpan = {
      traceId: context.traceId,
      traceparent: `00-${context.traceId}-${context.spanId}-${flags}`,
      setAttributes: (attributes) => void span.setAttributes(attributes),
      fail: (reason) => void span.setStatus({ code: api.SpanStatusCode.ERROR, message: reason }),
      end: () => span.end(),
    };
    spans.set(handle, span);
    return handle;
  }

  const providers = new Map<string, BasicTracerProvider>();
  const tracers = new Map<string, Tracer>();
  function tracerFor(service: string): Tracer {
    let tracer = tracers.get(service);
    if (tracer === undefined) {
      const provider = new sdk.BasicTracerProvider({
        resource: resources.resourceFromAttributes({ 'service.name': service }),
        // Buffer sizes and the export delay keep the SDK's defaults, or its OTEL_BSP_* variables.
        spanProcessors: [new sdk.BatchSpanProcessor(new otlp.OTLPTraceExporter({ url: endpoint }))],
      });
      providers.set(service, provider);
      tracer = provider.getTracer('drawdown');
      tracers.set(service, tracer);
    }
    return tracer;
  }

  // Credentials or a query in the URL stay out of the log.
  const { origin, pathname } = new URL(endpoint);
  log.info({ endpoint: origin + pathname }, 'exporting traces over OTLP/HTTP');
  return {
    tracer(service) {
      const tracer = tracerFor(service);
      return {
        startSpan(name, options) {
          const links: Link[] = [];
          for (const linked of options.links ?? []) {
            const span = spans.get(linked);
            if (span !== undefined) links.push({ context: span.spanContext() });
          }
          const span = tracer.startSpan(
            name,
            { kind: kinds[options.kind], links, ...(options.attributes ? { attributes: options.attributes } : {}) },
            parentContext(options.parent),
          );
          return wrap(span);
        },
      };
    },
    async shutdown() {
      // The exporter's timeout (OTEL_EXPORTER_OTLP_TIMEOUT) bounds this; a collector away costs only the last spans.
      const results = await Promise.allSettled([...providers.values()].map((p) => p.shutdown()));
      for (const result of results)
        if (result.status === 'rejected') log.warn({ err: result.reason }, 'trace export: last spans not exported');
    },
  };
}
