/**
 * Which customers the rater has flushed usage for since the last look. The
 * rater's committed watermark lives in usage_minute (max flush_seq per
 * partition, shared/clickhouse/usage-minute.ts); every `pollMs` this reads
 * it, and for the partitions that moved reads the distinct customers of the
 * rows between the old and the new watermark. Data flows rater → ClickHouse
 * → settlement only: the rater knows nothing of notices.
 */
import type { Store } from '../../shared/clickhouse/store.js';
import { LiveWatermarks } from '../live-watermarks.js';
import { sqlDateTime, sqlUInt } from '../../shared/sql.js';

export class UsageWatch {
  readonly #store: Store;
  readonly #customersMax: number;
  readonly #watermarks: LiveWatermarks;
  #marks: Map<number, number> | undefined;

  constructor(store: Store, customersMax: number) {
    this.#store = store;
    this.#watermarks = new LiveWatermarks(store);
    this.#customersMax = customersMax;
  }

  /** Customers with usage committed since the previous call (none on the first: it only takes the marks). */
  async changed(): Promise<{ customers: string[]; truncated: boolean }> {
    const now = await this.#watermarks.read();
    const before = this.#marks;
    if (before === undefined) {
      this.#marks = now;
      return { customers: [], truncated: false };
    }
    const moved: [number, number, number][] = [];
    for (const [partition, seq] of now) {
      const was = before.get(partition) ?? 0;
      if (seq > was) moved.push([partition, was, seq]);
    }
    if (moved.length === 0) return { customers: [], truncated: false };
    const ranges = moved.map(
      ([p, was, seq]) =>
        `(stream_partition = ${sqlUInt(p)} AND flush_seq > ${sqlUInt(was)} AND flush_seq <= ${sqlUInt(seq)})`,
    );
    const floorSec = await this.#stampFloor(moved);
    const floor = floorSec === undefined ? '' : ` AND flushed_at >= ${sqlDateTime(floorSec)}`;
    const rows = await this.#store.query(
      `SELECT DISTINCT customer FROM usage_minute WHERE (${ranges.join(' OR ')})${floor} LIMIT ${sqlUInt(this.#customersMax + 1)}`,
    );
    // Only now: a look that failed leaves the marks where they were, so the next one reads the same flushes again
    // instead of losing their customers' touches.
    this.#marks = now;
    const customers = rows.map(([customer]) => customer!);
    const truncated = customers.length > this.#customersMax;
    return { customers: truncated ? customers.slice(0, this.#customersMax) : customers, truncated };
  }

  /**
   * The earliest stamp (flushed_at) of the flushes in the moved ranges, from their flush_bounds records, so the
   * read above skips older parts instead of scanning the table. Only when every moved partition's previous mark
   * has its record too: then the rater wrote a record for every flush after it (undefined otherwise: a scan).
   */
  async #stampFloor(moved: readonly [number, number, number][]): Promise<number | undefined> {
    if (moved.some(([, was]) => was === 0)) return undefined;
    const rows = await this.#store.query(
      `SELECT stream_partition, countIf(flush_seq = since), toUnixTimestamp(minIf(written_at, flush_seq > since))
       FROM (
         SELECT stream_partition, flush_seq, written_at,
           multiIf(${moved.map(([p, was]) => `stream_partition = ${sqlUInt(p)}, ${sqlUInt(was)}`).join(', ')}, 0) AS since
         FROM flush_bounds
         WHERE ${moved.map(([p, was, seq]) => `(stream_partition = ${sqlUInt(p)} AND flush_seq >= ${sqlUInt(was)} AND flush_seq <= ${sqlUInt(seq)})`).join(' OR ')}
       )
       GROUP BY stream_partition`,
    );
    if (rows.length !== moved.length || rows.some(([, anchored]) => Number(anchored) === 0)) return undefined;
    return Math.min(...rows.map(([, , stampSec]) => Number(stampSec)));
  }
}
