/**
 * A batch of events as it travels: the bytes the client sent (MessagePack or
 * JSON), decoded the same way by the gateway and by the rater's workers.
 */
import { Unpackr } from 'msgpackr';
import type { MeterDefinitions } from './catalog.js';
import { DrawdownError } from './errors.js';
import { parseEvent, type TimestampWindow, type UsageEvent } from './event.js';
import { Problems } from './validate.js';

export type BatchFormat = 'msgpack' | 'json';

// Standard MessagePack from any encoder; 64-bit integers beyond 2^53 become
// bigints so large integer quantities stay exact.
// ('auto' is supported by msgpackr 1.12 but missing from its type declarations.)
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'bigint' });
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Problems listed in one error response; validation stops once this many are found. */
export const problemsListedMax = 100;

/** Events nest three levels (batch → event → dimensions); anything far deeper is hostile. */
export const nestingDepthMax = 32;

/**
 * JSON.parse accepts arbitrarily deep nesting (it does not recurse on the
 * stack), so depth is checked on the bytes first; brackets inside strings do
 * not count. MessagePack needs no such pass: msgpackr recurses and a hostile
 * depth ends in a RangeError, caught below.
 */
function jsonDepthExceeds(bytes: Uint8Array, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

export function decodeBatch(bytes: Uint8Array, format: BatchFormat): unknown {
  if (format === 'json' && jsonDepthExceeds(bytes, nestingDepthMax)) {
    throw new DrawdownError('body_malformed', `body nests deeper than ${nestingDepthMax} levels`);
  }
  try {
    if (format === 'json') return JSON.parse(utf8.decode(bytes));
    return unpackr.unpack(bytes);
  } catch (cause) {
    // RangeError from deep nesting lands here too: it is bad input, not a crash.
    throw new DrawdownError('body_malformed', `body is not valid ${format === 'json' ? 'JSON' : 'MessagePack'}: ${(cause as Error).message}`, { cause });
  }
}

export function expectEventArray(decoded: unknown, eventsMax: number): unknown[] {
  if (!Array.isArray(decoded)) throw new DrawdownError('body_not_array', 'body must be an array of events');
  if (decoded.length > eventsMax) {
    throw new DrawdownError('batch_too_many_events', `batch has ${decoded.length} events; the limit is ${eventsMax}`);
  }
  return decoded;
}

/** Validates every event; the batch is accepted whole or rejected with every problem found (up to a limit). */
export function validateEvents(raw: readonly unknown[], meters: MeterDefinitions, window: TimestampWindow | undefined): UsageEvent[] {
  const problems = new Problems();
  const events: UsageEvent[] = [];
  for (let i = 0; i < raw.length; i++) {
    const event = parseEvent(raw[i], i, meters, window, problems);
    if (event) events.push(event);
    else if (problems.list.length >= problemsListedMax) break;
  }
  if (!problems.empty) {
    const listed = problems.list.slice(0, problemsListedMax);
    const first = listed[0]!;
    throw new DrawdownError('event_invalid', `event ${first.index} field ${first.field || '(event)'}: ${first.message}${listed.length > 1 ? ` (and ${listed.length - 1} more problem(s) listed)` : ''}`, {
      problems: listed,
    });
  }
  return events;
}
