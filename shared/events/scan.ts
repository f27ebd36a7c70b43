/**
 * Byte-level primitives for reading MessagePack events without decoding
 * them: the gateway's one-pass validator (ingest/msgpack-split.ts) and the
 * rater's scanning aggregator (rater/aggregate.ts) both stand on these, so a
 * field name, a string or a number is read the same way by both. Each
 * scanner keeps its own per-event loop on purpose (see ingest/README.md,
 * "Two scanners"), and scan-differential.test.ts feeds both the same
 * near-valid events.
 */
import { customerByte } from './customer.js';
import { quantityIntegerDigitsMax, quantityScale } from '../quantity.js';

export { customerByte };

export const F_ID = 1;
export const F_CUSTOMER = 2;
export const F_METER = 4;
export const F_QUANTITY = 8;
export const F_TIMESTAMP = 16;
export const F_DIMENSIONS = 32;
export const requiredFields = F_ID | F_CUSTOMER | F_METER | F_TIMESTAMP;

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
const word = (text: string, at: number): number =>
  ((text.charCodeAt(at) << 24) |
    (text.charCodeAt(at + 1) << 16) |
    (text.charCodeAt(at + 2) << 8) |
    text.charCodeAt(at + 3)) >>>
  0;
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
      // "timestamp"
      return view.getUint32(at) === wTime && view.getUint32(at + 4) === wStam && b[at + 8] === 0x70 ? F_TIMESTAMP : 0;
    case 10:
      return view.getUint32(at) === wDime &&
        view.getUint32(at + 4) === wNsio &&
        b[at + 8] === 0x6e &&
        b[at + 9] === 0x73
        ? F_DIMENSIONS
        : 0; // "dimensions"
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

/**
 * A quantity string the rules accept: digits[.digits], ≤ 18 significant integer digits, ≤ 9 fraction digits after
 * trailing zeros.
 */
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
