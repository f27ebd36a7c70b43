/**
 * The message between a partition loop and a worker thread. Many stream
 * messages travel in one ArrayBuffer that is transferred, not copied:
 *
 *   data:    [ msg 0 bytes | msg 1 bytes | ... ]   (ArrayBuffer we allocated)
 *   offsets: [ 0, len0, len0+len1, ... ]           (n + 1 entries)
 *   formats: [ 0 = msgpack | 1 = json, ... ]
 *   arrivedMs: [ when JetStream stored msg 0, ... ]   (the time window's reference)
 *
 * We allocate `data` ourselves because NATS message payloads are views into
 * shared read buffers; transferring one of those would detach the rest.
 */
import type { AggregateRow } from './aggregate.js';

export interface AggregateTask {
  data: Uint8Array;
  offsets: Uint32Array;
  formats: Uint8Array;
  /** When JetStream stored each message (ms since the epoch): the reference of its time window. */
  arrivedMs: Float64Array;
  /**
   * The time window around `arrivedMs` an event's timestamp must fall in, in
   * ms: the gateway's (DRAWDOWN_LATE_MS, DRAWDOWN_SKEW_MS) widened by the
   * arrival slack (rater/window.ts).
   */
  window: { lateMs: number; skewMs: number };
  /**
   * The partition's remembered event ids (rater/dedupe/id-set.ts): shared
   * memory, not copied; `epoch` is the hand-over this task must find.
   * Absent when dedupe is off.
   */
  dedupe?: { buffer: SharedArrayBuffer; epoch: number };
  /** Meter definitions in force (JSON) and their catalog revision; a worker re-parses only a new revision. */
  meters: { revision: number; json: string };
}

export interface RejectedMessage {
  /** Position of the message in the task. */
  message: number;
  reason: string;
}

export interface AggregateResult {
  rows: AggregateRow[];
  /** Events counted (duplicates excluded). */
  events: number;
  /** Events dropped because their (customer, id) was already remembered. */
  duplicates: number;
  /** Fingerprints of the counted events' ids, 3 words each, in order: what the flush persists. */
  ids: Uint32Array;
  rejected: RejectedMessage[];
}

/** No time window: only what ClickHouse's DateTime stores (rater/window.ts). */
export const noWindow: AggregateTask['window'] = { lateMs: Number.MAX_SAFE_INTEGER, skewMs: Number.MAX_SAFE_INTEGER };

export function packMessages(
  payloads: readonly Uint8Array[],
  formats: readonly ('msgpack' | 'json')[],
  meters: AggregateTask['meters'],
  arrivedMs: readonly number[] = [],
  window: AggregateTask['window'] = noWindow,
): AggregateTask {
  let total = 0;
  for (const p of payloads) total += p.length;
  const data = new Uint8Array(new ArrayBuffer(total));
  const offsets = new Uint32Array(payloads.length + 1);
  const formatCodes = new Uint8Array(payloads.length);
  let at = 0;
  for (let i = 0; i < payloads.length; i++) {
    data.set(payloads[i]!, at);
    at += payloads[i]!.length;
    offsets[i + 1] = at;
    formatCodes[i] = formats[i] === 'json' ? 1 : 0;
  }
  const arrived = Float64Array.from({ length: payloads.length }, (_, i) => arrivedMs[i] ?? 0);
  return { data, offsets, formats: formatCodes, arrivedMs: arrived, window, meters };
}
