/**
 * The balancing rules of lease-plan.ts, given / when / then, and a
 * simulation: raters that each act on their own plan, round after round,
 * end up with every partition owned exactly once and shares that differ by
 * at most one, whatever joins or dies.
 */
import { describe, expect, it } from 'vitest';
import { autoShare, planLeases, type LeaseMember, type SeenLease, type Wants } from './lease-plan.js';
/** mulberry32, seeded: a failing trial can be replayed. */
import { prng } from '../test/harness.js';

const auto = (id: string): LeaseMember => ({ id, wants: 'auto' });
const leasesOf = (owners: Record<number, string>, expired: readonly number[] = []): Map<number, SeenLease> =>
  new Map(Object.entries(owners).map(([p, owner]) => [Number(p), { owner, expired: expired.includes(Number(p)) }]));
const none = new Set<number>();

describe('planLeases', () => {
  it('given one auto rater and no leases, when it plans, then it takes every partition', () => {
    const plan = planLeases({
      self: auto('a'),
      partitions: 4,
      members: [],
      leases: new Map(),
      held: none,
      releasing: none,
    });
    expect(plan).toEqual({ acquire: [0, 1, 2, 3], release: [] });
  });

  it('given a rater holding all 8 and a second one joining, when both plan, then the first hands back 4 and the second waits for them', () => {
    const members = [auto('a'), auto('b')];
    const leases = leasesOf({ 0: 'a', 1: 'a', 2: 'a', 3: 'a', 4: 'a', 5: 'a', 6: 'a', 7: 'a' });
    const a = planLeases({
      self: auto('a'),
      partitions: 8,
      members,
      leases,
      held: new Set([0, 1, 2, 3, 4, 5, 6, 7]),
      releasing: none,
    });
    expect(a.acquire).toEqual([]);
    expect(a.release).toHaveLength(4);
    // A live holder is never pre-empted: b takes nothing until a hands back.
    const b = planLeases({ self: auto('b'), partitions: 8, members, leases, held: none, releasing: none });
    expect(b).toEqual({ acquire: [], release: [] });
    // What a hands back is what b prefers, so one round settles it.
    const freed = leasesOf(
      Object.fromEntries([0, 1, 2, 3, 4, 5, 6, 7].filter((p) => !a.release.includes(p)).map((p) => [p, 'a'])),
    );
    const b2 = planLeases({ self: auto('b'), partitions: 8, members, leases: freed, held: none, releasing: none });
    expect(b2.acquire.sort()).toEqual(a.release);
  });

  it('given 8 partitions and 3 auto raters, then their shares are 3, 3 and 2', () => {
    const members = [auto('c'), auto('a'), auto('b')];
    expect(['a', 'b', 'c'].map((id) => autoShare(id, 8, members).quota)).toEqual([3, 3, 2]);
  });

  it('given a dead rater whose leases expired, when a survivor plans, then it takes them up to its new share', () => {
    // c died: only a and b are live; c's partitions 6 and 7 are expired, a holds 0-2, b holds 3-5.
    const leases = leasesOf({ 0: 'a', 1: 'a', 2: 'a', 3: 'b', 4: 'b', 5: 'b', 6: 'c', 7: 'c' }, [6, 7]);
    const members = [auto('a'), auto('b')];
    const a = planLeases({
      self: auto('a'),
      partitions: 8,
      members,
      leases,
      held: new Set([0, 1, 2]),
      releasing: none,
    });
    const b = planLeases({
      self: auto('b'),
      partitions: 8,
      members,
      leases,
      held: new Set([3, 4, 5]),
      releasing: none,
    });
    expect(a.acquire).toHaveLength(1);
    expect(b.acquire).toHaveLength(1);
    expect([...a.acquire, ...b.acquire].every((p) => p === 6 || p === 7)).toBe(true);
  });

  it('given a lease another rater holds and has not let expire, then it is never taken, not even to reach a share', () => {
    const plan = planLeases({
      self: auto('a'),
      partitions: 2,
      members: [],
      leases: leasesOf({ 0: 'ghost', 1: 'ghost' }),
      held: none,
      releasing: none,
    });
    expect(plan.acquire).toEqual([]);
  });

  it('given an explicit list, then it takes the free ones of its list only, waits for held ones, and never hands back', () => {
    const plan = planLeases({
      self: { id: 's', wants: [1, 2, 3] },
      partitions: 8,
      members: [auto('a')],
      leases: leasesOf({ 2: 'a', 3: 'a' }, [3]),
      held: none,
      releasing: none,
    });
    expect(plan).toEqual({ acquire: [1, 3], release: [] });
  });

  it('given a live explicit-list rater, then auto raters leave its partitions and share the rest', () => {
    const members = [auto('a'), { id: 's', wants: [0, 1] as Wants }];
    const plan = planLeases({
      self: auto('a'),
      partitions: 4,
      members,
      leases: leasesOf({ 0: 'a', 1: 'a', 2: 'a', 3: 'a' }),
      held: new Set([0, 1, 2, 3]),
      releasing: none,
    });
    expect(plan).toEqual({ acquire: [], release: [0, 1] });
  });

  it('given partitions being handed back, then they are neither taken again nor counted as held', () => {
    const plan = planLeases({
      self: auto('a'),
      partitions: 2,
      members: [],
      leases: new Map(),
      held: none,
      releasing: new Set([0]),
    });
    expect(plan).toEqual({ acquire: [1], release: [] });
  });
});

describe('raters acting on their own plans', () => {
  /** Rounds of: every live rater plans on the same view; releases then acquisitions apply, first come first served. */
  function settle(ids: string[], owners: Map<number, string>, partitions: number, rand: () => number): void {
    for (let round = 0; round < 20; round++) {
      const order = [...ids].sort(() => rand() - 0.5);
      const leases = new Map([...owners].map(([p, owner]) => [p, { owner, expired: !ids.includes(owner) }]));
      const members = ids.map(auto);
      const plans = order.map((id) => ({
        id,
        plan: planLeases({
          self: auto(id),
          partitions,
          members,
          leases,
          held: new Set([...owners].filter(([, o]) => o === id).map(([p]) => p)),
          releasing: none,
        }),
      }));
      for (const { plan } of plans) for (const p of plan.release) owners.delete(p);
      for (const { id, plan } of plans)
        for (const p of plan.acquire) {
          const current = owners.get(p);
          // The CAS: a free lease, or one whose owner is dead (expired), goes to the first to ask.
          if (current === undefined || (!ids.includes(current) && leases.get(p)?.owner === current)) owners.set(p, id);
        }
    }
  }

  it('given raters joining and dying in random order, then every partition ends owned once by a live rater, shares within one', () => {
    const rand = prng(17);
    for (let trial = 0; trial < 50; trial++) {
      const partitions = 1 + Math.floor(rand() * 16);
      let ids = Array.from({ length: 1 + Math.floor(rand() * 4) }, (_, i) => `r${trial}-${i}`);
      const owners = new Map<number, string>();
      settle(ids, owners, partitions, rand);
      // One dies, one joins.
      if (ids.length > 1) ids = ids.filter((_, i) => i !== Math.floor(rand() * ids.length));
      ids.push(`r${trial}-new`);
      settle(ids, owners, partitions, rand);
      expect([...owners.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: partitions }, (_, i) => i));
      expect([...owners.values()].every((o) => ids.includes(o))).toBe(true);
      const counts = ids.map((id) => [...owners.values()].filter((o) => o === id).length);
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    }
  });
});
