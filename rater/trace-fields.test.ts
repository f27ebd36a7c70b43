import type { JsMsg } from '@nats-io/jetstream';
import { describe, expect, it } from 'vitest';
import { messageTraceFields, messagesTraceFields, traceIdsPerLine } from './trace-fields.js';

/** A stream message as the rater sees it: only its headers matter here. */
function message(traceparent?: string): JsMsg {
  return {
    headers: { get: (name: string) => (name === 'traceparent' ? (traceparent ?? '') : '') },
  } as unknown as JsMsg;
}
const traceId = (i: number): string => i.toString(16).padStart(32, 'a');
const traced = (i: number): JsMsg => message(`00-${traceId(i)}-00f067aa0ba902b7-01`);

describe('trace fields of rater log lines', () => {
  it('given one message, then its line carries its trace id, or nothing when it came without a valid one', () => {
    expect(messageTraceFields(traced(1))).toEqual({ trace_id: traceId(1) });
    expect(messageTraceFields(message())).toEqual({});
    expect(messageTraceFields(message('00-nonsense'))).toEqual({});
  });

  it('given a flush whose traced batches share one trace, then its line carries that trace_id', () => {
    expect(messagesTraceFields([traced(1), message(), traced(1)])).toEqual({ trace_id: traceId(1) });
    expect(messagesTraceFields([message(), message()])).toEqual({});
  });

  it('given a flush of many traces, then its line lists them in stream order, at most traceIdsPerLine, and counts the rest', () => {
    expect(messagesTraceFields([traced(2), traced(1), traced(2)])).toEqual({ trace_ids: [traceId(2), traceId(1)] });
    const many = Array.from({ length: traceIdsPerLine + 5 }, (_, i) => traced(i + 1));
    const fields = messagesTraceFields(many);
    expect(fields.trace_ids).toEqual(many.slice(0, traceIdsPerLine).map((_, i) => traceId(i + 1)));
    expect(fields.trace_ids_omitted).toBe(5);
  });
});
