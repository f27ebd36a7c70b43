/**
 * The log engine's per-process retention of closed holds (closed-retention.ts):
 * a record is found in its account until it is past retention or beyond the
 * count, and never after; an account left without records is reported once.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClosedHold } from './hold-account.js';
import { ClosedRetention, type RecordHome } from './closed-retention.js';

interface Home extends RecordHome {
  name: string;
}

function record(id: string, closedMs: number): ClosedHold {
  return { id, fp: 'fp', status: 'released', amount: '1', remaining: '1', createdMs: closedMs - 10, closedMs };
}

describe('closed hold retention', () => {
  it('drops records closed at or before the floor, oldest first, and reports each emptied account', () => {
    const retention = new ClosedRetention<Home>();
    const a: Home = { name: 'a', closed: undefined };
    const b: Home = { name: 'b', closed: undefined };
    retention.keep(a, record('a1', 100));
    retention.keep(b, record('b1', 150));
    retention.keep(a, record('a2', 200));
    const emptied: string[] = [];
    expect(retention.forget(100, 10, (home) => emptied.push(home.name))).toBe(0);
    expect([...a.closed!.keys()]).toEqual(['a2']);
    expect(b.closed?.get('b1')?.closedMs).toBe(150);
    expect(retention.forget(150, 10, (home) => emptied.push(home.name))).toBe(0);
    expect(b.closed).toBeUndefined();
    expect(emptied).toEqual(['b']);
    expect(retention.size).toBe(1);
  });

  it('beyond the count drops the oldest still within retention, and counts them', () => {
    const retention = new ClosedRetention<Home>();
    const a: Home = { name: 'a', closed: undefined };
    for (let i = 0; i < 5; i++) retention.keep(a, record(`r${i}`, 1_000 + i));
    expect(retention.forget(0, 3, () => {})).toBe(2);
    expect([...a.closed!.keys()]).toEqual(['r2', 'r3', 'r4']);
  });

  it('keeps a newer record of the same id when the older one leaves', () => {
    const retention = new ClosedRetention<Home>();
    const a: Home = { name: 'a', closed: undefined };
    retention.keep(a, record('same', 100));
    const newer = record('same', 300);
    retention.keep(a, newer);
    const emptied: string[] = [];
    retention.forget(200, 10, (home) => emptied.push(home.name));
    expect(a.closed?.get('same')).toBe(newer);
    expect(emptied).toEqual([]);
  });

  it('finds exactly the records within retention and the count, through any number of compactions', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 40 }), fc.boolean()), {
          maxLength: 12_000,
        }),
        fc.integer({ min: 1, max: 5_000 }),
        (steps, recordsMax) => {
          const retention = new ClosedRetention<Home>();
          const homes: Home[] = [0, 1, 2, 3].map((i) => ({ name: String(i), closed: undefined }));
          const kept: { home: Home; record: ClosedHold }[] = [];
          let nowMs = 0;
          let n = 0;
          for (const [home, advance, forget] of steps) {
            nowMs += advance;
            const r = record(`id${n++}`, nowMs);
            retention.keep(homes[home]!, r);
            kept.push({ home: homes[home]!, record: r });
            if (forget) retention.forget(nowMs - 5_000, recordsMax, () => {});
          }
          const floorMs = nowMs - 5_000;
          retention.forget(floorMs, recordsMax, () => {});
          // What should be left: the newest recordsMax records that closed after the floor (arrival is time order).
          const expected = kept.filter(({ record: r }) => r.closedMs > floorMs).slice(-recordsMax);
          expect(retention.size).toBe(expected.length);
          const found = homes.flatMap((home) => [...(home.closed?.values() ?? [])]);
          expect(new Set(found)).toEqual(new Set(expected.map(({ record: r }) => r)));
        },
      ),
      { numRuns: 60 },
    );
  });
});
