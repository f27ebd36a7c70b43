/**
 * A 96-bit fingerprint of (customer, event id): the first three words of
 * MurmurHash3 x86_128 over the UTF-16 code units of `customer \0 id` (two
 * code units per 32-bit word). Customers cannot contain \0, so the pair is
 * unambiguous. 96 bits keep accidental collisions negligible: with a million
 * ids remembered, a new id is mistaken for a remembered one with probability
 * about 10^6 / 2^95 ≈ 2.5 × 10^-23. The hash is not cryptographic; a client
 * that engineered a collision could only get one of its own customers'
 * events dropped (ids are compared within a customer's partition).
 *
 * The first word always has its low bit set, so an all-zero slot can mean
 * "empty" in the id set.
 */

const c1 = 0x239b961b;
const c2 = 0xab0e9789;
const c3 = 0x38b34ae5;
const c4 = 0xa1e38b93;
const seed = 0x9747b28c;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

// `customer \0 id` as words of two code units: ids and customers are at most 128 each.
let scratch = new Uint32Array(130);

/** Writes the fingerprint's three words to out[at], out[at + 1], out[at + 2]. */
export function hashEventId(customer: string, id: string, out: Uint32Array, at: number): void {
  const key = `${customer}\u0000${id}`;
  const units = key.length;
  const words = (units + 1) >> 1;
  if (words > scratch.length) scratch = new Uint32Array(words);
  for (let w = 0; w < words; w++) {
    const i = w << 1;
    scratch[w] = key.charCodeAt(i) | (i + 1 < units ? key.charCodeAt(i + 1) << 16 : 0);
  }
  hashCodeUnits(scratch, units, out, at);
}

/**
 * The hash itself, over `units` UTF-16 code units packed two per word (the
 * first in the low half; an odd last word padded with zero). Shared by
 * hashEventId and the rater's byte-level fast path (rater/aggregate.ts), so
 * the fingerprints both write — persisted in dedupe_ids — are the same.
 */
export function hashCodeUnits(wordsOf: Uint32Array, units: number, out: Uint32Array, at: number): void {
  const words = (units + 1) >> 1;
  let h1 = seed;
  let h2 = seed;
  let h3 = seed;
  let h4 = seed;
  const blocks = words >> 2;
  for (let w = 0; w < blocks << 2; w += 4) {
    h1 ^= Math.imul(rotl(Math.imul(wordsOf[w]!, c1), 15), c2);
    h1 = (Math.imul((rotl(h1, 19) + h2) | 0, 5) + 0x561ccd1b) | 0;
    h2 ^= Math.imul(rotl(Math.imul(wordsOf[w + 1]!, c2), 16), c3);
    h2 = (Math.imul((rotl(h2, 17) + h3) | 0, 5) + 0x0bcaa747) | 0;
    h3 ^= Math.imul(rotl(Math.imul(wordsOf[w + 2]!, c3), 17), c4);
    h3 = (Math.imul((rotl(h3, 15) + h4) | 0, 5) + 0x96cd1c35) | 0;
    h4 ^= Math.imul(rotl(Math.imul(wordsOf[w + 3]!, c4), 18), c1);
    h4 = (Math.imul((rotl(h4, 13) + h1) | 0, 5) + 0x32ac3b17) | 0;
  }
  const tail = blocks << 2;
  const rest = words - tail;
  if (rest >= 3) h3 ^= Math.imul(rotl(Math.imul(wordsOf[tail + 2]!, c3), 17), c4);
  if (rest >= 2) h2 ^= Math.imul(rotl(Math.imul(wordsOf[tail + 1]!, c2), 16), c3);
  if (rest >= 1) h1 ^= Math.imul(rotl(Math.imul(wordsOf[tail]!, c1), 15), c2);

  const bytes = units * 2;
  h1 ^= bytes;
  h2 ^= bytes;
  h3 ^= bytes;
  h4 ^= bytes;
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h3 = fmix(h3);
  h4 = fmix(h4);
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  out[at] = h1 | 1;
  out[at + 1] = h2;
  out[at + 2] = h3;
}
