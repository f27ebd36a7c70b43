/**
 * The event ids a partition remembers, as 96-bit fingerprints in a fixed
 * SharedArrayBuffer: memory is decided once, at start, and never grows.
 *
 *   header (Int32 × 8): [epoch, current generation, count gen 0, count gen 1,
 *                        slot bits, ids per generation, -, -]
 *   generation 0: slots × 3 Uint32   (open addressing, linear probing;
 *   generation 1: slots × 3 Uint32    an all-zero slot is empty)
 *
 * New ids go into the current generation. When it holds `idsPerGeneration`
 * ids, the other generation is wiped and becomes current. So the set always
 * holds at least the last `idsPerGeneration` ids added (and at most twice
 * that): that is the dedupe window. Slots are sized for a load of at most
 * 0.75, so probes stay short.
 *
 * Ownership: a partition has one task in flight at a time, and only the
 * worker running it touches the set. `epoch` hands the set over between
 * threads: the owner reads it with Atomics.load (checking it is the epoch it
 * was given) and bumps it with Atomics.store when done, which also orders
 * its plain writes before the next owner's reads.
 */

const headerWords = 8;
const headerBytes = headerWords * 4;
const wordsPerSlot = 3;
const loadFactorMax = 0.75;
const H_EPOCH = 0;
const H_CURRENT = 1;
const H_COUNT0 = 2;
const H_SLOT_BITS = 4;
const H_IDS_PER_GENERATION = 5;

function slotBitsFor(idsPerGeneration: number): number {
  return Math.max(4, Math.ceil(Math.log2(Math.ceil(idsPerGeneration / loadFactorMax) + 1)));
}

const pageBytes = 4096;

/**
 * Writes once to every page, so the whole buffer is resident from the start:
 * the OS commits a fresh allocation lazily, and the table would otherwise
 * grow the process's memory as it warms (to ~50 MiB per partition), which
 * looks like a leak and hides a real one.
 */
function touchEveryPage(buffer: SharedArrayBuffer): void {
  const bytes = new Uint8Array(buffer);
  for (let at = 0; at < bytes.length; at += pageBytes) bytes[at] = 0;
}

