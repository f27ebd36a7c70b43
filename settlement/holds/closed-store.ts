/**
 * The closed holds one log-engine process keeps for closedRetentionMs
 * (hold-log.ts), so a retried reserve finds its hold and a late release says
 * it is closed. Kept in typed arrays, not as objects: a process closing 20k
 * holds a second keeps over two million, and as objects each was one more
 * for every young-generation collection to copy and every full one to mark —
 * a third of the engine's throughput at that rate (bench/results/holds.md).
 *
 *   ring of slots, oldest first by arrival (≤ recordsMax; grows by doubling)
 *     per slot: owner, id and fp as 7-bit symbols, amount and remaining as
 *     4-bit symbols, status, createdMs, closedMs
 *   index: open addressing (linear probing) on (owner, id) → slot
 *
 * A record whose fp or amounts do not pack (longer than the fields hold) is
 * kept as an object beside its slot. One whose id does not pack is not kept:
 * every hold id this code makes is 16 base64url characters, and a lookup is
 * always by such an id, so no lookup could find it.
 */
import type { ClosedHold, ClosedStatus } from './hold-account.js';

/** What a record belongs to (an account): its slot in the owner table while it has records here, else -1. */
export interface RecordOwner {
  recordOwner: number;
  /** Slots of the ring that belong to it (a record replaced by a newer one of its id still counts until it leaves). */
  recordCount: number;
}

const tokenAlphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const decimalAlphabet = '0123456789.';
/** Four 32-bit words a field: 4 × 7-bit symbols per word (16 characters), or 8 × 4-bit ones (32 characters). */
const fieldWords = 4;

interface Packing {
  readonly codeOf: Int8Array;
  readonly charOf: string;
  readonly bits: number;
  readonly perWord: number;
}

function packing(alphabet: string, bits: number): Packing {
  const codeOf = new Int8Array(128).fill(-1);
  // Code 0 ends the text: a character's code is its place in the alphabet + 1.
  for (let i = 0; i < alphabet.length; i++) codeOf[alphabet.charCodeAt(i)] = i + 1;
  return { codeOf, charOf: alphabet, bits, perWord: Math.floor(32 / bits) };
}

const tokens = packing(tokenAlphabet, 7);
const decimals = packing(decimalAlphabet, 4);

/** Writes `text` into words[at … at + fieldWords); false when it does not fit (too long, or a character outside). */
function pack(text: string, p: Packing, words: Uint32Array, at: number): boolean {
  if (text.length === 0 || text.length > p.perWord * fieldWords) return false;
  let word = 0;
  let index = at;
  let shift = 0;
  for (let i = 0; i < text.length; i++) {
    const char = text.charCodeAt(i);
    const code = char < 128 ? p.codeOf[char]! : -1;
    if (code < 0) return false;
    word |= code << shift;
    shift += p.bits;
    if (shift + p.bits > 32) {
      words[index++] = word >>> 0;
      word = 0;
      shift = 0;
    }
  }
  while (index < at + fieldWords) {
    words[index++] = word >>> 0;
    word = 0;
  }
  return true;
}

function unpack(p: Packing, words: Uint32Array, at: number): string {
  let text = '';
  const mask = (1 << p.bits) - 1;
  for (let w = 0; w < fieldWords; w++) {
    const word = words[at + w]!;
    for (let s = 0; s < p.perWord; s++) {
      const code = (word >>> (s * p.bits)) & mask;
      if (code === 0) return text;
      text += p.charOf[code - 1];
    }
  }
  return text;
}

const statusCodes: readonly ClosedStatus[] = ['released', 'expired', 'closed'];

export class ClosedStore<O extends RecordOwner> {
  readonly #recordsMax: number;
  readonly #emptied: (owner: O) => void;
  #capacity = 0;
  #head = 0;
  #count = 0;
  // Per slot.
  #owner = new Uint32Array(0);
  #id = new Uint32Array(0);
  #fp = new Uint32Array(0);
  #amount = new Uint32Array(0);
  #remaining = new Uint32Array(0);
  #status = new Uint8Array(0);
  #createdMs = new Float64Array(0);
  #closedMs = new Float64Array(0);
  /** Records whose fp or amounts do not pack, by slot. */
  #objects = new Map<number, ClosedHold>();
  // Index: slot + 1, 0 = empty; a power of two at least twice the capacity.
  #index = new Int32Array(0);
  #mask = 0;
  // Owners by owner slot, and the free owner slots.
  readonly #owners: (O | undefined)[] = [];
  readonly #freeOwners: number[] = [];
  readonly #scratch = new Uint32Array(fieldWords);

