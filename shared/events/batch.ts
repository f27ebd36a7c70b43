/**
 * A batch of events as it travels: the bytes the client sent (MessagePack or
 * JSON), decoded the same way by the gateway and by the rater's workers.
 */
import { Unpackr } from 'msgpackr';
import type { MeterDefinitions } from './meters.js';
import { DrawdownError, type FieldProblem } from '../errors.js';
import { jsonStructure, msgpackDuplicateKeys } from './duplicate-keys.js';
import { parseEvent, type TimestampWindow, type UsageEvent } from './event.js';
import { Problems } from '../validate.js';

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
 * not count. msgpackr recurses, so a hostile depth ends in a RangeError,
 * caught below; a body it did decode is held to the same depth as JSON.
 *
 * Both decoders keep the last value of a repeated key without a word, so
 * repeated keys are found on the bytes too (shared/events/duplicate-keys.ts): for
 * JSON in the same pass as the depth, for MessagePack after msgpackr has
 * proved the body well formed.
 */
export function decodeBatch(bytes: Uint8Array, format: BatchFormat): unknown {
  let decoded: unknown;
  let duplicates: FieldProblem[];
  if (format === 'json') {
    const structure = jsonStructure(bytes, nestingDepthMax, problemsListedMax);
    if (structure.tooDeep)
      throw new DrawdownError('body_malformed', `body nests deeper than ${nestingDepthMax} levels`);
    decoded = parse(bytes, format);
    duplicates = structure.duplicates;
  } else {
    decoded = parse(bytes, format);
    const found = msgpackDuplicateKeys(bytes, nestingDepthMax, problemsListedMax);
    if (found === 'too_deep')
      throw new DrawdownError('body_malformed', `body nests deeper than ${nestingDepthMax} levels`);
    // msgpackr's bundled strings keep keys outside the maps: a body whose keys cannot be checked is not taken.
    if (found === 'unchecked')
      throw new DrawdownError(
        'body_malformed',
        'body uses msgpackr bundled strings, which are not accepted; send standard MessagePack',
      );
    duplicates = found.duplicates;
    if (found.offsets !== undefined && Array.isArray(decoded))
      walkedOffsets.set(decoded, { body: bytes, offsets: found.offsets });
  }
  if (duplicates.length > 0) throw duplicateKeyError(duplicates);
  return decoded;
}

/** Element offsets the duplicate-key walk found, by the array decodeBatch returned for that body. */
const walkedOffsets = new WeakMap<object, { body: Uint8Array; offsets: Uint32Array }>();

/**
 * Where each event of `body` starts and ends (ingest/msgpack-split.ts
 * arrayElementOffsets), if decodeBatch already found them for `decoded`: the
 * gateway routes a batch it decoded without scanning it again.
 */
export function decodedElementOffsets(decoded: unknown, body: Uint8Array): Uint32Array | undefined {
  const walked = typeof decoded === 'object' && decoded !== null ? walkedOffsets.get(decoded) : undefined;
  return walked?.body === body ? walked.offsets : undefined;
}

function parse(bytes: Uint8Array, format: BatchFormat): unknown {
  try {
    if (format === 'json') return JSON.parse(utf8.decode(bytes));
    return unpackr.unpack(bytes);
  } catch (cause) {
    // RangeError from deep nesting lands here too: it is bad input, not a crash.
    throw new DrawdownError(
      'body_malformed',
      `body is not valid ${format === 'json' ? 'JSON' : 'MessagePack'}: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/** 400 body_malformed naming each repeated key, as event_invalid names each bad field. */
export function duplicateKeyError(problems: FieldProblem[]): DrawdownError {
  const first = problems[0]!;
  const where = first.index === undefined ? `field ${first.field}` : `event ${first.index} field ${first.field}`;
  return new DrawdownError(
    'body_malformed',
    `${where}: ${first.message}${problems.length > 1 ? ` (and ${problems.length - 1} more problem(s) listed)` : ''}`,
    { problems },
  );
}

export function expectEventArray(decoded: unknown, eventsMax: number): unknown[] {
  if (!Array.isArray(decoded)) throw new DrawdownError('body_not_array', 'body must be an array of events');
  if (decoded.length > eventsMax) {
    throw new DrawdownError('batch_too_many_events', `batch has ${decoded.length} events; the limit is ${eventsMax}`);
  }
  return decoded;
}

/** Validates every event; the batch is accepted whole or rejected with every problem found (up to a limit). */
export function validateEvents(
  raw: readonly unknown[],
  meters: MeterDefinitions,
  window: TimestampWindow | undefined,
): UsageEvent[] {
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
    throw new DrawdownError(
      'event_invalid',
      `event ${first.index} field ${first.field || '(event)'}: ${first.message}${listed.length > 1 ? ` (and ${listed.length - 1} more problem(s) listed)` : ''}`,
      {
        problems: listed,
      },
    );
  }
  return events;
}

/*
 * Byte-level scanning of standard MessagePack events, shared by the
 * gateway's fast path (ingest/msgpack-split.ts) and the rater's
 * (rater/aggregate.ts): the same rules as parseEvent, read straight from the
 * bytes for the common shapes (ASCII strings, integer or float64 numbers).
 * Each caller treats anything these do not recognise as "not sure" and
 * falls back to decodeBatch + validateEvents.
 */
