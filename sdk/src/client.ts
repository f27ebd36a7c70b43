/**
 * The SDK client: track() buffers, batches go out by size or by time, each
 * batch is retried under its one Idempotency-Key, and memory stays bounded.
 * hold(), release() and entitlement() are single calls with retries
 * (holds.ts); they buffer nothing.
 *
 * Memory: every event counts against bufferedEventsMax / bufferedBytesMax
 * from track() until its batch is settled (acknowledged, or failed for good),
 * so queued, in-flight and retrying batches are all inside the limit. When it
 * is full, `whenFull` decides: 'block' makes track() wait (FIFO, at most
 * blockedTracksMax waiters), 'drop' refuses the new event and counts it.
 */
import { Packr } from 'msgpackr';
import { Batch, MemoryAccount, arrayHeaderBytesMax, type BatchOutcome } from './buffer.js';
import { DrawdownSdkError } from './errors.js';
import { prepareEvent, type TrackEvent } from './event.js';
import { HoldCalls, type Entitlement, type HoldRequest, type ReleasedHold, type ReservedHold } from './holds.js';
import { resolveOptions, type ClientOptions, type ResolvedOptions } from './options.js';
import { isRetryable, retryDelayMs } from './retry.js';
import { attemptBatch } from './transport.js';

export interface ClientStats {
  /** Events passed to track() that were valid (buffered, waiting, or dropped). */
  tracked: number;
  /** Events refused because the buffer was full under whenFull: 'drop'. */
  dropped: number;
  /** Events the gateway acknowledged (2xx). */
  acknowledged: number;
  /** Events in batches that failed for good (4xx, or retries exhausted). */
  failed: number;
  /** Events held now: open batch, queued, in flight and retrying. */
  bufferedEvents: number;
  bufferedBytes: number;
  /** track() calls waiting for room (whenFull: 'block'). */
  waitingTracks: number;
  requestsInFlight: number;
  batchesAcknowledged: number;
  batchesFailed: number;
  /** Attempts that were retried. */
  retries: number;
}

interface Waiter {
  encoded: Uint8Array;
  admitted: Promise<Batch>;
  admit: (batch: Batch) => void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class DrawdownClient {
  readonly options: ResolvedOptions;
  // useRecords: false — plain MessagePack maps, which any decoder (and the gateway) reads.
  readonly #packr = new Packr({ useRecords: false });
  readonly #memory: MemoryAccount;
  #open: Batch | undefined;
  #openTimer: ReturnType<typeof setTimeout> | undefined;
  /** Sealed batches waiting for a request slot; bounded by the memory account. */
  readonly #sendQueue: Batch[] = [];
  /** Every batch not yet settled, open one included: what flush() waits for. */
  readonly #unsettled = new Set<Batch>();
  /** track() calls waiting for room, oldest first; at most blockedTracksMax. */
  readonly #waiters: Waiter[] = [];
  #inFlight = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #counts = {
    tracked: 0,
    dropped: 0,
    acknowledged: 0,
    failed: 0,
    batchesAcknowledged: 0,
    batchesFailed: 0,
    retries: 0,
  };

  readonly #holds: HoldCalls;