  /** `emptied` is called when an owner's last slot leaves. */
  constructor(recordsMax: number, emptied: (owner: O) => void) {
    this.#recordsMax = recordsMax;
    this.#emptied = emptied;
  }

  /** Records kept (a replaced one counts until it leaves). */
  get size(): number {
    return this.#count;
  }

  /**
   * Keeps `record` for `owner`, replacing a record of the same id it has. Full (recordsMax), the oldest leaves
   * first: returns 1 when that one was still within retention (closed after `floorMs`), else 0.
   */
  keep(owner: O, record: ClosedHold, floorMs: number): number {
    if (this.#recordsMax === 0 || !pack(record.id, tokens, this.#scratch, 0)) return 0;
    let forgotten = 0;
    if (this.#count === this.#capacity) {
      if (this.#capacity < this.#recordsMax) this.#grow();
      else forgotten = this.#evict(floorMs);
    }
    if (owner.recordOwner < 0) {
      const slot = this.#freeOwners.pop() ?? this.#owners.length;
      this.#owners[slot] = owner;
      owner.recordOwner = slot;
    }
    owner.recordCount++;
    const slot = (this.#head + this.#count) % this.#capacity;
    this.#count++;
    const at = slot * fieldWords;
    this.#owner[slot] = owner.recordOwner;
    this.#id.set(this.#scratch, at);
    const packed =
      pack(record.fp, tokens, this.#fp, at) &&
      pack(record.amount, decimals, this.#amount, at) &&
      pack(record.remaining, decimals, this.#remaining, at);
    if (packed) this.#objects.delete(slot);
    else this.#objects.set(slot, record);
    this.#status[slot] = statusCodes.indexOf(record.status);
    this.#createdMs[slot] = record.createdMs;
    this.#closedMs[slot] = record.closedMs;
    const position = this.#find(owner.recordOwner, this.#id, at);
    // A newer record of the id takes the index entry; the older one's slot leaves in its turn, unindexed.
    this.#index[position] = slot + 1;
    return forgotten;
  }

  /** The owner's record of hold `id` closed after `floorMs`. */
  get(owner: O, id: string, floorMs: number): ClosedHold | undefined {
    if (owner.recordOwner < 0 || this.#count === 0 || !pack(id, tokens, this.#scratch, 0)) return undefined;
    const entry = this.#index[this.#find(owner.recordOwner, this.#scratch, 0)]!;
    if (entry === 0) return undefined;
    const slot = entry - 1;
    if (!(this.#closedMs[slot]! > floorMs)) return undefined;
    return this.#objects.get(slot) ?? this.#record(slot);
  }

  /** Lets go of the records closed at or before `floorMs`, oldest first, up to the first that is not. */
  forget(floorMs: number): void {
    while (this.#count > 0 && this.#closedMs[this.#head]! <= floorMs) this.#evict(floorMs);
  }

  #record(slot: number): ClosedHold {
    const at = slot * fieldWords;
    return {
      id: unpack(tokens, this.#id, at),
      fp: unpack(tokens, this.#fp, at),
      status: statusCodes[this.#status[slot]!]!,
      amount: unpack(decimals, this.#amount, at),
      remaining: unpack(decimals, this.#remaining, at),
      createdMs: this.#createdMs[slot]!,
      closedMs: this.#closedMs[slot]!,
    };
  }

  #hash(owner: number, words: Uint32Array, at: number): number {
    let h = Math.imul(owner ^ 0x9e3779b9, 0x85ebca6b);
    for (let w = 0; w < fieldWords; w++) h = Math.imul(h ^ words[at + w]!, 0xc2b2ae35) ^ (h >>> 15);
    return (h ^ (h >>> 13)) & this.#mask;
  }

  #matches(slot: number, owner: number, words: Uint32Array, at: number): boolean {
    if (this.#owner[slot] !== owner) return false;
    const base = slot * fieldWords;
    for (let w = 0; w < fieldWords; w++) if (this.#id[base + w] !== words[at + w]) return false;
    return true;
  }

  /** The index position holding (owner, id), or the empty one where it would go. */
  #find(owner: number, words: Uint32Array, at: number): number {
    let position = this.#hash(owner, words, at);
    for (;;) {
      const entry = this.#index[position]!;
      if (entry === 0 || this.#matches(entry - 1, owner, words, at)) return position;
      position = (position + 1) & this.#mask;
    }
  }

  /** Removes the oldest slot; returns 1 when it was still within retention. */
  #evict(floorMs: number): number {
    const slot = this.#head;
    const withinRetention = this.#closedMs[slot]! > floorMs ? 1 : 0;
    const position = this.#find(this.#owner[slot]!, this.#id, slot * fieldWords);
    if (this.#index[position] === slot + 1) this.#unindex(position);
    this.#objects.delete(slot);
    this.#head = (this.#head + 1) % this.#capacity;
    this.#count--;
    const ownerSlot = this.#owner[slot]!;
    const owner = this.#owners[ownerSlot]!;
    if (--owner.recordCount === 0) {
      owner.recordOwner = -1;
      this.#owners[ownerSlot] = undefined;
      this.#freeOwners.push(ownerSlot);
      this.#emptied(owner);
    }
    return withinRetention;
  }

  /** Linear probing's deletion: later entries of the run move back, so no lookup stops early at the hole. */
  #unindex(position: number): void {
    let hole = position;
    this.#index[hole] = 0;
    let next = hole;
    for (;;) {
      next = (next + 1) & this.#mask;
      const entry = this.#index[next]!;
      if (entry === 0) return;
      const slot = entry - 1;
      const home = this.#hash(this.#owner[slot]!, this.#id, slot * fieldWords);
      // The entry may move to the hole unless its home lies cyclically in (hole, next].
      const stays = hole <= next ? home > hole && home <= next : home > hole || home <= next;
      if (!stays) {
        this.#index[hole] = entry;
        this.#index[next] = 0;
        hole = next;
      }
    }
  }

  /** Doubles the ring (at most to recordsMax), oldest first from slot 0, and rebuilds the index. */
  #grow(): void {
    const capacity = Math.min(this.#recordsMax, Math.max(1_024, this.#capacity * 2));
    const head = this.#head;
    // The ring is [head, capacity) then [0, head): both runs go to the front, in that order.
    const firstRun = Math.min(this.#count, this.#capacity - head);
    const moved = <T extends Uint32Array | Uint8Array | Float64Array>(old: T, make: (n: number) => T, width = 1): T => {
      const next = make(capacity * width);
      next.set(old.subarray(head * width, (head + firstRun) * width), 0);
      next.set(old.subarray(0, (this.#count - firstRun) * width), firstRun * width);
      return next;
    };
    const words = (n: number) => new Uint32Array(n);
    this.#owner = moved(this.#owner, words);
    this.#id = moved(this.#id, words, fieldWords);
    this.#fp = moved(this.#fp, words, fieldWords);
    this.#amount = moved(this.#amount, words, fieldWords);
    this.#remaining = moved(this.#remaining, words, fieldWords);
    this.#status = moved(this.#status, (n) => new Uint8Array(n));
    this.#createdMs = moved(this.#createdMs, (n) => new Float64Array(n));
    this.#closedMs = moved(this.#closedMs, (n) => new Float64Array(n));
    const objects = new Map<number, ClosedHold>();
    for (const [slot, record] of this.#objects) objects.set((slot - head + this.#capacity) % this.#capacity, record);
    this.#objects = objects;
    this.#capacity = capacity;
    this.#head = 0;
    let size = 1;
    while (size < capacity * 2) size *= 2;
    this.#index = new Int32Array(size);
    this.#mask = size - 1;
    // Oldest first: a newer record of an id takes the entry, as when it was kept.
    for (let slot = 0; slot < this.#count; slot++) {
      this.#index[this.#find(this.#owner[slot]!, this.#id, slot * fieldWords)] = slot + 1;
    }
  }
}
