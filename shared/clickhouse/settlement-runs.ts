/**
 * The contract of the settlement_runs table that stages other than
 * settlement read: where settled time ends. The catalog refuses rate card
 * versions that would take effect in settled time, and balances count
 * pending usage from here. The rest of the run records is settlement's own
 * (settlement/runs.ts).
 */
import type { Store } from './store.js';

/** The end of the last completed run, epoch s; 0 before the first. */
export async function settledUntil(store: Store): Promise<number> {
  const rows = await store.query(
    "SELECT max(toUnixTimestamp(window_until)) FROM settlement_runs WHERE status = 'completed'",
  );
  return Number(rows[0]?.[0] ?? 0);
}
