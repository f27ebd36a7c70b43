/**
 * drawdown/sdk — stream usage events to a drawdown gateway with batching,
 * retries under one Idempotency-Key per batch, and bounded memory.
 * Imports only node builtins and msgpackr: no server code comes along.
 */
export { createClient, DrawdownClient, type ClientStats } from './client.js';
export { DrawdownSdkError, type SdkErrorCode, type EventProblem, type FailedBatch } from './errors.js';
export type { TrackEvent } from './event.js';
export { defaultOptions, type ClientOptions, type FullPolicy } from './options.js';
export type { RetryInfo } from './retry.js';
