/**
 * The error registry: every error drawdown reports has a stable code, an HTTP
 * status and a title. Codes are part of the API contract — clients branch on
 * them — so they are never renamed; docs/errors.md lists them and a test keeps
 * the two in step.
 */
export const errorCodes = {
  // Request-level problems (ingest and API).
  body_too_large: { status: 413, title: 'Request body exceeds the configured limit' },
  body_malformed: { status: 400, title: 'Request body could not be decoded' },
  body_not_array: { status: 400, title: 'Request body must be an array of events' },
  batch_too_many_events: { status: 413, title: 'Batch holds more events than the configured limit' },
  unsupported_media_type: { status: 415, title: 'Content-Type must be application/msgpack or application/json' },
  idempotency_key_invalid: { status: 400, title: 'Idempotency-Key header is invalid' },
  idempotency_key_reused: { status: 409, title: 'Idempotency-Key was already used for a different request' },
  // Event-level problems: every one names the event index and the field.
  event_invalid: { status: 422, title: 'One or more events are invalid' },
  // POST /api/v1/events (OpenMeter-compatible CloudEvents): 400 as OpenMeter answers a bad event.
  cloudevent_invalid: { status: 400, title: 'One or more CloudEvents are invalid' },
  // Authentication: a missing or unknown key, or a key without the route's scope.
  unauthorized: { status: 401, title: 'A valid API key is required' },
  forbidden: { status: 403, title: 'The API key does not have the scope this route needs' },
  // Request routing.
  not_found: { status: 404, title: 'No such resource' },
  method_not_allowed: { status: 405, title: 'Method not allowed on this resource' },
  request_timeout: { status: 408, title: 'Request body was not received in time' },
  // Validation of API request bodies (catalog, purchases, settlements).
  request_invalid: { status: 400, title: 'Request is invalid' },
  unknown_package: { status: 404, title: 'No such credit package' },
  // Catalog writes through the admin API and `drawdown catalog apply` (catalog/).
  catalog_definition_invalid: { status: 422, title: 'Catalog definition is invalid' },
  catalog_conflict: { status: 409, title: 'Catalog change would alter data already in use' },
  catalog_revision_stale: { status: 412, title: 'Catalog changed since the revision this write was based on' },
  // Credit holds (settlement/holds, docs/holds.md).
  insufficient_credits: { status: 402, title: 'Not enough credits available' },
  hold_not_found: { status: 404, title: 'No such hold' },
  hold_closed: { status: 409, title: 'The hold is already released, expired or closed' },
  too_many_open_holds: { status: 409, title: 'The account has as many open holds as it may' },
  holds_contended: { status: 503, title: 'Too many concurrent changes to this account; retry', retryAfterSeconds: 1 },
  holds_overloaded: {
    status: 503,
    title: 'Too many hold operations queued in this process; retry',
    retryAfterSeconds: 1,
  },
  holds_unavailable: {
    status: 503,
    title: 'The hold store (NATS JetStream) is unavailable; retry',
    retryAfterSeconds: 2,
  },
  // Backpressure and dependencies.
  stream_full: { status: 429, title: 'Event stream is at its limit; retry later' },
  stream_unavailable: { status: 503, title: 'Event stream is unavailable; retry later' },
  // Every store_unavailable tells the client when to retry, wherever it is thrown.
  store_unavailable: { status: 503, title: 'Storage is unavailable; retry later', retryAfterSeconds: 2 },
  store_replica_behind: {
    status: 503,
    title: 'The ClickHouse replica has not yet fetched every committed insert; retry later',
    retryAfterSeconds: 2,
  },
  // Configuration (start-up only; never an HTTP response in normal operation).
  config_invalid: { status: 500, title: 'Configuration is invalid' },
  catalog_invalid: { status: 500, title: 'Catalog is invalid' },
  chdb_not_installed: { status: 500, title: 'A chdb: ClickHouse URL needs the optional chdb package' },
  // The partition layout (shared/nats/partition-layout.ts): start-up and `drawdown partitions migrate` only.
  partition_layout_mismatch: {
    status: 500,
    title: 'DRAWDOWN_PARTITIONS (or the subject prefix) differs from the layout recorded for the stream',
  },
  partition_migration_refused: { status: 409, title: 'The partition layout cannot be changed now' },
  usage_migration_refused: { status: 409, title: 'usage_minute cannot be partitioned now' },
  internal: { status: 500, title: 'Internal error' },
} as const satisfies Record<string, { status: number; title: string; retryAfterSeconds?: number }>;

export type ErrorCode = keyof typeof errorCodes;

/** One problem with one input field; `index` is the event's position in its batch. */
export interface FieldProblem {
  index?: number;
  field: string;
  code: string;
  message: string;
}

export class DrawdownError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly problems: FieldProblem[];
  readonly retryAfterSeconds: number | undefined;
  /** Members the problem body carries besides the standard ones (e.g. insufficient_credits' `available`). */
  readonly extensions: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    detail?: string,
    options: {
      problems?: FieldProblem[];
      retryAfterSeconds?: number;
      cause?: unknown;
      extensions?: Record<string, unknown>;
    } = {},
  ) {
    super(detail ?? errorCodes[code].title, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DrawdownError';
    this.code = code;
    this.status = errorCodes[code].status;
    this.problems = options.problems ?? [];
    this.extensions = options.extensions ?? {};
    const entry: { status: number; retryAfterSeconds?: number } = errorCodes[code];
    this.retryAfterSeconds = options.retryAfterSeconds ?? entry.retryAfterSeconds;
  }

  /** RFC 7807 problem details, as served with `application/problem+json`. */
  toProblem(): Record<string, unknown> {
    const problem: Record<string, unknown> = {
      ...this.extensions,
      type: `https://drawdown.dev/errors/${this.code}`,
      title: errorCodes[this.code].title,
      status: this.status,
      code: this.code,
      detail: this.message,
    };
    if (this.problems.length > 0) problem.errors = this.problems;
    return problem;
  }
}

export function isDrawdownError(error: unknown): error is DrawdownError {
  return error instanceof DrawdownError;
}
