/**
 * Which stream partition a customer's events go to: FNV-1a (32-bit) of the
 * customer id's UTF-16 code units (customer ids are ASCII, so: its bytes),
 * modulo the partition count. One partition per customer is what lets one
 * rater see all of a customer's event ids (dedupe) and what the exactly-once
 * record assumes.
 *
 * This mapping is part of the stored data's layout: it must never change,
 * and neither may DRAWDOWN_PARTITIONS once data exists (the count is
 * recorded and enforced at start-up: shared/nats/partition-layout.ts). The byte scanners of
 * the gateway and the rater fold the hash in while they read the id
 * (`fnvStep`), so every implementation shares these constants, and
 * partition.test.ts pins the mapping to FNV-1a's published test vectors.
 */
export const fnvOffsetBasis = 0x811c9dc5;
export const fnvPrime = 0x01000193;

/** One code unit folded into the hash (signed 32-bit; `>>> 0` gives the unsigned value). */
export function fnvStep(hash: number, codeUnit: number): number {
  return Math.imul(hash ^ codeUnit, fnvPrime);
}

/** FNV-1a of a string's code units, unsigned. */
export function fnv1a(text: string): number {
  let h = fnvOffsetBasis;
  for (let i = 0; i < text.length; i++) h = fnvStep(h, text.charCodeAt(i));
  return h >>> 0;
}

/** The partition of a hash folded with `fnvStep` from `fnvOffsetBasis`. */
export function partitionOfHash(hash: number, partitions: number): number {
  return partitions === 1 ? 0 : (hash >>> 0) % partitions;
}

export function partitionOfCustomer(customer: string, partitions: number): number {
  return partitions === 1 ? 0 : fnv1a(customer) % partitions;
}
