/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent`
 * and `tracestate` headers a client sends with a batch, read without any
 * tracing library so a process with trace export off pays a header read and
 * nothing more. A header that breaks the format is ignored, as the spec
 * says: no error for the client, no trace id in the logs.
 */
import type { IncomingMessage } from 'node:http';

export interface TraceParent {
  /** 32 lowercase hex digits, not all zero. */
  traceId: string;
  /** The caller's span: 16 lowercase hex digits, not all zero. */
  parentId: string;
  /** The trace flags byte (bit 0: sampled). */
  flags: number;
}

/**
 * The header as drawdown forwards it: version 00 whatever version came in,
 * since 00 is the format it parsed (the spec's rule for a newer version).
 */
export function formatTraceparent(trace: TraceParent): string {
  return `00-${trace.traceId}-${trace.parentId}-${trace.flags.toString(16).padStart(2, '0')}`;
}

const version00 = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
// A later version keeps the first four fields' layout and may add fields after another dash.
const laterVersion = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const allZero = /^0+$/;

/**
 * `traceparent` as sent, or undefined when absent or not a valid header:
 * a repeated header (Node joins the copies with a comma) is invalid too, as
 * the spec has it. Uppercase hex, version ff and all-zero ids are refused.
 */
export function parseTraceparent(header: string | string[] | undefined | null): TraceParent | undefined {
  if (typeof header !== 'string') return undefined;
  const value = header.trim();
  let traceId: string;
  let parentId: string;
  let flags: string;
  const v00 = version00.exec(value);
  if (v00 !== null) [, traceId, parentId, flags] = v00 as unknown as [string, string, string, string];
  else {
    const later = laterVersion.exec(value);
    if (later === null || later[1] === '00' || later[1] === 'ff') return undefined;
    [, , traceId, parentId, flags] = later as unknown as [string, string, string, string, string];
  }
  if (allZero.test(traceId) || allZero.test(parentId)) return undefined;
  return { traceId, parentId, flags: Number.parseInt(flags, 16) };
}

/** What drawdown forwards of `tracestate`: at most this many characters, 32 list members (the spec's limit). */
export const tracestateLengthMax = 512;
const tracestateMembersMax = 32;
const printableAscii = /^[\x20-\x7e]*$/;

/**
 * `tracestate` as it came (repeated headers joined with commas, which the
 * spec allows), cut to whole list members within 512 characters and 32
 * members; undefined when empty or holding anything but printable ASCII
 * (it travels on in NATS headers). Its members are other vendors' business:
 * they are not parsed further.
 */
export function boundTracestate(header: string | string[] | undefined | null): string | undefined {
  const joined = Array.isArray(header) ? header.join(',') : header;
  if (typeof joined !== 'string' || !printableAscii.test(joined)) return undefined;
  let out = '';
  let members = 0;
  for (const raw of joined.split(',')) {
    const member = raw.trim();
    if (member === '') continue;
    const next = out === '' ? member : `${out},${member}`;
    if (next.length > tracestateLengthMax || members === tracestateMembersMax) break;
    out = next;
    members++;
  }
  return out === '' ? undefined : out;
}

/** The trace a request came with: `traceparent` formatted for forwarding, `tracestate` only beside a valid one. */
export interface IncomingTrace {
  parent: TraceParent;
  traceparent: string;
  tracestate: string | undefined;
}

export function incomingTrace(
  traceparentHeader: string | string[] | undefined | null,
  tracestateHeader: string | string[] | undefined | null,
): IncomingTrace | undefined {
  const parent = parseTraceparent(traceparentHeader);
  if (parent === undefined) return undefined;
  return { parent, traceparent: formatTraceparent(parent), tracestate: boundTracestate(tracestateHeader) };
}

/**
 * The trace id a request's log lines carry: the one a handler started it
 * under (export on, no valid traceparent sent), else its `traceparent`'s.
 * Looked up only when a line is logged, so an unlogged request pays nothing.
 */
const startedTraces = new WeakMap<IncomingMessage, string>();

export function setRequestTraceId(req: IncomingMessage, traceId: string): void {
  startedTraces.set(req, traceId);
}

export function requestTraceId(req: IncomingMessage): string | undefined {
  return startedTraces.get(req) ?? parseTraceparent(req.headers.traceparent)?.traceId;
}
