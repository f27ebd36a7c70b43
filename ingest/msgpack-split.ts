/**
 * Where each event of a MessagePack array starts and ends, without decoding
 * it, so the gateway can route events to partitions by copying their bytes
 * rather than re-encoding them:
 *
 *   body:    [ array header | event 0 | event 1 | ... | event n-1 ]
 *   offsets: [ start0, start1, ..., end(n-1) ]          (n + 1 entries)
 *
 * The body has already been decoded by msgpackr, so it is well formed; the
 * scanner still checks every length against the buffer and never recurses
 * (a count of values still to skip replaces the call stack), so a hostile
 * body cannot overflow the stack or read past the end.
 */
import type { MeterDefinitions } from '../catalog/model.js';
import { DrawdownError } from '../shared/errors.js';
import { eventLimits, type TimestampWindow } from '../shared/events/event.js';
import { parseQuantity } from '../shared/quantity.js';
import {
  bytesEqual,
  byteKey,
  type ByteKey,
  decimalTextOk,
  F_CUSTOMER,
  F_ID,
  F_METER,
  F_QUANTITY,
  F_TIMESTAMP,
  fieldOf,
  hostileKeyBytes,
  isAscii,
  keyEquals,
  numberAt,
  rangesEqual,
  requiredFields,
  scanCursor,
  strAt,
} from '../shared/events/scan.js';
import { customerByte } from '../shared/events/customer.js';

/** msgpackr's record-definition extension: bodies using it are re-encoded, not sliced (see route.ts). */
export const msgpackrRecordExtension = 0x72;

/**
 * Either every element's offsets, or `usesRecords`: the body uses msgpackr's
 * records, whose references are followed by bare field values — not standard
 * MessagePack framing — so scanning stops at the first record definition.
 */
export type ElementOffsets = { offsets: Uint32Array; usesRecords: false } | { offsets: undefined; usesRecords: true };

function malformed(): DrawdownError {
  return new DrawdownError('body_malformed', 'body is not a well-formed MessagePack array');
}

export function arrayElementOffsets(b: Uint8Array): ElementOffsets {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const end = b.length;
  const need = (at: number, bytes: number): void => {
    if (at + bytes > end) throw malformed();
  };
  let pos = 0;
  need(pos, 1);
  const head = b[pos++]!;
  let count: number;
  if (head >= 0x90 && head <= 0x9f) count = head & 0x0f;
  else if (head === 0xdc) {
    need(pos, 2);
    count = view.getUint16(pos);
    pos += 2;
  } else if (head === 0xdd) {
    need(pos, 4);
    count = view.getUint32(pos);
    pos += 4;
  } else throw malformed();
  // Each element takes at least one byte, so a count beyond what is left is a lie.
  if (count > end - pos) throw malformed();

  const offsets = new Uint32Array(count + 1);
  offsets[0] = pos;
  for (let i = 0; i < count; i++) {
    let pending = 1;
    while (pending > 0) {
      pending--;
      need(pos, 1);
      const t = b[pos++]!;
      if (t <= 0x7f || t >= 0xe0) continue; // fixints
      if (t <= 0x8f) {
        pending += 2 * (t & 0x0f);
        continue;
      }
      if (t <= 0x9f) {
        pending += t & 0x0f;
        continue;
      }
      if (t <= 0xbf) {
        pos += t & 0x1f;
        continue;
      }
      switch (t) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break;
        case 0xcc:
        case 0xd0:
          pos += 1;
          break;
        case 0xcd:
        case 0xd1:
          pos += 2;
          break;
        case 0xca:
        case 0xce:
        case 0xd2:
          pos += 4;
          break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          pos += 8;
          break;
        case 0xc4: // bin 8
        case 0xd9: // str 8
          need(pos, 1);
          pos += 1 + b[pos]!;
          break;
        case 0xc5:
        case 0xda:
          need(pos, 2);
          pos += 2 + view.getUint16(pos);
          break;
        case 0xc6:
        case 0xdb:
          need(pos, 4);
          pos += 4 + view.getUint32(pos);
          break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8: {
          // fixext 1, 2, 4, 8, 16: type byte, then data.
          need(pos, 1);
          if (b[pos] === msgpackrRecordExtension) return { offsets: undefined, usesRecords: true };
          pos += 1 + (1 << (t - 0xd4));
          break;
        }
        case 0xc7:
        case 0xc8:
        case 0xc9: {
          const lengthBytes = 1 << (t - 0xc7);
          need(pos, lengthBytes + 1);
          const length = lengthBytes === 1 ? b[pos]! : lengthBytes === 2 ? view.getUint16(pos) : view.getUint32(pos);
          if (b[pos + lengthBytes] === msgpackrRecordExtension) return { offsets: undefined, usesRecords: true };
          pos += lengthBytes + 1 + length;
          break;
        }
        case 0xdc:
          need(pos, 2);
          pending += view.getUint16(pos);
          pos += 2;
          break;
        case 0xdd:
          need(pos, 4);
          pending += view.getUint32(pos);
          pos += 4;
          break;
        case 0xde:
          need(pos, 2);
          pending += 2 * view.getUint16(pos);
          pos += 2;
          break;
        case 0xdf:
          need(pos, 4);
          pending += 2 * view.getUint32(pos);
          pos += 4;
          break;
        default: // 0xc1 is never used
          throw malformed();
      }
      if (pos > end) throw malformed();
    }
    offsets[i + 1] = pos;
  }
  if (pos !== end) throw malformed();
  return { offsets, usesRecords: false };
}

