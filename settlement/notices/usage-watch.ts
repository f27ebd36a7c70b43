/**
 * Which customers the rater has flushed usage for since the last look. The
 * rater's committed watermark lives in usage_minute (max flush_seq per
 * partition, shared/clickhouse/usage-minute.ts); every `pollMs` this reads
 * it, and for the partitions that moved reads the distinct customers of the
 * rows between the old and the new watermark. Data flows rater → ClickHouse
 * → settlement only: the rater knows nothing of notices.
 */
import type { Store } from '../../shared/clickhouse/store.js';
import { readWatermarks } from '../../shared/clickhouse/usage-minute.js';
import { sqlUInt } from '../../shared/sql.js';

export class UsageWatch {
  readonly #store: Store;
  readonly #customersMax: number;
  #marks: Map<number, number> | undefined;

  constructor(store: Store, customersMax: number) {
    this.#store = store;
    this.#customersMax = customersMax;
  }

  /** Customers with usage committed since the previous call (none on the first: it only takes the marks). */
  async changed(): Promise<{ customers: string[]; truncated: boolean }> {
    const now = await readWatermarks(this.#store);
    const before = this.#marks;
    if (before === undefined) {
      this.#marks = now;
      return { customers: [], truncated: false };
    }
    const ranges: string[] = [];
    for (const [partition, seq] of now) {
      const was = before.get(partition) ?? 0;
      if (seq > was)
        ranges.push(
          `(stream_partition = ${sqlUInt(partition)} AND flush_seq > ${sqlUInt(was)} AND flush_seq <= ${sqlUInt(seq)})`,
        );
    }
    if (ranges.length === 0) return { customers: [], truncated: false };
    const rows = await this.#store.query(
      `SELECT DISTINCT customer FROM usage_minute WHERE ${ranges.join(' OR ')} LIMIT ${sqlUInt(this.#customersMax + 1)}`,
    );
    // Only now: a look that failed leaves the marks where they were, so the next one reads the same flushes again
    // instead of losing their customers' touches.
    this.#marks = now;
    const customers = rows.map(([customer]) => customer!);
    const truncated = customers.length > this.#customersMax;
    return { customers: truncated ? customers.slice(0, this.#customersMax) : customers, truncated };
  }
}
