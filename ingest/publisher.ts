/**
 * Publishes an accepted batch to JetStream and waits for the stream's
 * acknowledgement: only then is the batch durable and the client told 202.
 */
import { headers } from '@nats-io/transport-node';
import { JetStreamApiError, type JetStreamClient } from '@nats-io/jetstream';
import { DrawdownError } from '../shared/errors.js';
import { batchHeaders, partitionSubject, type StreamSettings } from '../shared/nats/stream.js';
import type { BatchFormat } from '../shared/batch.js';

export interface PublishResult {
  sequence: number;
  duplicate: boolean;
}

// nats-server reports a full stream as JSStreamStoreFailedF (10077) with
// "maximum messages/bytes exceeded", and an oversize message as 10054.
const streamFullPattern = /maximum (messages|bytes|messages per subject) exceeded|insufficient resources/i;

export function classifyPublishError(error: unknown): DrawdownError {
  if (error instanceof JetStreamApiError) {
    if (streamFullPattern.test(error.message)) {
      return new DrawdownError('stream_full', 'the event stream is full; raters are behind', { retryAfterSeconds: 5, cause: error });
    }
    if (error.code === 10054) return new DrawdownError('body_too_large', 'batch exceeds the stream message size limit', { cause: error });
  }
  return new DrawdownError('stream_unavailable', `event stream unavailable: ${(error as Error).message}`, { retryAfterSeconds: 2, cause: error });
}

export class BatchPublisher {
  readonly #js: JetStreamClient;
  readonly #settings: StreamSettings;
  readonly #timeoutMs: number;
  #next = 0;

  constructor(js: JetStreamClient, settings: StreamSettings, timeoutMs: number) {
    this.#js = js;
    this.#settings = settings;
    this.#timeoutMs = timeoutMs;
  }

  async publish(body: Uint8Array, format: BatchFormat, receivedMs: number, events: number, idempotencyKey: string | undefined): Promise<PublishResult> {
    // Round-robin spreads batches over partitions; duplicate detection is
    // stream-wide, so a retry may land on any partition.
    const partition = this.#next;
    this.#next = (this.#next + 1) % this.#settings.partitions;
    const h = headers();
    h.set(batchHeaders.format, format);
    h.set(batchHeaders.receivedMs, String(receivedMs));
    h.set(batchHeaders.events, String(events));
    try {
      const ack = await this.#js.publish(partitionSubject(this.#settings, partition), body, {
        headers: h,
        timeout: this.#timeoutMs,
        ...(idempotencyKey === undefined ? {} : { msgID: idempotencyKey }),
      });
      return { sequence: ack.seq, duplicate: ack.duplicate };
    } catch (error) {
      throw classifyPublishError(error);
    }
  }
}
