import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fnv1a, fnvOffsetBasis, fnvStep, partitionOfCustomer, partitionOfHash } from './partition.js';

describe('the customer → partition mapping (never to change once data exists)', () => {
  it('is FNV-1a 32-bit: the published test vectors', () => {
    // From the FNV reference (isthe.com/chongo/tech/comp/fnv, test vectors for FNV-1a 32).
    expect(fnv1a('')).toBe(0x811c9dc5);
    expect(fnv1a('a')).toBe(0xe40c292c);
    expect(fnv1a('foobar')).toBe(0xbf9cf968);
  });

  it('maps fixed customer ids to fixed partitions for 1, 2, 3, 8 and 16 partitions', () => {
    const pinned: [string, number, number, number, number][] = [
      // customer, then its partition with 2, 3, 8 and 16 partitions: (FNV-1a mod n).
      ['a', 0xe40c292c % 2, 0xe40c292c % 3, 0xe40c292c % 8, 0xe40c292c % 16],
      ['foobar', 0xbf9cf968 % 2, 0xbf9cf968 % 3, 0xbf9cf968 % 8, 0xbf9cf968 % 16],
    ];
    for (const [customer, p2, p3, p8, p16] of pinned) {
      expect([1, 2, 3, 8, 16].map((n) => partitionOfCustomer(customer, n))).toEqual([0, p2, p3, p8, p16]);
    }
    // Ids of the demo and the tests: their hash and partitions with 2 and 4 partitions, as stored data has them.
    const ids = ['acme', 'studio', 'c0', 'c1', 'cust-42', 'user@example.com'];
    expect(ids.map((c) => fnv1a(c))).toEqual([0x45fd71af, 0xbf5fcd03, 0x8729de46, 0x8829dfd9, 0x53bff3fb, 0xddaa05fb]);
    expect(ids.map((c) => [partitionOfCustomer(c, 2), partitionOfCustomer(c, 4)])).toEqual([
      [1, 3],
      [1, 3],
      [0, 2],
      [1, 1],
      [1, 3],
      [1, 3],
    ]);
  });

  it('gives the same partition folded step by step (as the byte scanners do) as from the whole id', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9._:@-]{1,128}$/),
        fc.integer({ min: 1, max: 64 }),
        (customer, partitions) => {
          let h = fnvOffsetBasis;
          for (const byte of Buffer.from(customer, 'ascii')) h = fnvStep(h, byte);
          expect(partitionOfHash(h, partitions)).toBe(partitionOfCustomer(customer, partitions));
        },
      ),
    );
  });
});
