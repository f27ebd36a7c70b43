/**
 * The errors a hold operation reports. Codes are stable (clients branch on
 * them) and live in the registry (shared/errors.ts, docs/errors.md); each
 * error carries the HTTP status its route answers with.
 * `idempotency_key_reused` and `request_invalid` are the registry's own codes,
 * reused so that a client sees one meaning per code across the API.
 */
import { errorCodes, type ErrorCode } from '../../shared/errors.js';

const holdCodes = [
  'insufficient_credits',
  'hold_not_found',
  'hold_closed',
  'too_many_open_holds',
  'idempotency_key_reused',
  'request_invalid',
  // Safe to retry under the same idempotency key.
  'holds_contended',
  'holds_overloaded',
  'holds_unavailable',
] as const satisfies readonly ErrorCode[];

/** The registry's entries for the codes a hold operation reports (shared/errors.ts is their one home). */
export const holdErrorCodes = Object.fromEntries(holdCodes.map((code) => [code, errorCodes[code]])) as Pick<
  typeof errorCodes,
  (typeof holdCodes)[number]
>;

export type HoldErrorCode = keyof typeof holdErrorCodes;

export class HoldError extends Error {
  readonly code: HoldErrorCode;
  readonly status: number;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: HoldErrorCode, detail: string, options: { cause?: unknown } = {}) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = holdErrorCodes[code].status;
    const entry: { status: number; retryAfterSeconds?: number } = holdErrorCodes[code];
    this.retryAfterSeconds = entry.retryAfterSeconds;
  }
}

/** available + allowance < amount. `available` may be negative (usage past the balance). */
export class InsufficientCreditsError extends HoldError {
  constructor(
    readonly customer: string,
    readonly unit: string,
    readonly amount: string,
    readonly available: string,
    readonly allowance: string,
  ) {
    super(
      'insufficient_credits',
      `${customer} has ${available} ${unit} available (allowed negative balance ${allowance}); a hold of ${amount} needs more`,
    );
  }
}

export class HoldNotFoundError extends HoldError {
  constructor(readonly holdId: string) {
    super('hold_not_found', `no open or recently closed hold ${JSON.stringify(holdId)}`);
  }
}

export class HoldClosedError extends HoldError {
  constructor(
    readonly holdId: string,
    readonly holdStatus: 'released' | 'expired' | 'closed',
  ) {
    super('hold_closed', `hold ${JSON.stringify(holdId)} is ${holdStatus}`);
  }
}

export class TooManyOpenHoldsError extends HoldError {
  constructor(
    readonly customer: string,
    readonly unit: string,
    readonly openHoldsMax: number,
  ) {
    super(
      'too_many_open_holds',
      `${customer} already has ${openHoldsMax} open holds in ${unit}, the most an account may have; release or close some first`,
    );
  }
}

export class IdempotencyKeyReusedError extends HoldError {
  constructor(
    readonly key: string,
    readonly holdId: string,
  ) {
    super(
      'idempotency_key_reused',
      `Idempotency-Key ${JSON.stringify(key)} already reserved hold ${holdId} with a different amount or metadata; use a new key for a different hold`,
    );
  }
}

/** One invalid input, named by its field as the API would name it. */
export class HoldRequestInvalidError extends HoldError {
  constructor(
    readonly field: string,
    detail: string,
  ) {
    super('request_invalid', `${field}: ${detail}`);
  }
}

export class ContentionExhaustedError extends HoldError {
  constructor(
    readonly accountKey: string,
    readonly attempts: number,
  ) {
    super(
      'holds_contended',
      `account ${accountKey} changed under ${attempts} consecutive compare-and-set attempts; nothing was changed`,
    );
  }
}

export class HoldsOverloadedError extends HoldError {
  constructor(readonly pendingOpsMax: number) {
    super('holds_overloaded', `${pendingOpsMax} hold operations are already queued in this process (pendingOpsMax)`);
  }
}

/**
 * NATS did not answer, or answered with an error other than a revision
 * conflict. For a write the outcome is unknown: it may have been stored.
 * Retrying a reserve under the same key, or a release, is safe.
 */
export class HoldsUnavailableError extends HoldError {
  constructor(detail: string, cause?: unknown) {
    super('holds_unavailable', detail, { cause });
  }
}
