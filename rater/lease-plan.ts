/**
 * Which partition leases a rater should take and which it should hand back,
 * from what it sees in the lease bucket (rater/leases.ts). Pure: no clock,
 * no I/O, so every balancing rule is tested by itself (lease-plan.test.ts).
 *
 *   live members (each `auto` or an explicit list) + current leases + mine
 *     ─▶ { acquire, release }
 *
 * - A rater with an explicit list wants exactly those partitions: it takes
 *   each one that is free (or whose lease expired) and never hands one back.
 * - `auto` raters share the partitions no live explicit-list rater claims:
 *   sorted by id, with n of them and q partitions to share, the first q mod n
 *   own ⌈q/n⌉ and the others ⌊q/n⌋. A rater over its share hands the extra
 *   back; one under it takes free or expired ones. A partition a live
 *   explicit-list rater claims is handed back by an `auto` rater holding it.
 * - Taking is only ever of a free or expired lease: a live holder is never
 *   pre-empted; it hands back by itself when it sees it holds too many.
 */

export type Wants = 'auto' | readonly number[];

export interface LeaseMember {
  id: string;
  wants: Wants;
}

export interface SeenLease {
  owner: string;
  /** Its holder has not renewed it for a whole TTL, judged on this rater's clock (leases.ts). */
  expired: boolean;
}

export interface PlanInput {
  self: LeaseMember;
  partitions: number;
  /** Raters seen alive, self included or not (self is always counted). */
  members: readonly LeaseMember[];
  /** Lease of each partition that has one; absent means free. */
  leases: ReadonlyMap<number, SeenLease>;
  /** Partitions this rater holds and runs (or is starting). */
  held: ReadonlySet<number>;
  /** Partitions this rater is handing back: neither taken again nor counted as held. */
  releasing: ReadonlySet<number>;
}

export interface Plan {
  acquire: number[];
  release: number[];
}

/** The partitions `auto` raters share, and this rater's share of them, in the order it prefers them. */
export function autoShare(
  selfId: string,
  partitions: number,
  members: readonly LeaseMember[],
): { pool: number[]; quota: number; preferred: number[] } {
  const claimed = new Set<number>();
  for (const member of members)
    if (member.id !== selfId && member.wants !== 'auto') for (const p of member.wants) claimed.add(p);
  const pool: number[] = [];
  for (let p = 0; p < partitions; p++) if (!claimed.has(p)) pool.push(p);
  const autos = [...new Set([selfId, ...members.filter((m) => m.wants === 'auto').map((m) => m.id)])].sort();
  const n = autos.length;
  const index = autos.indexOf(selfId);
  const quota = Math.floor(pool.length / n) + (index < pool.length % n ? 1 : 0);
  // Each rater starts looking at its own slice of the pool, so raters taking
  // free partitions at once mostly ask for different ones (CAS settles the rest).
  const offset = pool.length === 0 ? 0 : (index * Math.ceil(pool.length / n)) % pool.length;
  const preferred = [...pool.slice(offset), ...pool.slice(0, offset)];
  return { pool, quota, preferred };
}

export function planLeases(input: PlanInput): Plan {
  const { self, partitions, leases, held, releasing } = input;
  const takeable = (p: number): boolean => {
    if (held.has(p) || releasing.has(p)) return false;
    const lease = leases.get(p);
    return lease === undefined || lease.expired;
  };
  if (self.wants !== 'auto') {
    const wanted = new Set(self.wants);
    const acquire = [...wanted].filter((p) => p < partitions && takeable(p)).sort((a, b) => a - b);
    const release = [...held].filter((p) => !wanted.has(p));
    return { acquire, release: release.sort((a, b) => a - b) };
  }
  const { pool, quota, preferred } = autoShare(self.id, partitions, input.members);
  const inPool = new Set(pool);
  const release = [...held].filter((p) => !inPool.has(p));
  // Kept in preference order, so the ones handed back are the ones this rater wants least.
  const keep = preferred.filter((p) => held.has(p));
  if (keep.length > quota) release.push(...keep.slice(quota));
  const acquire: number[] = [];
  for (const p of preferred) {
    if (keep.length + acquire.length >= quota) break;
    if (takeable(p)) acquire.push(p);
  }
  return { acquire, release: release.sort((a, b) => a - b) };
}