export class IdSet {
  readonly buffer: SharedArrayBuffer;
  readonly idsPerGeneration: number;
  readonly #header: Int32Array;
  readonly #generations: [Uint32Array, Uint32Array];
  readonly #mask: number;
  /** Where prefetch leaves what it read, so the reads are not optimised away. */
  // eslint-disable-next-line no-unused-private-class-members -- written to, on purpose, and never read
  #sink = 0;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#header = new Int32Array(buffer, 0, headerWords);
    const slotBits = this.#header[H_SLOT_BITS]!;
    this.idsPerGeneration = this.#header[H_IDS_PER_GENERATION]!;
    const slots = 2 ** slotBits;
    this.#mask = slots - 1;
    this.#generations = [
      new Uint32Array(buffer, headerBytes, slots * wordsPerSlot),
      new Uint32Array(buffer, headerBytes + slots * wordsPerSlot * 4, slots * wordsPerSlot),
    ];
  }

  /** Bytes a set remembering at least `idsPerGeneration` ids takes: fixed, allocated at once. */
  static bytesFor(idsPerGeneration: number): number {
    return headerBytes + 2 * 2 ** slotBitsFor(idsPerGeneration) * wordsPerSlot * 4;
  }

  static create(idsPerGeneration: number): IdSet {
    if (!Number.isSafeInteger(idsPerGeneration) || idsPerGeneration < 1 || idsPerGeneration > 2 ** 26) {
      throw new RangeError(`idsPerGeneration must be 1–${2 ** 26}, got ${idsPerGeneration}`);
    }
    const buffer = new SharedArrayBuffer(IdSet.bytesFor(idsPerGeneration));
    const header = new Int32Array(buffer, 0, headerWords);
    header[H_SLOT_BITS] = slotBitsFor(idsPerGeneration);
    header[H_IDS_PER_GENERATION] = idsPerGeneration;
    touchEveryPage(buffer);
    return new IdSet(buffer);
  }

  /** A view of a set created elsewhere (in a worker thread: the same memory). */
  static attach(buffer: SharedArrayBuffer): IdSet {
    return new IdSet(buffer);
  }

  /** Takes the set over from its previous owner; throws if the hand-over is not the one expected. */
  acquire(expectedEpoch: number): void {
    const epoch = Atomics.load(this.#header, H_EPOCH);
    if (epoch !== expectedEpoch)
      throw new Error(`id set handed over at epoch ${epoch}, expected ${expectedEpoch}: two owners at once`);
  }

  /** Hands the set on; returns the epoch the next owner must expect. */
  release(): number {
    const next = (Atomics.load(this.#header, H_EPOCH) + 1) | 0;
    Atomics.store(this.#header, H_EPOCH, next);
    return next;
  }

  get epoch(): number {
    return Atomics.load(this.#header, H_EPOCH);
  }

  /** Ids held now (both generations). */
  get size(): number {
    return this.#header[H_COUNT0]! + this.#header[H_COUNT0 + 1]!;
  }

  #find(table: Uint32Array, h0: number, h1: number, h2: number): number {
    let slot = h1 & this.#mask;
    for (;;) {
      const at = slot * wordsPerSlot;
      const w0 = table[at]!;
      if (w0 === 0) return -1 - at;
      if (w0 === h0 && table[at + 1] === h1 && table[at + 2] === h2) return at;
      slot = (slot + 1) & this.#mask;
    }
  }

  /**
   * Reads the first slot each of `count` fingerprints (3 words each) would
   * be looked up at, in both generations, before they are added one by one.
   * Each lookup is a cache miss in a table of tens of MiB; one after the
   * other, every add waits for memory in turn, while these loads are
   * independent, so the CPU overlaps them, and the adds then find their
   * slots in cache. Only a hint: it changes nothing.
   */
  prefetch(fingerprints: Uint32Array, count: number): void {
    const [g0, g1] = this.#generations;
    const mask = this.#mask;
    let sink = 0;
    for (let e = 0; e < count; e++) {
      const at = (fingerprints[3 * e + 1]! & mask) * wordsPerSlot;
      sink ^= g0[at]! ^ g1[at]!;
    }
    this.#sink ^= sink;
  }

  has(h0: number, h1: number, h2: number): boolean {
    h0 >>>= 0;
    h1 >>>= 0;
    h2 >>>= 0;
    return this.#find(this.#generations[0], h0, h1, h2) >= 0 || this.#find(this.#generations[1], h0, h1, h2) >= 0;
  }

  /** Adds a fingerprint; false if it was already held (a duplicate). */
  add(h0: number, h1: number, h2: number): boolean {
    h0 >>>= 0;
    h1 >>>= 0;
    h2 >>>= 0;
    if (h0 === 0) throw new RangeError('fingerprint word 0 must not be 0');
    const current = this.#header[H_CURRENT]!;
    const other = this.#generations[1 - current]!;
    if (this.#find(other, h0, h1, h2) >= 0) return false;
    const table = this.#generations[current]!;
    const found = this.#find(table, h0, h1, h2);
    if (found >= 0) return false;
    const at = -1 - found;
    table[at] = h0;
    table[at + 1] = h1;
    table[at + 2] = h2;
    const count = ++this.#header[H_COUNT0 + current]!;
    if (count >= this.idsPerGeneration) {
      // Rotate: the older generation is forgotten and takes the new ids.
      other.fill(0);
      this.#header[H_COUNT0 + 1 - current] = 0;
      this.#header[H_CURRENT] = 1 - current;
    }
    return true;
  }

  /** Forgets everything (before a rebuild from ClickHouse). */
  clear(): void {
    // A count of 0 means an all-zero table already.
    if (this.size === 0) return;
    this.#generations[0].fill(0);
    this.#generations[1].fill(0);
    this.#header[H_COUNT0] = 0;
    this.#header[H_COUNT0 + 1] = 0;
    this.#header[H_CURRENT] = 0;
  }
}
