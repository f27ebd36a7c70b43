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

// Version 00 is exactly these 55 characters; a later version keeps the layout and may add fields after a dash.
const version00 = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const laterVersion = /^(?!00|ff)[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$/;
const zeroTraceId = '0'.repeat(32);
const zeroParentId = '0'.repeat(16);

/**
 * `traceparent` as sent, or undefined when absent or not a valid header:
 * a repeated header (Node joins the copies with a comma) is invalid too, as
 * the spec has it. Uppercase hex, version ff and all-zero ids are refused.
 */
export function parseTraceparent(header: string | string[] | undefined | null): TraceParent | undefined {
  if (typeof header !== 'string' || !(version00.test(header) || laterVersion.test(header))) return undefined;
  const traceId = header.slice(3, 35);
  const parentId = header.slice(36, 52);
  if (traceId === zeroTraceId || parentId === zeroParentId) return undefined;
  return { traceId, parentId, flags: Number.parseInt(header.slice(53, 55), 16) };
}

/** What drawdown forwards of `tracestate`: at most this many characters, 32 list members (the spec's limit). */
export const tracestateLengthMax = 512;
const tracestateMembersMax = 32;
const printableAscii = /^[\x20-\x7e]*$/;
const hasMember = /[^ ,]/;

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
  // The usual header: short, few members — carried exactly as sent.
  if (joined.length <= tracestateLengthMax && withinMembers(joined) && hasMember.test(joined)) return joined;
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

function withinMembers(text: string): boolean {
  let commas = 0;
  for (let at = text.indexOf(','); at >= 0; at = text.indexOf(',', at + 1))
    if (++commas >= tracestateMembersMax) return false;
  return true;
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
  // A version 00 header is already the form drawdown forwards.
  const header = traceparentHeader as string;
  const traceparent = header.startsWith('00-') ? header : formatTraceparent(parent);
  return { parent, traceparent, tracestate: boundTracestate(tracestateHeader) };
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
