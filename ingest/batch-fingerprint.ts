/**
 * A 128-bit fingerprint of a batch's bytes, so that a retry under an
 * Idempotency-Key can be told from a different batch sent under the same key
 * (ingest/key-claims.ts). Not a security hash: a client can only collide
 * with its own batches. Four MurmurHash3-style lanes over 32-bit words run
 * at a few GB/s in V8, several times SHA-256 here, and the gateway pays it on
 * every keyed batch.
 */
export function batchFingerprint(body: Uint8Array): string {
  // Word access needs 4-byte alignment; a body that is not aligned is copied once.
  const bytes = body.byteOffset % 4 === 0 ? body : new Uint8Array(body);
  const words = bytes.length >>> 2;
  const u32 = new Uint32Array(bytes.buffer, bytes.byteOffset, words);
  let a = 0x9e3779b1 ^ bytes.length;
  let b = 0x85ebca77;
  let c = 0xc2b2ae3d;
  let d = 0x27d4eb2f;
  let i = 0;
  // Each word is mixed on its own (MurmurHash3's k-mix) before it meets the
  // lane: a lane that only multiplied and rotated would let a flipped bit in
  // one word be cancelled by a flipped bit in a later one.
  const mix = (k: number, c1: number, c2: number, r: number): number => {
    k = Math.imul(k, c1);
    k = (k << r) | (k >>> (32 - r));
    return Math.imul(k, c2);
  };
  for (; i + 3 < words; i += 4) {
    a ^= mix(u32[i]!, 0x239b961b, 0xab0e9789, 15);
    a = Math.imul((a << 19) | (a >>> 13), 5) + 0x561ccd1b;
    b ^= mix(u32[i + 1]!, 0xab0e9789, 0x38b34ae5, 16);
    b = Math.imul((b << 17) | (b >>> 15), 5) + 0x0bcaa747;
    c ^= mix(u32[i + 2]!, 0x38b34ae5, 0xa1e38b93, 17);
    c = Math.imul((c << 15) | (c >>> 17), 5) + 0x96cd1c35;
    d ^= mix(u32[i + 3]!, 0xa1e38b93, 0x239b961b, 18);
    d = Math.imul((d << 13) | (d >>> 19), 5) + 0x32ac3b17;
  }
  // The last 0–15 bytes, one at a time, into the lane they would have reached.
  for (let at = i * 4; at < bytes.length; at++) {
    const k = mix(bytes[at]! | (at << 8), 0x239b961b, 0xab0e9789, 15);
    const lane = (at >>> 2) & 3;
    if (lane === 0) a = Math.imul(((a ^ k) << 19) | ((a ^ k) >>> 13), 5) + 0x561ccd1b;
    else if (lane === 1) b = Math.imul(((b ^ k) << 17) | ((b ^ k) >>> 15), 5) + 0x0bcaa747;
    else if (lane === 2) c = Math.imul(((c ^ k) << 15) | ((c ^ k) >>> 17), 5) + 0x96cd1c35;
    else d = Math.imul(((d ^ k) << 13) | ((d ^ k) >>> 19), 5) + 0x32ac3b17;
  }
  // Final avalanche (MurmurHash3's fmix32 on each lane, lanes folded into each other).
  const fmix = (h: number): number => {
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  };
  a = fmix(a ^ d);
  b = fmix(b ^ a);
  c = fmix(c ^ b);
  d = fmix(d ^ c);
  const hex = (h: number): string => h.toString(16).padStart(8, '0');
  return `${bytes.length.toString(16)}-${hex(a)}${hex(b)}${hex(c)}${hex(d)}`;
}
