/**
 * Retry rules, pure: which outcomes are worth another attempt, how long to
 * wait before it, and when to give up. Every batch (and every hold) keeps its
 * one Idempotency-Key across all of its attempts, so a retry of a request the
 * server did store (the answer was lost) is a no-op there.
 */

/** Why an attempt is retried: a network error / timeout, or the HTTP status. */
export interface RetryInfo {
  /** What is retried: a batch of events, or one call. */
  operation: 'events' | 'hold' | 'release' | 'entitlement';
  /** The batch's or the hold's key, the same on every attempt; '' for release and entitlement, which need none. */
  idempotencyKey: string;
  /** The attempt that just failed (1 = the first). */
  attempt: number;
  status: number | undefined;
  reason: string;
  /** The gateway's Retry-After, in ms, when it sent one. */
  retryAfterMs: number | undefined;
  /** How long the SDK waits before the next attempt, in ms. */
  delayMs: number;
}

/**
 * Network errors and timeouts (status undefined), 408, 429 and every 5xx are
 * transient. Any other 4xx means the request itself is wrong — the same bytes
 * would be refused again — so it is reported, not retried.
 */
export function isRetryable(status: number | undefined): boolean {
  return status === undefined || status === 408 || status === 429 || status >= 500;
}

/**
 * Retry-After as delta-seconds (what drawdown sends) or an HTTP date
 * (RFC 9110 §10.2.3); undefined when absent or unreadable.
 */
export function parseRetryAfterMs(header: string | null | undefined, nowMs: number): number | undefined {
  if (header === null || header === undefined) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1_000;
  const dateMs = Date.parse(text);
  if (Number.isNaN(dateMs)) return undefined;
  return Math.max(0, dateMs - nowMs);
}

export interface BackoffLimits {
  retryDelayBaseMs: number;
  retryDelayMaxMs: number;
  retryAfterMaxMs: number;
}

/**
 * Exponential back-off with "equal jitter": half of base × 2^(attempt−1)
 * (capped) is fixed, the other half random. The fixed half guarantees the
 * waits grow, so a short outage (a gateway restart) is outlasted within a few
 * attempts; the random half keeps many clients from retrying in lockstep.
 * A Retry-After from the gateway is a floor: the SDK never comes back sooner.
 */
export function retryDelayMs(
  attempt: number,
  retryAfterMs: number | undefined,
  limits: BackoffLimits,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(attempt - 1, 30);
  const ceiling = Math.min(limits.retryDelayMaxMs, limits.retryDelayBaseMs * 2 ** exponent);
  const backoff = Math.round(ceiling / 2 + random() * (ceiling / 2));
  if (retryAfterMs === undefined) return backoff;
  return Math.max(backoff, Math.min(retryAfterMs, limits.retryAfterMaxMs));
}
