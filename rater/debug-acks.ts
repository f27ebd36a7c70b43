/**
 * Off unless DRAWDOWN_DEBUG_ACKS names a file: a line per delivery the
 * partition loop sees (and what it did with it), per flush (the sequences it
 * counted), per ack and per consumer recreation, so a lost or doubled
 * message can be traced through the loop (issue 16). Synchronous appends:
 * for diagnosis only, never in production.
 */
import { appendFileSync } from 'node:fs';

const path = process.env.DRAWDOWN_DEBUG_ACKS;

export const debugAcksOn = path !== undefined && path !== '';

export function debugAck(partition: number, event: string, fields: Record<string, unknown> = {}): void {
  if (!debugAcksOn) return;
  appendFileSync(path!, `${new Date().toISOString()} p${partition} ${event} ${JSON.stringify(fields)}\n`);
}
