import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { batchFingerprint } from './batch-fingerprint.js';

describe('batch fingerprints', () => {
  it('are the same for the same bytes wherever they sit in memory (aligned or not)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 7 }), (bytes, offset) => {
        const shifted = new Uint8Array(bytes.length + offset);
        shifted.set(bytes, offset);
        expect(batchFingerprint(shifted.subarray(offset))).toBe(batchFingerprint(bytes));
      }),
    );
  });

  it('change when any single byte changes, at any position, including the unaligned tail', () => {
    const base = Uint8Array.from({ length: 67 }, (_, i) => (i * 37) & 0xff);
    const seen = new Set([batchFingerprint(base)]);
    for (let at = 0; at < base.length; at++) {
      for (const delta of [1, 0x80]) {
        const changed = base.slice();
        changed[at] = changed[at]! ^ delta;
        seen.add(batchFingerprint(changed));
      }
    }
    expect(seen.size).toBe(1 + base.length * 2);
  });

  it('tell apart bodies that differ only in length or by swapped words', () => {
    const a = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    const swapped = Uint8Array.from([5, 6, 7, 8, 1, 2, 3, 4, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    expect(batchFingerprint(a)).not.toBe(batchFingerprint(swapped));
    expect(batchFingerprint(a)).not.toBe(batchFingerprint(a.subarray(0, 19)));
    expect(batchFingerprint(new Uint8Array(0))).not.toBe(batchFingerprint(new Uint8Array(1)));
  });
});
