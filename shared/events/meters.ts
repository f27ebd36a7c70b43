/**
 * What the wire contract needs to know about meters: which keys exist, how
 * each aggregates, and which dimensions it keeps. The catalog (catalog/)
 * produces these from its meter definitions; the gateway validates events and
 * the rater aggregates them against them. Kept here, below every stage, so
 * that event rules never depend on the catalog's model.
 */
export type Aggregation = 'sum' | 'count' | 'max';

/** Per meter key; structured-clone-safe, so the rater's worker threads take it as is. */
export interface MeterDefinitions {
  [key: string]: { aggregation: Aggregation; dimensions: string[] };
}