/** A MessagePack array header for `count` elements. */
export function arrayHeader(count: number): Uint8Array {
  if (count < 16) return Uint8Array.of(0x90 | count);
  if (count < 0x10000) return Uint8Array.of(0xdc, count >>> 8, count & 0xff);
  return Uint8Array.of(0xdd, count >>> 24, (count >>> 16) & 0xff, (count >>> 8) & 0xff, count & 0xff);
}

/*
 * The gateway's fast path: one pass over a MessagePack batch that proves
 * every event valid (the same rules as shared/events/event.ts parseEvent) without
 * building any object, and notes where each event ends and which partition
 * its customer maps to. It only ever answers "valid" or "not sure":
 * anything unusual — a problem, a non-ASCII string, a float32, a string or
 * extension timestamp, a duplicate key, records — returns undefined and the
 * caller runs the full decoder and validator, which also words the 422. So
 * the fast path can be stricter than the rules, never looser.
 */

/** Defined meters' keys as bytes, rebuilt whenever the (live, mutable) definitions change. */
let meterCache: { source: MeterDefinitions; signature: string; keys: ByteKey[] } | undefined;

function meterKeys(meters: MeterDefinitions): ByteKey[] {
  const names = Object.keys(meters);
  const signature = names.join('\n');
  if (meterCache !== undefined && meterCache.source === meters && meterCache.signature === signature)
    return meterCache.keys;
  // A key with non-ASCII characters is simply never matched: its events take the full path.
  const keys = names.filter((n) => /^[\x00-\x7f]*$/.test(n)).map(byteKey);
  meterCache = { source: meters, signature, keys };
  return keys;
}

/** Scratch for one event's dimension keys: (start, length) of each, at most eventLimits.dimensionKeysMax. */
const dimensionKeys = new Uint32Array(2 * eventLimits.dimensionKeysMax);

export interface ScannedBatch {
  count: number;
  /** Where each event starts, then where the last ends (count + 1 entries). */
  offsets: Uint32Array;
  /** Each event's partition (route.ts partitionOfCustomer of its customer). */
  partitionOf: Uint16Array;
  /** Every event maps to partitionOf[0]. */
  single: boolean;
}

