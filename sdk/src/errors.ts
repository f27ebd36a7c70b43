/**
 * The SDK's one error type. Codes are stable (callers branch on them) and are
 * listed in sdk/README.md. They are the client's own: the server's
 * codes (shared/errors.ts) arrive inside `problem` when it refused a batch or
 * a call — except `insufficient_credits`, the one refusal a caller of hold()
 * acts on every day, which is its own code with its figures in `credits`.
 * The SDK deliberately imports nothing from the server side.
 */

export type SdkErrorCode =
  /** An option passed to createClient is missing, of the wrong type or out of range. */
  | 'option_invalid'
  /** track() was given an event the gateway would refuse (checked before it is buffered). */
  | 'event_invalid'
  /** One event alone encodes to more than batchBytesMax. */
  | 'event_too_large'
  /** track() or hold() after close(). */
  | 'client_closed'
  /** 'block' policy: more tracks are waiting for room than blockedTracksMax. */
  | 'too_many_waiting'
  /** The gateway refused a batch with a 4xx that retrying cannot fix; `problem` holds its problem+json. */
  | 'batch_rejected'
  /** Not accepted after retryAttemptsMax attempts or retryElapsedMaxMs (a call: callRetryElapsedMaxMs). */
  | 'retries_exhausted'
  /** hold(), release() or entitlement() was given an argument the API would refuse (checked before sending). */
  | 'argument_invalid'
  /** hold() was refused with 402: available + allowance < amount; figures in `credits`, nothing reserved. */
  | 'insufficient_credits'
  /** The API refused hold(), release() or entitlement() with another 4xx; `problem.code` says why (hold_not_found…). */
  | 'request_rejected'
  /** A 2xx answer to a call that is not the JSON the API documents (a proxy in the way?). */
  | 'response_invalid';

/** What an `insufficient_credits` refusal was decided on (decimal strings, exact). */
export interface InsufficientCredits {
  customer: string;
  unit: string;
  /** What the hold asked for. */
  amount: string;
  /** settled − pending − held at the decision; may be negative. */
  available: string;
  /** The unit's allowed negative balance. */
  allowance: string;
}

/** One problem with one field, as the gateway's 422 `errors[]` (index = position in the batch). */
export interface EventProblem {
  index?: number;
  field: string;
  code: string;
  message: string;
}

/** What a failed batch carries, so the caller can log it, persist it, or re-send the same bytes under the same key. */
export interface FailedBatch {
  idempotencyKey: string;
  eventCount: number;
  /** The exact MessagePack body that was sent (an array of events). */
  body: Uint8Array;
  attempts: number;
}

export class DrawdownSdkError extends Error {
  readonly code: SdkErrorCode;
  /** track-time problems (`event_invalid`), or the gateway's `errors[]` for a 422. */
  readonly problems: EventProblem[];
  /** The gateway's HTTP status, when the error came from a response. */
  readonly status: number | undefined;
  /** The gateway's problem+json body, when it sent one. */
  readonly problem: Record<string, unknown> | undefined;
  /** The batch that failed (`batch_rejected`, `retries_exhausted`). */
  readonly batch: FailedBatch | undefined;
  /** `insufficient_credits`: the figures the refusal was decided on. */
  readonly credits: InsufficientCredits | undefined;
  /**
   * A hold() that failed: the Idempotency-Key its attempts carried. After `retries_exhausted` the hold may exist;
   * call hold() again with this key to get it (or release it) rather than reserving twice.
   */
  readonly idempotencyKey: string | undefined;

  constructor(
    code: SdkErrorCode,
    message: string,
    options: {
      problems?: EventProblem[];
      status?: number;
      problem?: Record<string, unknown>;
      batch?: FailedBatch;
      credits?: InsufficientCredits;
      idempotencyKey?: string;
      cause?: unknown;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DrawdownSdkError';
    this.code = code;
    this.problems = options.problems ?? [];
    this.status = options.status;
    this.problem = options.problem;
    this.batch = options.batch;
    this.credits = options.credits;
    this.idempotencyKey = options.idempotencyKey;
  }
}
