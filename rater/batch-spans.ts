/**
 * The rater's spans, when spans are exported (shared/tracing.ts). Each
 * batch taken from the stream gets a consumer span under the traceparent it
 * carries, open from delivery until its flush is acknowledged (or it is let
 * go to be delivered again); each flush that wrote traced batches gets a
 * client span for the ClickHouse insert, linked to every batch span it
 * covers (at most `flushLinksMax`), and a child of theirs when they share
 * one trace. The rater starts no trace: a batch sent without a traceparent
 * (and through a gateway not exporting spans) has no span here.
 */
import type { JsMsg } from '@nats-io/jetstream';
import { batchHeaders } from '../shared/nats/stream.js';
import { parseTraceparent } from '../shared/trace-context.js';
import type { RoleTracer, TraceSpan } from '../shared/tracing.js';

/** The OpenTelemetry SDK's own default link limit per span. */
const flushLinksMax = 128;

export class BatchSpans {
  readonly #tracer: RoleTracer;
  readonly #partition: number;
  readonly #subject: string;
  /** Spans of batches taken and not yet acknowledged or let go. */
  readonly #open = new Map<JsMsg, TraceSpan>();

  constructor(tracer: RoleTracer, partition: number, subject: string) {
    this.#tracer = tracer;
    this.#partition = partition;
    this.#subject = subject;
  }

  taken(message: JsMsg): void {
    const parent = parseTraceparent(message.headers?.get(batchHeaders.traceparent));
    if (parent === undefined) return;
    const tracestate = message.headers?.get(batchHeaders.tracestate) || undefined;
    const span = this.#tracer.startSpan(`process ${this.#subject}`, {
      kind: 'consumer',
      parent: { remote: parent, tracestate },
      attributes: {
        'messaging.system': 'nats',
        'messaging.operation.type': 'process',
        'messaging.destination.name': this.#subject,
        'drawdown.partition': this.#partition,
        'drawdown.stream_sequence': message.seq,
        'drawdown.events': Number(message.headers?.get(batchHeaders.events) || '0'),
      },
    });
    this.#open.set(message, span);
  }

  /** A batch that could not be decoded: skipped, acked with its flush, and its span says why. */
  undecodable(message: JsMsg, reason: string): void {
    this.#open.get(message)?.fail(`undecodable: ${reason}`);
  }

  /** The flush's span, or undefined when none of its batches is traced. */
  startFlush(messages: readonly JsMsg[], flushSeq: number, rows: number): TraceSpan | undefined {
    const batches: TraceSpan[] = [];
    for (const message of messages) {
      const span = this.#open.get(message);
      if (span !== undefined) batches.push(span);
    }
    if (batches.length === 0) return undefined;
    const oneTrace = batches.every((span) => span.traceId === batches[0]!.traceId);
    return this.#tracer.startSpan('INSERT usage_minute', {
      kind: 'client',
      parent: oneTrace ? { local: batches[0]! } : undefined,
      links: batches.slice(0, flushLinksMax),
      attributes: {
        'db.system.name': 'clickhouse',
        'db.operation.name': 'INSERT',
        'db.collection.name': 'usage_minute',
        'drawdown.partition': this.#partition,
        'drawdown.flush_seq': flushSeq,
        'drawdown.rows': rows,
        'drawdown.messages': messages.length,
      },
    });
  }

  /** Ends the spans of `messages`: acknowledged, or (with a reason) let go to be delivered again. */
  finish(messages: readonly JsMsg[], failure?: string): void {
    for (const message of messages) {
      const span = this.#open.get(message);
      if (span === undefined) continue;
      if (failure !== undefined) span.fail(failure);
      span.end();
      this.#open.delete(message);
    }
  }

  /** The loop starts over from the watermark: every open batch will be delivered again. */
  abandonAll(reason: string): void {
    this.finish([...this.#open.keys()], reason);
  }
}
