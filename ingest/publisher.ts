/**
 * Publishes an accepted batch to JetStream and waits for the stream's
 * acknowledgement: only then is the batch durable and the client told 202.
 */
import { headers } from '@nats-io/transport-node';
import { JetStreamApiError, type JetStreamClient, type PubAck } from '@nats-io/jetstream';
import { DrawdownError } from '../shared/errors.js';
import { batchHeaders, partitionSubject, type StreamSettings } from '../shared/nats/stream.js';
import type { BatchFormat } from '../shared/events/batch.js';
import type { BatchPart } from './route.js';
import { batchFingerprint } from './batch-fingerprint.js';
import type { KeyClaims } from './key-claims.js';

/** The trace context each part carries to the rater (headers as they go on the wire). */
export interface PartTrace {
  traceparent: string;
  tracestate: string | undefined;
}

export interface PublishResult {
  /** The highest stream sequence among the batch's parts. */
  sequence: number;
  /** True when every part had been stored before (a retry). */
  duplicate: boolean;
  parts: number;
}

// nats-server reports a full stream as JSStreamStoreFailedF (10077) with
// "maximum messages/bytes exceeded", and an oversize message as 10054.
// "insufficient resources" (10023) is not a full stream: JetStream says it
// while it recovers after a restart, and a client should simply retry soon,
// so it falls through to 503 stream_unavailable.
const streamFullPattern = /maximum (messages|bytes|messages per subject) exceeded/i;

export function classifyPublishError(error: unknown): DrawdownError {
  if (error instanceof JetStreamApiError) {
    if (streamFullPattern.test(error.message)) {
      return new DrawdownError('stream_full', 'the event stream is full; raters are behind', {
        retryAfterSeconds: 5,
        cause: error,
      });
    }
    if (error.code === 10054)
      return new DrawdownError('body_too_large', 'batch exceeds the stream message size limit', { cause: error });
  }
  return new DrawdownError('stream_unavailable', `event stream unavailable: ${(error as Error).message}`, {
    retryAfterSeconds: 2,
    cause: error,
  });
}

export class BatchPublisher {
  readonly #js: JetStreamClient;
  readonly #settings: StreamSettings;
  readonly #timeoutMs: number;
  readonly #claims: KeyClaims;

  constructor(js: JetStreamClient, settings: StreamSettings, timeoutMs: number, claims: KeyClaims) {
    this.#js = js;
    this.#settings = settings;
    this.#timeoutMs = timeoutMs;
    this.#claims = claims;
  }

  get partitions(): number {
    return this.#settings.partitions;
  }

  get streamName(): string {
    return this.#settings.name;
  }

  /**
   * Publishes a batch's parts (one per partition its customers map to) at
   * once and resolves when every part is acknowledged. A keyed batch first
   * claims its key (ingest/key-claims.ts), so a key never stands for two
   * bodies. Each part's message id is the Idempotency-Key plus its
   * partition: a retried batch splits the same way, so JetStream recognises
   * every part, including those a failed attempt had already stored. A batch
   * sent without a key and retried after a partial failure is covered by
   * event-id dedupe in the rater instead.
   */
  async publish(
    parts: readonly BatchPart[],
    format: BatchFormat,
    receivedMs: number,
    idempotencyKey: string | undefined,
    catalogRevision: number,
    body: Uint8Array,
    trace?: PartTrace,
  ): Promise<PublishResult> {
    if (idempotencyKey !== undefined) {
      let outcome;
      try {
        outcome = await this.#claims.claim(idempotencyKey, batchFingerprint(body));
      } catch (error) {
        throw classifyPublishError(error);
      }
      if (outcome === 'other-body') {
        throw new DrawdownError(
          'idempotency_key_reused',
          'this Idempotency-Key was already used for a different batch, which is the one that counts; send a new batch under a new key',
        );
      }
    }
    const acks = await Promise.all(
      parts.map((part) => this.#publishPart(part, format, receivedMs, idempotencyKey, catalogRevision, trace)),
    );
    return {
      sequence: Math.max(...acks.map((a) => a.seq)),
      duplicate: acks.every((a) => a.duplicate),
      parts: parts.length,
    };
  }

  async #publishPart(
    part: BatchPart,
    format: BatchFormat,
    receivedMs: number,
    idempotencyKey: string | undefined,
    catalogRevision: number,
    trace: PartTrace | undefined,
  ): Promise<{ seq: number; duplicate: boolean }> {
    const h = headers();
    h.set(batchHeaders.catalogRevision, String(catalogRevision));
    h.set(batchHeaders.format, format);
    h.set(batchHeaders.receivedMs, String(receivedMs));
    h.set(batchHeaders.events, String(part.events));
    if (trace !== undefined) {
      h.set(batchHeaders.traceparent, trace.traceparent);
      if (trace.tracestate !== undefined) h.set(batchHeaders.tracestate, trace.tracestate);
    }
    let pending: Promise<PubAck>;
    // nats.js builds two Errors per request up front, for stack traces should
    // it fail (its "async traces"): a tenth of the gateway's CPU at full load.
    // They are made synchronously inside this call, so capturing no frames
    // just for its duration makes them cheap; a failure is still reported
    // with its message and cause by classifyPublishError.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      pending = this.#js.publish(partitionSubject(this.#settings, part.partition), part.body, {
        headers: h,
        timeout: this.#timeoutMs,
        ...(idempotencyKey === undefined ? {} : { msgID: `${idempotencyKey}#${part.partition}` }),
      });
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    try {
      return await pending;
    } catch (error) {
      throw classifyPublishError(error);
    }
  }
}
