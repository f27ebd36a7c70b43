/**
 * The closed hold records one log-engine process keeps for closedRetentionMs
 * (hold-log.ts), oldest first by arrival, each also in its account's map for
 * lookups. Kept as two parallel arrays, not an object per record: at 10k
 * closings a second over a two-minute retention a process holds over a
 * million, and each wrapper object would be one more for every young-
 * generation collection to copy and for the old generation to keep.
 */
import type { ClosedHold } from './hold-account.js';

/** Where a record is looked up: its account's records by hold id (undefined once empty). */
export interface RecordHome {
  closed: Map<string, ClosedHold> | undefined;
}

/** Compacted once the dropped prefix is this long and over half the arrays. */
const compactAfter = 4_096;

export class ClosedRetention<H extends RecordHome> {
  #homes: H[] = [];
  #records: ClosedHold[] = [];
  #head = 0;

  /** Records kept. */
  get size(): number {
    return this.#records.length - this.#head;
  }

  /** Keeps `record` in `home` (replacing a record of the same id there) and in the queue. */
  keep(home: H, record: ClosedHold): void {
    (home.closed ??= new Map()).set(record.id, record);
    this.#homes.push(home);
    this.#records.push(record);
  }

  /**
   * Drops records closed at or before `floorMs`, and the oldest beyond `recordsMax`. `emptied` is called for a
   * home left without records. Returns how many were dropped only for the count (still within retention).
   */
  forget(floorMs: number, recordsMax: number, emptied: (home: H) => void): number {
    const homes = this.#homes;
    const records = this.#records;
    let overCount = 0;
    while (this.#head < records.length) {
      const record = records[this.#head]!;
      const over = records.length - this.#head > recordsMax;
      if (!over && record.closedMs > floorMs) break;
      if (over && record.closedMs > floorMs) overCount++;
      const home = homes[this.#head]!;
      // Release the references now: the slots stay until the next compaction.
      homes[this.#head] = undefined as unknown as H;
      records[this.#head] = undefined as unknown as ClosedHold;
      this.#head++;
      // A later record of the same id (a key reused after its record went) replaced this one: it stays.
      if (home.closed?.get(record.id) !== record) continue;
      home.closed.delete(record.id);
      if (home.closed.size === 0) {
        home.closed = undefined;
        emptied(home);
      }
    }
    if (this.#head > compactAfter && this.#head * 2 > records.length) {
      this.#homes = homes.slice(this.#head);
      this.#records = records.slice(this.#head);
      this.#head = 0;
    }
    return overCount;
  }
}
