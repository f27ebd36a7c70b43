/**
 * The `trace_id` on the rater's log lines: each stream message carries the
 * `traceparent` of the request that sent its batch (ingest/publisher.ts),
 * read here only when a line about the message is written.
 */
import type { JsMsg } from '@nats-io/jetstream';
import { batchHeaders } from '../shared/nats/stream.js';
import { parseTraceparent } from '../shared/trace-context.js';

/** Trace ids one line lists at most; a flush of more traces says how many it left out. */
export const traceIdsPerLine = 32;

export function messageTraceId(message: JsMsg): string | undefined {
  return parseTraceparent(message.headers?.get(batchHeaders.traceparent))?.traceId;
}

export interface TraceFields {
  trace_id?: string;
  trace_ids?: string[];
  trace_ids_omitted?: number;
}

/** Fields for a line about one message: its trace id, if it came with one. */
export function messageTraceFields(message: JsMsg): TraceFields {
  const traceId = messageTraceId(message);
  return traceId === undefined ? {} : { trace_id: traceId };
}

/**
 * Fields for a line about many messages (a flush): `trace_id` when every
 * traced batch among them belongs to one trace, as a batch sent alone does;
 * otherwise `trace_ids`, the distinct ids in stream order, at most
 * `traceIdsPerLine` of them, with `trace_ids_omitted` counting the rest, so
 * a line's size stays bounded however many batches a flush holds.
 */
export function messagesTraceFields(messages: readonly JsMsg[]): TraceFields {
  const ids = new Set<string>();
  for (const message of messages) {
    const traceId = messageTraceId(message);
    if (traceId !== undefined) ids.add(traceId);
  }
  if (ids.size === 0) return {};
  const [first] = ids;
  if (ids.size === 1) return { trace_id: first! };
  const listed = [...ids].slice(0, traceIdsPerLine);
  return ids.size > listed.length
    ? { trace_ids: listed, trace_ids_omitted: ids.size - listed.length }
    : { trace_ids: listed };
}
