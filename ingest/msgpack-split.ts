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
import { DrawdownError } from '../shared/errors.js';

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