  constructor(options: ClientOptions) {
    this.options = resolveOptions(options);
    this.#memory = new MemoryAccount(this.options.bufferedEventsMax, this.options.bufferedBytesMax);
    const onRetry = this.options.onRetry;
    this.#holds = new HoldCalls(this.options, (info) => {
      if (onRetry !== undefined) this.#notify(() => onRetry(info));
    });
  }

  /**
   * Reserves `amount` credits of `unit` for `customer` before expensive work
   * (docs/holds.md); name the returned `id` in the work's usage (`hold` in
   * track()) and release() it when done. Resolves with the hold once it is
   * reserved — or, with `created: false`, the hold this idempotency key made
   * before. Rejects with a DrawdownSdkError: `insufficient_credits` (402;
   * the figures in `credits`), `argument_invalid`, `request_rejected` (another
   * 4xx, `problem.code` says which), `retries_exhausted` (the hold may exist:
   * call again with `error.idempotencyKey`), `client_closed`.
   */
  async hold(customer: string, request: HoldRequest): Promise<ReservedHold> {
    if (this.#closed) throw new DrawdownSdkError('client_closed', 'hold() after close()');
    return this.#holds.hold(customer, request);
  }

  /**
   * Gives a hold up. It keeps counting for the server's release grace, so
   * usage track()ed just before is counted first (flush() before releasing);
   * `waitForUsage: false` returns its credits at once, for work that never
   * ran. Safe to repeat (`released: false` when it was
   * already released or expired); works after close(), so work in flight can
   * still give its holds back. Rejects with `request_rejected` (404
   * `hold_not_found`), `argument_invalid` or `retries_exhausted`.
   */
  async release(holdId: string, options: { waitForUsage?: boolean } = {}): Promise<ReleasedHold> {
    return this.#holds.release(holdId, options);
  }

  /**
   * Would a hold of `amount` be admitted now? Reserves nothing. Needs a key
   * with the `read` scope. Rejects as release() does.
   */
  async entitlement(customer: string, unit: string, amount: string | number = 0): Promise<Entitlement> {
    return this.#holds.entitlement(customer, unit, amount);
  }

  /**
   * Buffers one event. Throws DrawdownSdkError at once for an invalid event
   * (`event_invalid`, naming each field), an event too large for a batch
   * (`event_too_large`), a closed client (`client_closed`) or, under 'block',
   * too many waiting tracks (`too_many_waiting`) — these are the caller's bugs.
   *
   * Resolves true once the event is buffered (under 'block', when there is
   * room), false when it was dropped because the buffer was full ('drop').
   * It never rejects: delivery failures go to onError and flush().
   */
  track(event: TrackEvent): Promise<boolean> {
    if (this.#closed) throw new DrawdownSdkError('client_closed', 'track() after close()');
    const wire = prepareEvent(event, Date.now());
    const encoded = this.#packr.pack(wire);
    if (arrayHeaderBytesMax + encoded.length > this.options.batchBytesMax) {
      throw new DrawdownSdkError(
        'event_too_large',
        `event ${wire.id} encodes to ${encoded.length} bytes, more than batchBytesMax (${this.options.batchBytesMax}) allows`,
      );
    }
    if (this.#waiters.length === 0 && this.#memory.hasRoom(encoded.length)) {
      this.#counts.tracked += 1;
      this.#admit(encoded);
      return Promise.resolve(true);
    }
    if (this.options.whenFull === 'drop') {
      this.#counts.tracked += 1;
      this.#counts.dropped += 1;
      return Promise.resolve(false);
    }
    if (this.#waiters.length >= this.options.blockedTracksMax) {
      throw new DrawdownSdkError(
        'too_many_waiting',
        `${this.#waiters.length} track() calls are already waiting for room (blockedTracksMax); await track() before the next`,
      );
    }
    this.#counts.tracked += 1;
    let admit!: (batch: Batch) => void;
    const admitted = new Promise<Batch>((resolve) => (admit = resolve));
    this.#waiters.push({ encoded, admitted, admit });
    // The buffer is full: the open batch will not grow, so send it now rather than at its timer.
    if (this.#open !== undefined) this.#seal(this.#open);
    return admitted.then(() => true);
  }

  /**
   * Sends everything tracked before this call (including tracks still waiting
   * for room) and resolves when all of it is acknowledged. If any of those
   * batches failed for good it rejects with the first failure (every failure
   * also went to onError).
   */
  async flush(): Promise<void> {
    const batches = [...this.#unsettled];
    const waiters = [...this.#waiters];
    if (this.#open !== undefined) this.#seal(this.#open);
    const outcomes = new Map<Batch, BatchOutcome>();
    await Promise.all(batches.map(async (batch) => outcomes.set(batch, await batch.done)));
    for (const waiter of waiters) {
      const batch = await waiter.admitted;
      if (batch === this.#open) this.#seal(batch);
      outcomes.set(batch, await batch.done);
    }
    const failures = [...outcomes.values()].flatMap((outcome) => (outcome.ok ? [] : [outcome.error]));
    if (failures.length > 0) throw failures[0];
  }

  /**
   * Refuses further tracks, flushes, and resolves (or rejects, as flush()) when nothing is left. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closed = true;
    this.#closing ??= this.flush();
    return this.#closing;
  }

  stats(): ClientStats {
    return {
      ...this.#counts,
      bufferedEvents: this.#memory.events,
      bufferedBytes: this.#memory.bytes,
      waitingTracks: this.#waiters.length,
      requestsInFlight: this.#inFlight,
    };
  }

  #admit(encoded: Uint8Array): Batch {
    const { batchEventsMax, batchBytesMax } = this.options;
    if (this.#open !== undefined && !this.#open.fits(encoded.length, batchEventsMax, batchBytesMax))
      this.#seal(this.#open);
    let batch = this.#open;
    if (batch === undefined) {
      const opened = new Batch();
      batch = opened;
      this.#open = opened;
      this.#unsettled.add(opened);
      // Held by the timer: a process that exits without close() still sends what it tracked.
      this.#openTimer = setTimeout(() => this.#seal(opened), this.options.flushIntervalMs);
    }
    this.#memory.take(encoded.length);
    batch.add(encoded);
    if (batch.eventCount >= batchEventsMax) this.#seal(batch);
    return batch;
  }

  #seal(batch: Batch): void {
    if (batch !== this.#open) return;
    this.#open = undefined;
    clearTimeout(this.#openTimer);
    this.#openTimer = undefined;
    batch.seal();
    this.#sendQueue.push(batch);
    this.#pump();
  }

  #pump(): void {
    while (this.#inFlight < this.options.requestsInFlightMax && this.#sendQueue.length > 0) {
      const batch = this.#sendQueue.shift()!;
      this.#inFlight += 1;
      void this.#deliver(batch).then((outcome) => {
        this.#inFlight -= 1;
        this.#settle(batch, outcome);
        this.#pump();
      });
    }
  }

  /** Attempts a batch until it is accepted, refused for good, or out of attempts or time. Never rejects. */
  async #deliver(batch: Batch): Promise<BatchOutcome> {
    const o = this.options;
    const startedMs = Date.now();
    const failedBatch = (attempts: number) => ({
      idempotencyKey: batch.idempotencyKey,
      eventCount: batch.eventCount,
      body: batch.body,
      attempts,
    });
    for (let attempt = 1; ; attempt++) {
      const outcome = await attemptBatch({
        eventsUrl: o.eventsUrl,
        apiKey: o.apiKey,
        idempotencyKey: batch.idempotencyKey,
        body: batch.body,
        requestTimeoutMs: o.requestTimeoutMs,
      });
      if (outcome.kind === 'accepted') return { ok: true, attempts: attempt };
      const context = { status: outcome.status, problem: outcome.problem, batch: failedBatch(attempt) };
      if (!isRetryable(outcome.status)) {
        const problems = Array.isArray(outcome.problem?.errors)
          ? (outcome.problem.errors as DrawdownSdkError['problems'])
          : [];
        const detail = typeof outcome.problem?.detail === 'string' ? `: ${outcome.problem.detail}` : '';
        return {
          ok: false,
          error: new DrawdownSdkError(
            'batch_rejected',
            `batch ${batch.idempotencyKey} (${batch.eventCount} events) refused with ${outcome.reason}${detail}`,
            { ...context, problems },
          ),
        };
      }
      const delayMs = retryDelayMs(attempt, outcome.retryAfterMs, o);
      const elapsedMs = Date.now() - startedMs;
      if (attempt >= o.retryAttemptsMax || elapsedMs + delayMs > o.retryElapsedMaxMs) {
        return {
          ok: false,
          error: new DrawdownSdkError(
            'retries_exhausted',
            `batch ${batch.idempotencyKey} (${batch.eventCount} events) not accepted after ${attempt} attempts in ${elapsedMs} ms (last: ${outcome.reason})`,
            context,
          ),
        };
      }
      this.#counts.retries += 1;
      this.#notify(() =>
        o.onRetry?.({
          operation: 'events',
          idempotencyKey: batch.idempotencyKey,
          attempt,
          status: outcome.status,
          reason: outcome.reason,
          retryAfterMs: outcome.retryAfterMs,
          delayMs,
        }),
      );
      await sleep(delayMs);
    }
  }

  #settle(batch: Batch, outcome: BatchOutcome): void {
    this.#unsettled.delete(batch);
    this.#memory.release(batch.eventCount, batch.eventBytes);
    if (outcome.ok) {
      this.#counts.acknowledged += batch.eventCount;
      this.#counts.batchesAcknowledged += 1;
    } else {
      this.#counts.failed += batch.eventCount;
      this.#counts.batchesFailed += 1;
      const onError = this.options.onError;
      if (onError !== undefined) this.#notify(() => onError(outcome.error));
    }
    batch.settle(outcome);
    // Room was freed: let waiting tracks in, oldest first.
    while (this.#waiters.length > 0 && this.#memory.hasRoom(this.#waiters[0]!.encoded.length)) {
      const waiter = this.#waiters.shift()!;
      waiter.admit(this.#admit(waiter.encoded));
    }
    // Tracks still waiting: the buffer is full again, so the open batch will not grow — send it now.
    if (this.#waiters.length > 0 && this.#open !== undefined) this.#seal(this.#open);
  }

  /** A caller's callback that throws must not break delivery; its error is rethrown outside our bookkeeping. */
  #notify(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}

export function createClient(options: ClientOptions): DrawdownClient {
  return new DrawdownClient(options);
}
