import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  asciiBytes,
  byteKey,
  bytesEqual,
  F_CUSTOMER,
  F_DIMENSIONS,
  F_ID,
  F_METER,
  F_QUANTITY,
  F_TIMESTAMP,
  fieldOf,
  isAscii,
  keyEquals,
} from './scan.js';

const fields: [string, number][] = [
  ['id', F_ID],
  ['customer', F_CUSTOMER],
  ['meter', F_METER],
  ['quantity', F_QUANTITY],
  ['timestamp', F_TIMESTAMP],
  ['dimensions', F_DIMENSIONS],
];

/** `text`'s bytes at offset `at` of a larger buffer, as the scanners see a key inside a batch. */
function placed(bytes: Uint8Array, at = 3): { b: Uint8Array; view: DataView } {
  const b = new Uint8Array(at + bytes.length + 5).fill(0x7a);
  b.set(bytes, at);
  return { b, view: new DataView(b.buffer) };
}

describe('fieldOf (word-at-a-time field names)', () => {
  it('names every event field', () => {
    for (const [name, field] of fields) {
      const { b, view } = placed(asciiBytes(name));
      expect(fieldOf(b, view, 3, name.length)).toBe(field);
    }
  });

  it('rejects every single-byte change of every field name, at every position', () => {
    for (const [name] of fields) {
      const bytes = asciiBytes(name);
      for (let position = 0; position < bytes.length; position++) {
        for (let value = 0; value < 256; value++) {
          if (value === bytes[position]) continue;
          const changed = Uint8Array.from(bytes);
          changed[position] = value;
          const { b, view } = placed(changed);
          expect(fieldOf(b, view, 3, changed.length), `${name} with byte ${position} = ${value}`).toBe(0);
        }
      }
    }
  });

  it('rejects a field name cut short or run long', () => {
    for (const [name] of fields) {
      for (const text of [name.slice(0, -1), `${name}s`, `x${name}`]) {
        const { b, view } = placed(asciiBytes(text));
        expect(fieldOf(b, view, 3, text.length), text).toBe(0);
      }
    }
  });

  it('agrees with a plain comparison for random keys', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 31 }), fc.nat({ max: 7 }), (bytes, at) => {
        const { b, view } = placed(bytes, at);
        const expected = fields.find(([name]) => bytesEqual(b, at, bytes.length, asciiBytes(name)))?.[1] ?? 0;
        expect(fieldOf(b, view, at, bytes.length)).toBe(expected);
      }),
      { numRuns: 20_000 },
    );
  });
});

describe('keyEquals (word-at-a-time meter keys)', () => {
  const text = fc.string({ unit: fc.integer({ min: 0, max: 127 }).map((c) => String.fromCharCode(c)), maxLength: 40 });

  it('agrees with bytesEqual, at any offset, for keys of every length', () => {
    fc.assert(
      fc.property(text, text, fc.nat({ max: 7 }), (key, candidate, at) => {
        const bytes = asciiBytes(candidate);
        const { b, view } = placed(bytes, at);
        expect(keyEquals(b, view, at, bytes.length, byteKey(key))).toBe(
          bytesEqual(b, at, bytes.length, asciiBytes(key)),
        );
      }),
      { numRuns: 20_000 },
    );
  });

  it('finds a key equal to itself and misses it after any one-byte change', () => {
    for (const key of ['images', 'gpt-4o.input_tokens', 'dall-e-3.images', 'a', 'abcd', 'abcde']) {
      const bytes = asciiBytes(key);
      const same = placed(bytes);
      expect(keyEquals(same.b, same.view, 3, bytes.length, byteKey(key))).toBe(true);
      for (let position = 0; position < bytes.length; position++) {
        const changed = Uint8Array.from(bytes);
        changed[position] = bytes[position]! ^ 0x01;
        const { b, view } = placed(changed);
        expect(keyEquals(b, view, 3, changed.length, byteKey(key)), `${key} at ${position}`).toBe(false);
      }
    }
  });
});

describe('isAscii', () => {
  it('is false exactly when some byte in the range is 0x80 or above', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat({ max: 64 }), fc.nat({ max: 64 }), (bytes, from, length) => {
        const at = Math.min(from, bytes.length);
        const n = Math.min(length, bytes.length - at);
        expect(isAscii(bytes, at, n)).toBe(bytes.subarray(at, at + n).every((c) => c < 0x80));
      }),
    );
  });
});
