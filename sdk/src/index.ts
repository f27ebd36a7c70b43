/**
 * @drawdown/sdk — stream usage events to a drawdown gateway with batching,
 * retries under one Idempotency-Key per batch, and bounded memory; reserve
 * and release credit holds around expensive work.
 * Imports only node builtins and msgpackr: no server code comes along.
 */
export { createClient, DrawdownClient, type ClientStats } from './client.js';
export {
  DrawdownSdkError,
  type SdkErrorCode,
  type EventProblem,
  type FailedBatch,
  type InsufficientCredits,
} from './errors.js';
export type { TrackEvent } from './event.js';
export type { Entitlement, Hold, HoldRequest, ReleasedHold, ReservedHold } from './holds.js';
export { defaultOptions, type ClientOptions, type FullPolicy } from './options.js';
export type { RetryInfo } from './retry.js';
