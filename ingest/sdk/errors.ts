/**
 * The SDK's one error type. Codes are stable (callers branch on them) and are
 * listed in ingest/sdk/README.md. They are the client's own: the gateway's
 * codes (shared/errors.ts) arrive inside `problem` when the gateway refused a
 * batch. The SDK deliberately imports nothing from the server side.
 */

export type SdkErrorCode =
  /** An option passed to createClient is missing, of the wrong type or out of range. */
  | 'option_invalid'
  /** track() was given an event the gateway would refuse (checked before it is buffered). */
  | 'event_invalid'
  /** One event alone encodes to more than batchBytesMax. */
  | 'event_too_large'
  /** track() after close(). */
  | 'client_closed'
  /** 'block' policy: more tracks are waiting for room than blockedTracksMax. */
  | 'too_many_waiting'
  /** The gateway refused a batch with a 4xx that retrying cannot fix; `problem` holds its problem+json. */
  | 'batch_rejected'
  /** A batch was still not accepted after retryAttemptsMax attempts or retryElapsedMaxMs. */
  | 'retries_exhausted';

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

  constructor(
    code: SdkErrorCode,
    message: string,
    options: {
      problems?: EventProblem[];
      status?: number;
      problem?: Record<string, unknown>;
      batch?: FailedBatch;
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
  }
}