export function scanValidBatch(
  b: Uint8Array,
  meters: MeterDefinitions,
  window: TimestampWindow,
  eventsMax: number,
  partitions: number,
): ScannedBatch | undefined {
  const end = b.length;
  if (end < 2) return undefined;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const head = b[0]!;
  let pos: number;
  let count: number;
  if (head >= 0x91 && head <= 0x9f) {
    count = head & 0x0f;
    pos = 1;
  } else if (head === 0xdc && end >= 3) {
    count = view.getUint16(1);
    pos = 3;
  } else if (head === 0xdd && end >= 5) {
    count = view.getUint32(1);
    pos = 5;
  } else return undefined;
  if (count === 0 || count > eventsMax || count > end - pos) return undefined;
  const keys = meterKeys(meters);
  const oldestMs = window.receivedMs - window.lateMs;
  const newestMs = window.receivedMs + window.skewMs;
  const offsets = new Uint32Array(count + 1);
  const partitionOf = new Uint16Array(count);
  const powerOfTwoMask = (partitions & (partitions - 1)) === 0 ? partitions - 1 : -1;
  offsets[0] = pos;
  let single = true;
  for (let i = 0; i < count; i++) {
    if (pos >= end) return undefined;
    const mapType = b[pos]!;
    let fields: number;
    // msgpackr writes every object as a map16, other encoders as a fixmap.
    if (mapType >= 0x81 && mapType <= 0x86) {
      fields = mapType & 0x0f;
      pos++;
    } else if (mapType === 0xde && pos + 3 <= end) {
      fields = view.getUint16(pos + 1);
      if (fields < 1 || fields > 6) return undefined;
      pos += 3;
    } else return undefined;
    let seen = 0;
    let hash = 0x811c9dc5; // fnvOffsetBasis
    for (let f = 0; f < fields; f++) {
      if (pos >= end) return undefined;
      const keyType = b[pos]!;
      if (keyType < 0xa0 || keyType > 0xbf) return undefined;
      const keyLength = keyType & 0x1f;
      if (pos + 1 + keyLength >= end) return undefined;
      const field = fieldOf(b, view, pos + 1, keyLength);
      if (field === 0 || (seen & field) !== 0) return undefined;
      seen |= field;
      pos += 1 + keyLength;
      switch (field) {
        case F_ID: {
          const length = strAt(b, view, pos, end);
          if (length < 1 || length > eventLimits.idLengthMax || !isAscii(b, scanCursor.strStart, length))
            return undefined;
          pos = scanCursor.strStart + length;
          break;
        }
        case F_CUSTOMER: {
          const length = strAt(b, view, pos, end);
          if (length < 1 || length > eventLimits.customerLengthMax) return undefined;
          const start = scanCursor.strStart;
          const stop = start + length;
          for (let at = start; at < stop; at++) {
            const c = b[at]!;
            if (c >= 0x80 || customerByte[c] === 0) return undefined;
            // FNV-1a over the id's code units (ASCII: its bytes), as partitionOfCustomer.
            // fnvStep (shared/events/partition.ts) written out with its literals: a
            // call or a module constant here costs the scan ~5 % (bench/hot-path.ts);
            // partition.test.ts and the routing property tests hold them equal.
            hash = Math.imul(hash ^ c, 0x01000193);
          }
          pos = stop;
          break;
        }
        case F_METER: {
          const length = strAt(b, view, pos, end);
          if (length < 0) return undefined;
          let known = false;
          for (const key of keys) {
            if (keyEquals(b, view, scanCursor.strStart, length, key)) {
              known = true;
              break;
            }
          }
          if (!known) return undefined;
          pos = scanCursor.strStart + length;
          break;
        }
        case F_QUANTITY: {
          const length = strAt(b, view, pos, end);
          if (length >= 0) {
            if (!decimalTextOk(b, scanCursor.strStart, length)) return undefined;
            pos = scanCursor.strStart + length;
            break;
          }
          const value = numberAt(b, view, pos, end);
          if (Number.isNaN(value)) return undefined;
          // Integers below 2^53 always pass; a float64 takes the rules' own parser.
          if (b[pos] === 0xcb && !parseQuantity(value).ok) return undefined;
          pos = scanCursor.numberEnd;
          break;
        }
        case F_TIMESTAMP: {
          const value = numberAt(b, view, pos, end);
          if (!Number.isSafeInteger(value) || value < oldestMs || value > newestMs) return undefined;
          pos = scanCursor.numberEnd;
          break;
        }
        default: {
          // dimensions: a map of ≤ 16 string → string, keys ≤ 64 and not hostile, values ≤ 128.
          const t = b[pos]!;
          let entries: number;
          if (t >= 0x80 && t <= 0x8f) {
            entries = t & 0x0f;
            pos++;
          } else if (t === 0xde && pos + 3 <= end) {
            entries = view.getUint16(pos + 1);
            pos += 3;
          } else return undefined;
          if (entries > eventLimits.dimensionKeysMax) return undefined;
          let keyBits = 0;
          for (let d = 0; d < entries; d++) {
            if (pos >= end) return undefined;
            const keyLength = strAt(b, view, pos, end);
            if (
              keyLength < 0 ||
              keyLength > eventLimits.dimensionKeyLengthMax ||
              !isAscii(b, scanCursor.strStart, keyLength)
            )
              return undefined;
            const keyStart = scanCursor.strStart;
            for (const hostile of hostileKeyBytes) if (bytesEqual(b, keyStart, keyLength, hostile)) return undefined;
            // A repeated key: the full path refuses the batch, naming it. Keys are compared only when
            // their bit (from length and first byte) is already set: most dimension keys differ in both.
            const bit = 1 << (((keyLength === 0 ? 0 : b[keyStart]!) ^ (keyLength << 2)) & 31);
            if ((keyBits & bit) !== 0) {
              for (let e = 0; e < d; e++)
                if (rangesEqual(b, dimensionKeys[2 * e]!, dimensionKeys[2 * e + 1]!, keyStart, keyLength))
                  return undefined;
            }
            keyBits |= bit;
            dimensionKeys[2 * d] = keyStart;
            dimensionKeys[2 * d + 1] = keyLength;
            pos = keyStart + keyLength;
            if (pos >= end) return undefined;
            const valueLength = strAt(b, view, pos, end);
            if (
              valueLength < 0 ||
              valueLength > eventLimits.dimensionValueLengthMax ||
              !isAscii(b, scanCursor.strStart, valueLength)
            )
              return undefined;
            pos = scanCursor.strStart + valueLength;
          }
        }
      }
    }
    if ((seen & requiredFields) !== requiredFields) return undefined;
    // A power-of-two count (the default 4) takes a mask, not a division per event; both give the same partition.
    const partition = powerOfTwoMask >= 0 ? hash & powerOfTwoMask : (hash >>> 0) % partitions;
    partitionOf[i] = partition;
    if (partition !== partitionOf[0]) single = false;
    offsets[i + 1] = pos;
  }
  if (pos !== end) return undefined;
  return { count, offsets, partitionOf, single };
}
