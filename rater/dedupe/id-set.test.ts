import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hashEventId } from './id-hash.js';
import { IdSet } from './id-set.js';

function fingerprint(customer: string, id: string): [number, number, number] {
  const out = new Uint32Array(3);
  hashEventId(customer, id, out, 0);
  return [out[0]!, out[1]!, out[2]!];
}

describe('IdSet', () => {
  it('says an id is new once and a duplicate every time after', () => {
    const set = IdSet.create(100);
    const f = fingerprint('acme', 'evt-1');
    expect(set.add(...f)).toBe(true);
    expect(set.add(...f)).toBe(false);
    expect(set.add(...f)).toBe(false);
    expect(set.has(...f)).toBe(true);
    expect(set.has(...fingerprint('acme', 'evt-2'))).toBe(false);
    expect(set.size).toBe(1);
  });

  it('always remembers at least the last idsPerGeneration ids, and never more than twice that', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 0, max: 1_000 }), (window, added) => {
        const set = IdSet.create(window);
        for (let i = 0; i < added; i++) expect(set.add(...fingerprint('c', `id-${i}`))).toBe(true);
        for (let i = Math.max(0, added - window); i < added; i++)
          expect(set.has(...fingerprint('c', `id-${i}`))).toBe(true);
        expect(set.size).toBeGreaterThanOrEqual(Math.min(added, window));
        expect(set.size).toBeLessThan(2 * window);
        // Ids older than two windows are forgotten: a repeat of one is counted again.
        if (added >= 2 * window + 1) expect(set.has(...fingerprint('c', 'id-0'))).toBe(false);
      }),
      { numRuns: 200 },
    );
  });

  it('answers exactly like two rotating generations of a plain Set, for any mix of new ids, repeats and clears', () => {
    // Fingerprints are drawn from a small universe whose middle words crowd
    // a few home slots (and the last one, so probing wraps around): long
    // probe chains, and rotations forgetting ids that were pushed along them.
    const crowdedH1 = [0, 1, 0x7fffffff, 0xfffffffe, 0xffffffff];
    const fingerprintOf = (n: number): [number, number, number] => [
      ((n + 1) * 2654435761) >>> 0,
      n % 3 === 0 ? crowdedH1[n % crowdedH1.length]! : (n * 40503 + 17) >>> 0,
      n,
    ];
    const op = fc.oneof(
      { weight: 20, arbitrary: fc.record({ kind: fc.constant('add' as const), n: fc.integer({ min: 0, max: 400 }) }) },
      { weight: 5, arbitrary: fc.record({ kind: fc.constant('has' as const), n: fc.integer({ min: 0, max: 400 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const), n: fc.constant(0) }) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), fc.array(op, { maxLength: 600 }), (window, ops) => {
        const set = IdSet.create(window);
        let current = new Set<number>();
        let previous = new Set<number>();
        for (const { kind, n } of ops) {
          const f = fingerprintOf(n);
          const held = current.has(n) || previous.has(n);
          if (kind === 'has') {
            expect(set.has(...f)).toBe(held);
          } else if (kind === 'clear') {
            set.clear();
            current = new Set();
            previous = new Set();
          } else {
            // A prefetch is only a hint: with or without it, the answers are the model's.
            if (n % 2 === 0) set.prefetch(Uint32Array.from(f), 1);
            expect(set.add(...f)).toBe(!held);
            if (!held) {
              current.add(n);
              if (current.size >= window) [previous, current] = [current, new Set()];
            }
          }
          expect(set.size).toBe(current.size + previous.size);
        }
        for (let n = 0; n <= 400; n++) expect(set.has(...fingerprintOf(n))).toBe(current.has(n) || previous.has(n));
      }),
      { numRuns: 300 },
    );
  });

  it('takes fixed memory, decided at creation: 32–64 bytes per id', () => {
    for (const window of [1_000, 100_000, 1_000_000]) {
      const set = IdSet.create(window);
      expect(set.buffer.byteLength).toBe(IdSet.bytesFor(window));
      expect(set.buffer.byteLength / window).toBeGreaterThanOrEqual(32);
      expect(set.buffer.byteLength / window).toBeLessThanOrEqual(64 + 1);
      for (let i = 0; i < 3 * window; i += 97) set.add(...fingerprint('c', String(i)));
      expect(set.buffer.byteLength).toBe(IdSet.bytesFor(window));
    }
  });

  it('is the same memory when attached elsewhere, and refuses a hand-over it was not given', () => {
    const owner = IdSet.create(10);
    const f = fingerprint('acme', 'shared');
    owner.add(...f);
    const next = owner.release();
    const other = IdSet.attach(owner.buffer);
    other.acquire(next);
    expect(other.has(...f)).toBe(true);
    expect(() => other.acquire(next + 1)).toThrow(/two owners/);
  });

  it('forgets everything on clear', () => {
    const set = IdSet.create(10);
    const f = fingerprint('acme', 'x');
    set.add(...f);
    set.clear();
    expect(set.size).toBe(0);
    expect(set.add(...f)).toBe(true);
  });
});

describe('hashEventId', () => {
  it('depends on every character of customer and id, and on where one ends and the other starts', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 128 }),
        fc.string({ minLength: 1, maxLength: 128 }),
        fc.nat(),
        fc.integer({ min: 1, max: 0xffff }),
        (customer, id, at, delta) => {
          const i = at % id.length;
          const changed = id.slice(0, i) + String.fromCharCode((id.charCodeAt(i) + delta) % 0x10000) + id.slice(i + 1);
          expect(fingerprint(customer, changed)).not.toEqual(fingerprint(customer, id));
          expect(fingerprint(customer + id[0], id.slice(1))).not.toEqual(fingerprint(customer, id));
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('gives 500,000 distinct ids 500,000 distinct fingerprints, never a zero first word', () => {
    const seen = new Set<string>();
    const out = new Uint32Array(3);
    let zeroFirstWords = 0;
    for (let i = 0; i < 500_000; i++) {
      hashEventId(`customer-${i % 97}`, `evt-${i}`, out, 0);
      if (out[0] === 0) zeroFirstWords++;
      seen.add(`${out[0]}:${out[1]}:${out[2]}`);
    }
    expect(zeroFirstWords).toBe(0);
    expect(seen.size).toBe(500_000);
  });
});
