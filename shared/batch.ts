/**
 * A batch of events as it travels: the bytes the client sent (MessagePack or
 * JSON), decoded the same way by the gateway and by the rater's workers.
 */
import { Unpackr } from 'msgpackr';
import type { MeterDefinitions } from './events/meters.js';
import { DrawdownError, type FieldProblem } from './errors.js';
import { jsonStructure, msgpackDuplicateKeys } from './duplicate-keys.js';
import { parseEvent, type TimestampWindow, type UsageEvent } from './event.js';
import { quantityIntegerDigitsMax, quantityScale } from './quantity.js';
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
 * not count. msgpackr recurses, so a hostile depth ends in a RangeError,
 * caught below; a body it did decode is held to the same depth as JSON.
 *
 * Both decoders keep the last value of a repeated key without a word, so
 * repeated keys are found on the bytes too (shared/duplicate-keys.ts): for
 * JSON in the same pass as the depth, for MessagePack after msgpackr has
 * proved the body well formed.
 */
export function decodeBatch(bytes: Uint8Array, format: BatchFormat): unknown {
  let decoded: unknown;
  let duplicates: FieldProblem[];
  if (format === 'json') {
    const structure = jsonStructure(bytes, nestingDepthMax, problemsListedMax);
    if (structure.tooDeep) throw new DrawdownError('body_malformed', `body nests deeper than ${nestingDepthMax} levels`);
    decoded = parse(bytes, format);
    duplicates = structure.duplicates;
  } else {
    decoded = parse(bytes, format);
    const found = msgpackDuplicateKeys(bytes, nestingDepthMax, problemsListedMax);
    if (found === 'too_deep') throw new DrawdownError('body_malformed', `body nests deeper than ${nestingDepthMax} levels`);
    // msgpackr's bundled strings keep keys outside the maps: a body whose keys cannot be checked is not taken.
    if (found === 'unchecked') throw new DrawdownError('body_malformed', 'body uses msgpackr bundled strings, which are not accepted; send standard MessagePack');
    duplicates = found.duplicates;
    if (found.offsets !== undefined && Array.isArray(decoded)) walkedOffsets.set(decoded, { body: bytes, offsets: found.offsets });
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
    throw new DrawdownError('body_malformed', `body is not valid ${format === 'json' ? 'JSON' : 'MessagePack'}: ${(cause as Error).message}`, { cause });
  }
}

/** 400 body_malformed naming each repeated key, as event_invalid names each bad field. */
export function duplicateKeyError(problems: FieldProblem[]): DrawdownError {
  const first = problems[0]!;
  const where = first.index === undefined ? `field ${first.field}` : `event ${first.index} field ${first.field}`;
  return new DrawdownError('body_malformed', `${where}: ${first.message}${problems.length > 1 ? ` (and ${problems.length - 1} more problem(s) listed)` : ''}`, { problems });
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

/*
 * Byte-level scanning of standard MessagePack events, shared by the
 * gateway's fast path (ingest/msgpack-split.ts) and the rater's
 * (rater/aggregate.ts): the same rules as parseEvent, read straight from the
 * bytes for the common shapes (ASCII strings, integer or float64 numbers).
 * Each caller treats anything these do not recognise as "not sure" and
 * falls back to decodeBatch + validateEvents.
 */

export const F_ID = 1;
export const F_CUSTOMER = 2;
export const F_METER = 4;
export const F_QUANTITY = 8;
export const F_TIMESTAMP = 16;
export const F_DIMENSIONS = 32;
export const requiredFields = F_ID | F_CUSTOMER | F_METER | F_TIMESTAMP;

/** Bytes allowed in a customer id: [A-Za-z0-9._:@-] (shared/event.ts customerPattern). */
export const customerByte = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-') customerByte[c.charCodeAt(0)] = 1;

export const asciiBytes = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0));
export const hostileKeyBytes = ['__proto__', '__proto_', 'constructor', 'prototype'].map(asciiBytes);

export function bytesEqual(b: Uint8Array, at: number, length: number, expected: Uint8Array): boolean {
  if (length !== expected.length) return false;
  for (let i = 0; i < length; i++) if (b[at + i] !== expected[i]) return false;
  return true;
}

/** Whether b[a, a + aLength) and b[c, c + cLength) hold the same bytes. */
export function rangesEqual(b: Uint8Array, a: number, aLength: number, c: number, cLength: number): boolean {
  if (aLength !== cLength) return false;
  for (let i = 0; i < aLength; i++) if (b[a + i] !== b[c + i]) return false;
  return true;
}

/** An ASCII text to find in batches, with its big-endian 4-byte words for comparing a word at a time. */
export interface ByteKey {
  bytes: Uint8Array;
  words: Int32Array;
}

export function byteKey(text: string): ByteKey {
  const bytes = asciiBytes(text);
  const words = new Int32Array(bytes.length >>> 2);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let w = 0; w < words.length; w++) words[w] = view.getInt32(4 * w);
  return { bytes, words };
}

/** bytesEqual for a ByteKey: a word per step, then the last bytes. `view` is b's. */
export function keyEquals(b: Uint8Array, view: DataView, at: number, length: number, key: ByteKey): boolean {
  const { bytes, words } = key;
  if (length !== bytes.length) return false;
  for (let w = 0; w < words.length; w++) if (view.getInt32(at + 4 * w) !== words[w]) return false;
  for (let i = 4 * words.length; i < length; i++) if (b[at + i] !== bytes[i]) return false;
  return true;
}

export function isAscii(b: Uint8Array, at: number, length: number): boolean {
  // One test at the end instead of a branch per byte: strings here are short and almost always ASCII.
  let bits = 0;
  for (let i = at, end = at + length; i < end; i++) bits |= b[i]!;
  return bits < 0x80;
}


