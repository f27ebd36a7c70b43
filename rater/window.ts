/**
 * The time window the rater holds events to: the gateway's own
 * (DRAWDOWN_LATE_MS before to DRAWDOWN_SKEW_MS after arrival), so a message
 * published by anything else than the gateway, or by a gateway whose clock
 * is wrong, cannot put usage where the gateway would not have.
 *
 * Its reference is when JetStream stored the message (set by the server; a
 * publisher cannot choose it), not the gateway's `Drawdown-Received-Ms`
 * header (which a publisher can). A gateway receives a batch before the
 * stream stores it, by up to its publish timeout, and hosts' clocks differ a
 * little: the window is widened by that slack on both sides, so the rater
 * never refuses what a gateway with a sane clock accepted.
 *
 * Whatever the settings, the window is clamped to what ClickHouse's
 * DateTime('UTC') stores (shared/validate.ts): outside it an insert fails
 * or wraps silently.
 */
import { storableInstantMaxSec, storableInstantMinSec } from '../shared/validate.js';

/** Allowed difference between the gateway hosts' clocks and the NATS servers', in ms. */
export const clockSlackMs = 60_000;

/** The rater's window for a gateway with these limits (what tasks carry). */
export function raterWindow(limits: { lateMs: number; skewMs: number; publishTimeoutMs: number }): {
  lateMs: number;
  skewMs: number;
} {
  return {
    lateMs: limits.lateMs + limits.publishTimeoutMs + clockSlackMs,
    skewMs: limits.skewMs + clockSlackMs,
  };
}

export const storableMinMs = storableInstantMinSec * 1000;
export const storableMaxMs = storableInstantMaxSec * 1000 + 999;

/** The inclusive bounds, in ms, of the timestamps a message stored at `arrivedMs` may carry. */
export function timestampBounds(
  arrivedMs: number,
  window: { lateMs: number; skewMs: number },
): { oldestMs: number; newestMs: number } {
  return {
    oldestMs: Math.max(storableMinMs, arrivedMs - window.lateMs),
    newestMs: Math.min(storableMaxMs, arrivedMs + window.skewMs),
  };
}
