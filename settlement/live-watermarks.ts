/**
 * The rater's committed watermarks (max flush_seq per stream partition, the
 * snapshot every live read filters by), read without scanning history.
 *
 * readWatermarks (shared/clickhouse/usage-minute.ts) groups the whole of
 * usage_minute: exact, and what a settlement run does once, but a live
 * balance read and the notices' poll (every 100 ms) paid it every time, so their cost
 * grew with the deployment's age. This reader does that scan once a minute,
 * remembers each partition's watermark, and on each read:
 *
 *   1. asks flush_bounds (one small row per flush, ordered by partition and
 *      label) for the flushes recorded above what it knows, and their
 *      earliest stamp — the rater writes a flush's record before its rows,
 *      so every flush that landed since is among them;
 *   2. if there are none, nothing moved; else reads usage_minute from that
 *      stamp on (`flushed_at >=`, which skips every older part and month:
 *      the table is partitioned by it) for those partitions only.
 *
 * What it returns never exceeds what ClickHouse holds: a flush whose record a
 * replica has not fetched yet is only seen at a later read (the figures lag,
 * they are never mixed). A record of a flush that never landed keeps the
 * floor at its stamp until a later flush of its partition lands.
 */
import type { Store } from '../shared/clickhouse/store.js';
import { readWatermarks } from '../shared/clickhouse/usage-minute.js';
import { sqlDateTime, sqlUInt } from '../shared/sql.js';

/**
 * The whole scan is still made this often: a safety net that bounds how long
 * a flush without a record (a rater from before flush_bounds, during an
 * upgrade) can stay unseen. Once a minute instead of on every read.
 */
const fullReadEveryMs = 60_000;

/** One reader per store: live balances and the notices' usage watch in one process share its scans. */
const perStore = new WeakMap<Store, LiveWatermarks>();

export class LiveWatermarks {
  /** The reader of `store` that every live read of this process shares (so the minutely full scan runs once). */
  static of(store: Store): LiveWatermarks {
    let reader = perStore.get(store);
    if (reader === undefined) {
      reader = new LiveWatermarks(store);
      perStore.set(store, reader);
    }
    return reader;
  }

  readonly #store: Store;
  readonly #marks = new Map<number, number>();
  #first: Promise<void> | undefined;
  #fullAtMs = 0;
  #refreshing = false;

  constructor(store: Store) {
    this.#store = store;
  }

  /** The committed watermark of every partition that has one. */
  async read(nowMs = performance.now()): Promise<Map<number, number>> {
    if (this.#first === undefined) {
      this.#fullAtMs = nowMs;
      this.#first = this.#readAll().catch((error: unknown) => {
        this.#first = undefined;
        throw error;
      });
    } else if (nowMs - this.#fullAtMs >= fullReadEveryMs && !this.#refreshing) {
      // Off the read's path: what the records found meanwhile stands; this only adds what they could not vouch for.
      this.#fullAtMs = nowMs;
      this.#refreshing = true;
      void this.#readAll()
        .catch(() => undefined)
        .finally(() => (this.#refreshing = false));
    }
    await this.#first;
    const floors = await this.#newFlushFloors();
    if (floors.size > 0) await this.#readFrom(floors);
    return new Map(this.#marks);
  }

  async #readAll(): Promise<void> {
    this.#merge([...(await readWatermarks(this.#store))]);
  }

  /** Per partition with flushes recorded above its known watermark: the earliest stamp among them. */
  async #newFlushFloors(): Promise<Map<number, number>> {
    const known = [...this.#marks.keys()].sort((a, b) => a - b);
    const above = known.map(
      (p) => `(stream_partition = ${sqlUInt(p)} AND flush_seq > ${sqlUInt(this.#marks.get(p)!)})`,
    );
    // Partitions without a watermark yet: the gaps below the highest known one, and everything above it.
    const highest = known.length === 0 ? -1 : known[known.length - 1]!;
    const gaps: number[] = [];
    for (let p = 0, i = 0; p < highest; p++) {
      if (known[i] === p) i++;
      else gaps.push(p);
    }
    if (gaps.length > 0) above.push(`stream_partition IN (${gaps.map(sqlUInt).join(', ')})`);
    above.push(highest < 0 ? '1' : `stream_partition > ${sqlUInt(highest)}`);
    const rows = await this.#store.query(
      `SELECT stream_partition, toUnixTimestamp(min(written_at)) FROM flush_bounds WHERE ${above.join(' OR ')} GROUP BY stream_partition`,
    );
    return new Map(rows.map(([partition, stampSec]) => [Number(partition), Number(stampSec)]));
  }

  async #readFrom(floors: Map<number, number>): Promise<void> {
    const floorSec = Math.min(...floors.values());
    const rows = await this.#store.query(
      `SELECT stream_partition, max(flush_seq) FROM usage_minute
       WHERE flushed_at >= ${sqlDateTime(floorSec)} AND stream_partition IN (${[...floors.keys()].map(sqlUInt).join(', ')})
       GROUP BY stream_partition`,
    );
    this.#merge(rows.map(([partition, seq]) => [Number(partition), Number(seq)]));
  }

  /** Watermarks only grow: a read that raced a newer one never lowers what is known. */
  #merge(marks: [number, number][]): void {
    for (const [partition, seq] of marks) if (seq > (this.#marks.get(partition) ?? -1)) this.#marks.set(partition, seq);
  }
}