/** Big-endian words of the field names, compared four bytes at a time (fieldOf is run for every key of every event). */
const word = (text: string, at: number): number => ((text.charCodeAt(at) << 24) | (text.charCodeAt(at + 1) << 16) | (text.charCodeAt(at + 2) << 8) | text.charCodeAt(at + 3)) >>> 0;
const wCust = word('customer', 0);
const wOmer = word('customer', 4);
const wQuan = word('quantity', 0);
const wTity = word('quantity', 4);
const wMete = word('meter', 0);
const wTime = word('timestamp', 0);
const wStam = word('timestamp', 4);
const wDime = word('dimensions', 0);
const wNsio = word('dimensions', 4);

/** The event field (F_*) named by b[at, at + length), or 0: picked by length, then compared whole. */
export function fieldOf(b: Uint8Array, view: DataView, at: number, length: number): number {
  switch (length) {
    case 2:
      return b[at] === 0x69 && b[at + 1] === 0x64 ? F_ID : 0; // "id"
    case 5:
      return view.getUint32(at) === wMete && b[at + 4] === 0x72 ? F_METER : 0; // "meter"
    case 8: {
      const head = view.getUint32(at);
      const tail = view.getUint32(at + 4);
      if (head === wCust) return tail === wOmer ? F_CUSTOMER : 0;
      return head === wQuan && tail === wTity ? F_QUANTITY : 0;
    }
    case 9:
      return view.getUint32(at) === wTime && view.getUint32(at + 4) === wStam && b[at + 8] === 0x70 ? F_TIMESTAMP : 0; // "timestamp"
    case 10:
      return view.getUint32(at) === wDime && view.getUint32(at + 4) === wNsio && b[at + 8] === 0x6e && b[at + 9] === 0x73 ? F_DIMENSIONS : 0; // "dimensions"
    default:
      return 0;
  }
}

/** Set by strAt (where the string's bytes start) and numberAt (where the number ends). */
export const scanCursor = { strStart: 0, numberEnd: 0 };

/** Length of the string at `pos` (any str format), with scanCursor.strStart set; -1 if it is not a string. */
export function strAt(b: Uint8Array, view: DataView, pos: number, end: number): number {
  const t = b[pos]!;
  let length: number;
  if (t >= 0xa0 && t <= 0xbf) {
    length = t & 0x1f;
    scanCursor.strStart = pos + 1;
  } else if (t === 0xd9) {
    if (pos + 2 > end) return -1;
    length = b[pos + 1]!;
    scanCursor.strStart = pos + 2;
  } else if (t === 0xda) {
    if (pos + 3 > end) return -1;
    length = view.getUint16(pos + 1);
    scanCursor.strStart = pos + 3;
  } else return -1;
  return scanCursor.strStart + length > end ? -1 : length;
}


/**
 * A non-negative integer or float64 at `pos`, as msgpackr decodes it, with
 * scanCursor.numberEnd set; NaN for anything else (negative integers, float32, 64-bit
 * integers beyond 2^53, non-numbers), which the fast path does not take.
 */
export function numberAt(b: Uint8Array, view: DataView, pos: number, end: number): number {
  const t = b[pos]!;
  if (t <= 0x7f) {
    scanCursor.numberEnd = pos + 1;
    return t;
  }
  let size: number;
  switch (t) {
    case 0xcc:
    case 0xd0:
      size = 1;
      break;
    case 0xcd:
    case 0xd1:
      size = 2;
      break;
    case 0xce:
    case 0xd2:
      size = 4;
      break;
    case 0xcb:
    case 0xcf:
    case 0xd3:
      size = 8;
      break;
    default:
      return NaN;
  }
  if (pos + 1 + size > end) return NaN;
  scanCursor.numberEnd = pos + 1 + size;
  const at = pos + 1;
  switch (t) {
    case 0xcc:
      return b[at]!;
    case 0xcd:
      return view.getUint16(at);
    case 0xce:
      return view.getUint32(at);
    case 0xd0: {
      const v = view.getInt8(at);
      return v < 0 ? NaN : v;
    }
    case 0xd1: {
      const v = view.getInt16(at);
      return v < 0 ? NaN : v;
    }
    case 0xd2: {
      const v = view.getInt32(at);
      return v < 0 ? NaN : v;
    }
    case 0xcb:
      return view.getFloat64(at);
    default: {
      // uint64 / int64: exact as a number only below 2^53 (msgpackr 'auto' gives a bigint beyond).
      const high = view.getUint32(at);
      if (high >= 0x200000) return NaN;
      return high * 0x100000000 + view.getUint32(at + 4);
    }
  }
}

/** A quantity string the rules accept: digits[.digits], ≤ 18 significant integer digits, ≤ 9 fraction digits after trailing zeros. */
export function decimalTextOk(b: Uint8Array, at: number, length: number): boolean {
  const end = at + length;
  let i = at;
  while (i < end && b[i]! >= 0x30 && b[i]! <= 0x39) i++;
  const integerEnd = i;
  if (integerEnd === at) return false;
  let first = at;
  while (first < integerEnd - 1 && b[first] === 0x30) first++;
  if (integerEnd - first > quantityIntegerDigitsMax) return false;
  if (i === end) return true;
  if (b[i] !== 0x2e) return false;
  i++;
  const fractionStart = i;
  while (i < end && b[i]! >= 0x30 && b[i]! <= 0x39) i++;
  if (i !== end || i === fractionStart) return false;
  let last = end;
  while (last > fractionStart && b[last - 1] === 0x30) last--;
  return last - fractionStart <= quantityScale;
}

