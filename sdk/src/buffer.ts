/**
 * Batches and the memory they hold.
 *
 * Each event is encoded to MessagePack once, at track() time, so its exact
 * size is known before it is buffered. A batch's body is a MessagePack array
 * header followed by the events' bytes — concatenating encoded items is valid
 * MessagePack, and the gateway publishes those bytes unchanged.
 *
 *   track() ─▶ open batch ──(batchEventsMax / batchBytesMax / flushIntervalMs / flush())──▶ sealed
 *   sealed ─▶ send queue ─▶ in flight (≤ requestsInFlightMax, retries keep the slot) ─▶ settled
 *   └──────────────── counted in bufferedEvents / bufferedBytes until settled ────────────────┘
 */
import { randomUUID } from 'node:crypto';

/** The largest MessagePack array header (array32: 0xdd + 4 bytes). */
export const arrayHeaderBytesMax = 5;

export function arrayHeader(count: number): Uint8Array {
  if (count < 16) return Uint8Array.of(0x90 | count);
  if (count < 0x10000) return Uint8Array.of(0xdc, count >>> 8, count & 0xff);
  return Uint8Array.of(0xdd, count >>> 24, (count >>> 16) & 0xff, (count >>> 8) & 0xff, count & 0xff);
}

export type BatchOutcome =
  { ok: true; attempts: number } | { ok: false; error: import('./errors.js').DrawdownSdkError };

export class Batch {
  /** Chosen once; every attempt of this batch carries it, so the gateway stores it at most once. */
  readonly idempotencyKey = `sdk-${randomUUID()}`;
  eventCount = 0;
  /** Encoded event bytes, without the array header. */
  eventBytes = 0;
  #chunks: Uint8Array[] = [];
  #body: Uint8Array<ArrayBuffer> | undefined;
  readonly done: Promise<BatchOutcome>;
  #resolve!: (outcome: BatchOutcome) => void;

  constructor() {
    this.done = new Promise((resolve) => (this.#resolve = resolve));
  }

  get sealed(): boolean {
    return this.#body !== undefined;
  }

  /** Whether one more event of `bytes` fits within the per-request limits. */
  fits(bytes: number, eventsMax: number, bytesMax: number): boolean {
    return this.eventCount + 1 <= eventsMax && arrayHeaderBytesMax + this.eventBytes + bytes <= bytesMax;
  }

  add(encoded: Uint8Array): void {
    if (this.sealed) throw new Error('bug: event added to a sealed batch');
    this.#chunks.push(encoded);
    this.eventCount += 1;
    this.eventBytes += encoded.length;
  }

  /**
   * Joins the events into one request body; the per-event buffers are released.
   * The body owns a fresh ArrayBuffer: that is what fetch's `BodyInit` accepts under
   * both @types/node and the DOM lib (a Buffer is typed over ArrayBufferLike, which DOM refuses).
   */
  seal(): void {
    if (this.sealed) return;
    const header = arrayHeader(this.eventCount);
    const body = new Uint8Array(header.length + this.eventBytes);
    body.set(header, 0);
    let offset = header.length;
    for (const chunk of this.#chunks) {
      body.set(chunk, offset);
      offset += chunk.length;
    }
    this.#body = body;
    this.#chunks = [];
  }

  get body(): Uint8Array<ArrayBuffer> {
    if (this.#body === undefined) throw new Error('bug: body of an unsealed batch');
    return this.#body;
  }

  settle(outcome: BatchOutcome): void {
    this.#resolve(outcome);
  }
}

/** Events and bytes held by the client, queued and in flight together, against their limits. */
export class MemoryAccount {
  events = 0;
  bytes = 0;
  constructor(
    readonly eventsMax: number,
    readonly bytesMax: number,
  ) {}

  hasRoom(bytes: number): boolean {
    return this.events + 1 <= this.eventsMax && this.bytes + bytes <= this.bytesMax;
  }

  take(bytes: number): void {
    this.events += 1;
    this.bytes += bytes;
  }

  release(events: number, bytes: number): void {
    this.events -= events;
    this.bytes -= bytes;
    if (this.events < 0 || this.bytes < 0) throw new Error('bug: released more than was taken');
  }
}
