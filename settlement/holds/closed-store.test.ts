/**
 * The log engine's closed holds in typed arrays (closed-store.ts): against a
 * plain model of what it must do — find a record by (account, id) until it
 * leaves by age or by the bound, newest of an id wins, an account is told once
 * when its last record leaves — through growth, wrap-around and deletions.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClosedHold } from './hold-account.js';
import { ClosedStore, type RecordOwner } from './closed-store.js';

interface Owner extends RecordOwner {
  name: string;
}

const owner = (name: string): Owner => ({ name, recordOwner: -1, recordCount: 0 });

function record(id: string, closedMs: number, extra: Partial<ClosedHold> = {}): ClosedHold {
  return {
    id,
    fp: 'Ab_-09zZxY1',
    status: 'released',
    amount: '1',
    remaining: '0.25',
    createdMs: closedMs - 1_000,
    closedMs,
    ...extra,
  };
}

/** What the store must answer, kept the obvious way. */
class Model {
  readonly queue: { owner: Owner; record: ClosedHold }[] = [];
  readonly index = new Map<Owner, Map<string, ClosedHold>>();
  readonly counts = new Map<Owner, number>();
  readonly emptied: string[] = [];
  constructor(readonly max: number) {}
  keep(o: Owner, r: ClosedHold, floorMs: number): number {
    if (!/^[A-Za-z0-9_-]{1,16}$/.test(r.id) || this.max === 0) return 0;
    let forgotten = 0;
    if (this.queue.length === this.max) forgotten = this.evict(floorMs);
    this.queue.push({ owner: o, record: r });
    this.counts.set(o, (this.counts.get(o) ?? 0) + 1);
    if (!this.index.has(o)) this.index.set(o, new Map());
    this.index.get(o)!.set(r.id, r);
    return forgotten;
  }
  evict(floorMs: number): number {
    const { owner: o, record: r } = this.queue.shift()!;
    if (this.index.get(o)?.get(r.id) === r) this.index.get(o)!.delete(r.id);
    const left = this.counts.get(o)! - 1;
    this.counts.set(o, left);
    if (left === 0) this.emptied.push(o.name);
    return r.closedMs > floorMs ? 1 : 0;
  }
  forget(floorMs: number): void {
    while (this.queue.length > 0 && this.queue[0]!.record.closedMs <= floorMs) this.evict(floorMs);
  }
  get(o: Owner, id: string, floorMs: number): ClosedHold | undefined {
    const r = this.index.get(o)?.get(id);
    return r !== undefined && r.closedMs > floorMs ? r : undefined;
  }
}

const idChars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

describe('closed holds in typed arrays', () => {
  it('gives back every field as kept, packed or not', () => {
    const store = new ClosedStore<Owner>(100, () => {});
    const a = owner('a');
    const records = [
      record('abcdefghijklmnop', 1_764_640_000_123),
      record('A-_9zzzzzzzzzzzz', 5, { status: 'expired', amount: '123456789012345678.123456789', remaining: '0' }),
      // 37 characters: stored as the object itself.
      record('q', 6, { status: 'closed', remaining: '0.123456789012345678123456789012345' }),
      record('r', 7, { fp: 'a fingerprint that is no token' }),
    ];
    for (const r of records) store.keep(a, r, 0);
    for (const r of records) expect(store.get(a, r.id, 0)).toEqual(r);
    expect(store.get(owner('b'), 'abcdefghijklmnop', 0)).toBeUndefined();
    expect(store.get(a, 'abcdefghijklmnoq', 0)).toBeUndefined();
  });

  it('keeps no record whose id no hold id could be (nothing could look it up)', () => {
    const store = new ClosedStore<Owner>(100, () => {});
    const a = owner('a');
    store.keep(a, record('seventeen-chars-x', 1), 0);
    store.keep(a, record('not.a.token', 1), 0);
    expect(store.size).toBe(0);
    expect(a.recordOwner).toBe(-1);
  });

  it('answers as the model does, for any keeps, forgets and lookups', () => {
    const id = fc.string({ unit: fc.constantFrom(...idChars.slice(0, 6)), minLength: 1, maxLength: 3 });
    const step = fc.oneof(
      {
        weight: 8,
        arbitrary: fc.record({ kind: fc.constant('keep' as const), who: fc.nat(4), id, advance: fc.nat(30) }),
      },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('forget' as const), back: fc.nat(400) }) },
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 4_000 }), fc.integer({ min: 1, max: 2_500 }), (steps, max) => {
        const emptied: string[] = [];
        const store = new ClosedStore<Owner>(max, (o) => emptied.push(o.name));
        const model = new Model(max);
        const owners = [0, 1, 2, 3, 4].map((i) => owner(String(i)));
        const seen = new Set<string>();
        let nowMs = 1_000;
        for (const s of steps) {
          if (s.kind === 'keep') {
            nowMs += s.advance;
            const r = record(s.id, nowMs);
            const floorMs = nowMs - 300;
            expect(store.keep(owners[s.who]!, r, floorMs)).toBe(model.keep(owners[s.who]!, r, floorMs));
            seen.add(`${s.who}/${s.id}`);
          } else {
            store.forget(nowMs - s.back);
            model.forget(nowMs - s.back);
          }
          expect(store.size).toBe(model.queue.length);
        }
        expect(emptied).toEqual(model.emptied);
        for (const key of seen) {
          const [who, hold] = key.split('/') as [string, string];
          const o = owners[Number(who)]!;
          for (const floorMs of [0, nowMs - 200])
            expect(store.get(o, hold, floorMs)).toEqual(model.get(o, hold, floorMs));
        }
        for (const o of owners) expect(o.recordCount).toBe(model.counts.get(o) ?? 0);
      }),
      { numRuns: 150 },
    );
  });

  it('holds a million records across growth and wrap-around, each found until it leaves', () => {
    const store = new ClosedStore<Owner>(300_000, () => {});
    const accounts = Array.from({ length: 100 }, (_, i) => owner(String(i)));
    const idOf = (n: number) => n.toString(36).padStart(16, 'x');
    for (let n = 0; n < 1_000_000; n++) store.keep(accounts[n % 100]!, record(idOf(n), n), -1);
    expect(store.size).toBe(300_000);
    for (const n of [0, 699_999]) expect(store.get(accounts[n % 100]!, idOf(n), -1)).toBeUndefined();
    for (const n of [700_000, 850_001, 999_999]) expect(store.get(accounts[n % 100]!, idOf(n), -1)?.closedMs).toBe(n);
    // Wrong account, same id: not found.
    expect(store.get(accounts[1]!, idOf(700_000), -1)).toBeUndefined();
    store.forget(899_999);
    expect(store.size).toBe(100_000);
    expect(store.get(accounts[0]!, idOf(899_900), -1)).toBeUndefined();
    expect(store.get(accounts[0]!, idOf(900_000), -1)?.closedMs).toBe(900_000);
  });
});
