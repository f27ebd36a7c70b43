/**
 * Which customers the rater has flushed usage for since the last look. The
 * rater's committed watermark lives in usage_minute (max flush_seq per
 * partition, shared/clickhouse/usage-minute.ts); every `pollMs` this reads
 * it, and for the partitions that moved reads the distinct customers of the
 * rows between the old and the new watermark. Data flows rater → ClickHouse
 * → settlement only: the rater knows nothing of notices.
 */
import { recordedFloor, type FlushRange } from '../../shared/clickhouse/flush-bounds.js';
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
    this.#watermarks = LiveWatermarks.of(store);
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
    const moved: FlushRange[] = [];
    for (const [partition, upto] of now) {
      const since = before.get(partition) ?? 0;
      if (upto > since) moved.push({ partition, since, upto });
    }
    if (moved.length === 0) return { customers: [], truncated: false };
    const ranges = moved.map(
      (r) =>
        `(stream_partition = ${sqlUInt(r.partition)} AND flush_seq > ${sqlUInt(r.since)} AND flush_seq <= ${sqlUInt(r.upto)})`,
    );
    // Their records say from which stamp on their rows lie, so the read skips older parts (else it scans).
    const floorSec = (await recordedFloor(this.#store, moved))?.flushedSec;
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
}
