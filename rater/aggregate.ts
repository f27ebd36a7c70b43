/**
 * Aggregation per (customer, meter, declared dimensions, minute). Pure: the
 * workers use it per task and the partition loop uses it to merge tasks into
 * one flush. Quantities are scaled bigints, so sums are exact.
 */
import type { Aggregation, MeterDefinitions } from '../shared/catalog.js';
import type { UsageEvent } from '../shared/event.js';

/** [customer, meter, dimensions, minute (epoch s), quantity × 10^9, events] — structured-clone friendly. */
export type AggregateRow = [customer: string, meter: string, dimensions: string, minuteSec: number, scaled: bigint, events: number];

const oneScaled = 1_000_000_000n;

export class Aggregator {
  readonly #rows = new Map<string, AggregateRow>();
  readonly #meters: MeterDefinitions;

  constructor(meters: MeterDefinitions) {
    this.#meters = meters;
  }

  get size(): number {
    return this.#rows.size;
  }

  #aggregation(meter: string): Aggregation {
    return this.#meters[meter]?.aggregation ?? 'sum';
  }

  addEvent(event: UsageEvent): void {
    const minuteSec = Math.floor(event.timestampMs / 60_000) * 60;
    const aggregation = this.#aggregation(event.meter);
    const scaled = aggregation === 'count' ? oneScaled : event.scaled;
    this.#add(event.customer, event.meter, event.dimensions, minuteSec, scaled, 1, aggregation);
  }

  addRow(row: AggregateRow): void {
    this.#add(row[0], row[1], row[2], row[3], row[4], row[5], this.#aggregation(row[1]));
  }

  #add(customer: string, meter: string, dimensions: string, minuteSec: number, scaled: bigint, events: number, aggregation: Aggregation): void {
    // \u0000 cannot occur in customer or meter (validated), so the key is unambiguous.
    const key = `${customer}\u0000${meter}\u0000${minuteSec}\u0000${dimensions}`;
    const row = this.#rows.get(key);
    if (row === undefined) {
      this.#rows.set(key, [customer, meter, dimensions, minuteSec, scaled, events]);
      return;
    }
    row[4] = aggregation === 'max' ? (scaled > row[4] ? scaled : row[4]) : row[4] + scaled;
    row[5] += events;
  }

  /** Returns the rows and empties the aggregator. */
  drain(): AggregateRow[] {
    const rows = [...this.#rows.values()];
    this.#rows.clear();
    return rows;
  }
}
