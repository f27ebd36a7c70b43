/**
 * Each account's crossing state (crossings.ts) in NATS JetStream KV, one
 * value per (customer, unit), changed only by compare-and-set on its
 * revision, as the holds bucket is (settlement/holds/hold-store.ts): two
 * processes evaluating one account at once cannot both open an episode — the
 * second write is refused, re-reads, and finds the crossing already decided.
 *
 * A decided crossing's notices go into the state's outbox in the same write,
 * so a process killed after the write and before publishing leaves them
 * there for the next evaluation or the sweep (notice-service.ts) to publish.
 */
import { jetstream, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { accountKey, parseHoldId } from '../holds/hold-ids.js';
import { emptyCrossingState, encodeCrossingState, parseCrossingState, type CrossingState } from './crossings.js';
import { isCasConflict } from '../../shared/nats/cas-conflict.js';

export interface CrossingStoreOptions {
  bucket: string;
  replicas: number;
  requestTimeoutMs: number;
  /** Compare-and-set attempts per change before giving up (the change is retried by the next evaluation). */
  attemptsMax: number;
}

export const crossingStoreDefaults: CrossingStoreOptions = {
  bucket: 'drawdown_notice_state',
  replicas: 1,
  requestTimeoutMs: 5_000,
  attemptsMax: 16,
};

export interface Versioned {
  state: CrossingState;
  revision: number;
}

export class CrossingContendedError extends Error {
  constructor(key: string, attempts: number) {
    super(`notice state ${key}: ${attempts} compare-and-set attempts all lost to other writers`);
    this.name = 'CrossingContendedError';
  }
}

export class CrossingStore {
  readonly #kv: KV;
  readonly #options: CrossingStoreOptions;

  private constructor(kv: KV, options: CrossingStoreOptions) {
    this.#kv = kv;
    this.#options = options;
  }

  static async open(nc: NatsConnection, options: Partial<CrossingStoreOptions> = {}): Promise<CrossingStore> {
    const filled = { ...crossingStoreDefaults, ...options };
    const js = jetstream(nc, { timeout: filled.requestTimeoutMs });
    const kv = await new Kvm(js).create(filled.bucket, {
      storage: StorageType.File,
      replicas: filled.replicas,
      history: 1,
      // 256 outbox items of ~1 KB plus conditions and requests stay far below this.
      maxValueSize: 512 * 1024,
      allow_direct: false,
      description: 'drawdown notices: crossing state per (customer, credit unit)',
    });
    return new CrossingStore(kv, filled);
  }

  static key(customer: string, unit: string): string {
    return accountKey({ customer, unit });
  }

  /** customer and unit of a key (keys are account keys: hold ids without a suffix). */
  static account(key: string): { customer: string; unit: string } | undefined {
    return parseHoldId(`${key}.AAAAAAAAAAAAAAAA`)?.account;
  }

  async read(key: string): Promise<Versioned> {
    const entry = await this.#kv.get(key);
    if (entry === null || entry.operation !== 'PUT' || entry.value.length === 0)
      return { state: emptyCrossingState(), revision: entry?.revision ?? 0 };
    return { state: parseCrossingState(entry.value), revision: entry.revision };
  }

  /**
   * Applies `change` to the stored state under compare-and-set, re-reading
   * and re-applying on conflict. `change` returns its input to mean "nothing
   * to write". Answers the state that is stored after the call.
   */
  async update(key: string, change: (state: CrossingState) => CrossingState): Promise<Versioned> {
    for (let attempt = 1; attempt <= this.#options.attemptsMax; attempt++) {
      const current = await this.read(key);
      const next = change(current.state);
      if (next === current.state) return current;
      try {
        const bytes = encodeCrossingState(next);
        const revision =
          current.revision === 0
            ? await this.#kv.create(key, bytes)
            : await this.#kv.update(key, bytes, current.revision);
        return { state: next, revision };
      } catch (error) {
        // create() on a key another process created meanwhile is refused the same way.
        if (!isCasConflict(error) && !(error instanceof Error && /wrong last sequence|exists/i.test(error.message)))
          throw error;
        const ceilingMs = Math.min(100, 2 * 2 ** Math.min(attempt - 1, 10));
        await new Promise((resolve) => setTimeout(resolve, Math.random() * ceilingMs));
      }
    }
    throw new CrossingContendedError(key, this.#options.attemptsMax);
  }

  /** Up to `max` keys of the bucket (the sweep's work list). */
  async keys(max: number): Promise<string[]> {
    const out: string[] = [];
    const iterator = await this.#kv.keys();
    for await (const key of iterator) {
      out.push(key);
      if (out.length >= max) {
        iterator.stop();
        break;
      }
    }
    return out;
  }
}
