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

/** Writes the fingerprint's three words to out[at], out[at + 1], out[at + 2]. */
export function hashEventId(customer: string, id: string, out: Uint32Array, at: number): void {
  const key = `${customer}\u0000${id}`;
  const units = key.length;
  const words = (units + 1) >> 1;
  const word = (w: number): number => {
    const i = w << 1;
    return key.charCodeAt(i) | (i + 1 < units ? key.charCodeAt(i + 1) << 16 : 0);
  };
  let h1 = seed;
  let h2 = seed;
  let h3 = seed;
  let h4 = seed;
  const blocks = words >> 2;
  for (let b = 0; b < blocks; b++) {
    const w = b << 2;
    let k1 = word(w);
    let k2 = word(w + 1);
    let k3 = word(w + 2);
    let k4 = word(w + 3);
    k1 = Math.imul(rotl(Math.imul(k1, c1), 15), c2);
    h1 ^= k1;
    h1 = (Math.imul((rotl(h1, 19) + h2) | 0, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(rotl(Math.imul(k2, c2), 16), c3);
    h2 ^= k2;
    h2 = (Math.imul((rotl(h2, 17) + h3) | 0, 5) + 0x0bcaa747) | 0;
    k3 = Math.imul(rotl(Math.imul(k3, c3), 17), c4);
    h3 ^= k3;
    h3 = (Math.imul((rotl(h3, 15) + h4) | 0, 5) + 0x96cd1c35) | 0;
    k4 = Math.imul(rotl(Math.imul(k4, c4), 18), c1);
    h4 ^= k4;
    h4 = (Math.imul((rotl(h4, 13) + h1) | 0, 5) + 0x32ac3b17) | 0;
  }
  const tail = blocks << 2;
  const rest = words - tail;
  if (rest >= 3) h3 ^= Math.imul(rotl(Math.imul(word(tail + 2), c3), 17), c4);
  if (rest >= 2) h2 ^= Math.imul(rotl(Math.imul(word(tail + 1), c2), 16), c3);
  if (rest >= 1) h1 ^= Math.imul(rotl(Math.imul(word(tail), c1), 15), c2);

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
