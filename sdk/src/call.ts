/**
 * One API call (a hold, a release, an entitlement check) with retries: the
 * same request — under the same Idempotency-Key when it has one — until it
 * is answered, or out of attempts (retryAttemptsMax) or time
 * (callRetryElapsedMaxMs). The retry rules are the batches' (retry.ts):
 * network errors, timeouts, 408, 429 and 5xx are retried with back-off,
 * never sooner than Retry-After; any other answer is returned to the caller.
 */
import { DrawdownSdkError } from './errors.js';
import type { ResolvedOptions } from './options.js';
import { retryDelayMs, type RetryInfo } from './retry.js';
import { attemptCall, type CallRequest } from './transport.js';

export interface CallAnswer {
  status: number;
  json: Record<string, unknown> | undefined;
}

export interface Call extends Omit<CallRequest, 'apiKey' | 'requestTimeoutMs'> {
  operation: Exclude<RetryInfo['operation'], 'events'>;
  /** Names the call in error messages, e.g. "hold of 0.5 credits for acme". */
  what: string;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves with the first answer that retrying cannot change; rejects with `retries_exhausted` otherwise. */
export async function callWithRetries(
  options: ResolvedOptions,
  call: Call,
  onRetry: (info: RetryInfo) => void,
): Promise<CallAnswer> {
  const startedMs = Date.now();
  for (let attempt = 1; ; attempt++) {
    const outcome = await attemptCall({
      url: call.url,
      method: call.method,
      apiKey: options.apiKey,
      ...(call.idempotencyKey === undefined ? {} : { idempotencyKey: call.idempotencyKey }),
      ...(call.body === undefined ? {} : { body: call.body }),
      requestTimeoutMs: options.requestTimeoutMs,
    });
    if (outcome.kind === 'answered') return { status: outcome.status, json: outcome.json };
    const delayMs = retryDelayMs(attempt, outcome.retryAfterMs, options);
    const elapsedMs = Date.now() - startedMs;
    if (attempt >= options.retryAttemptsMax || elapsedMs + delayMs > options.callRetryElapsedMaxMs) {
      throw new DrawdownSdkError(
        'retries_exhausted',
        `${call.what}: no answer after ${attempt} attempts in ${elapsedMs} ms (last: ${outcome.reason})`,
        {
          ...(outcome.status === undefined ? {} : { status: outcome.status }),
          ...(outcome.problem === undefined ? {} : { problem: outcome.problem }),
          ...(call.idempotencyKey === undefined ? {} : { idempotencyKey: call.idempotencyKey }),
        },
      );
    }
    onRetry({
      operation: call.operation,
      idempotencyKey: call.idempotencyKey ?? '',
      attempt,
      status: outcome.status,
      reason: outcome.reason,
      retryAfterMs: outcome.retryAfterMs,
      delayMs,
    });
    await sleep(delayMs);
  }
}
