/**
 * What the rater needs of the catalog: the meter definitions in force (kept
 * current in place by the process wiring) and their revision. A batch
 * carries the revision the gateway validated it against; a rater behind it
 * refreshes before aggregating, so a meter added a moment ago is never
 * mistaken for an undecodable message (which would be skipped: lost usage).
 */
import type { MeterDefinitions } from '../catalog/model.js';

export interface MeterCatalog {
  /** Definitions for every meter ever defined, archived ones included; updated in place. */
  readonly meters: MeterDefinitions;
  /** The revision `meters` belong to (0 for a catalog file). */
  revision(): number;
  /** Looks for a newer revision now. */
  refresh(): Promise<void>;
}

/** A catalog that never changes (tests, a catalog file). */
export function fixedMeterCatalog(meters: MeterDefinitions): MeterCatalog {
  return { meters, revision: () => 0, refresh: async () => {} };
}
