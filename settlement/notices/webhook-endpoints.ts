/**
 * Registered webhook endpoints, in NATS KV (bucket `drawdown_webhooks`, one
 * value per endpoint). Changes are compare-and-set on the value's revision,
 * so an admin edit and the dispatcher disabling a failing endpoint never
 * overwrite each other. The secret is kept to sign deliveries and shown once,
 * in the answer that created the endpoint.
 */
import { randomBytes } from 'node:crypto';
import { jetstream, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import type { NoticeType } from './notice.js';
import { newWebhookSecret } from './signer.js';
import { isCasConflict } from '../../shared/nats/cas-conflict.js';

export interface Endpoint {
  id: string;
  url: string;
  events: NoticeType[];
  description: string;
  secret: string;
  created_at: string;
  disabled: boolean;
  disabled_at: string | null;
  disabled_reason: string | null;
  last_success_at: string | null;
}

/** An endpoint as the API shows it after creation: everything but the secret. */
export type EndpointView = Omit<Endpoint, 'secret'>;

export function endpointView(endpoint: Endpoint): EndpointView {
  const { secret: _secret, ...view } = endpoint;
  return view;
}

export const endpointIdPattern = /^we_[A-Za-z0-9_-]{22}$/;
export const endpointsMax = 100;

export class EndpointNotFoundError extends Error {
  constructor(id: string) {
    super(`no webhook endpoint ${id}`);
    this.name = 'EndpointNotFoundError';
  }
}

export class EndpointStore {
  readonly #kv: KV;
  #cache: { atMs: number; endpoints: Promise<Endpoint[]> } | undefined;
  readonly #cacheMs: number;

  private constructor(kv: KV, cacheMs: number) {
    this.#kv = kv;
    this.#cacheMs = cacheMs;
  }

  static async open(
    nc: NatsConnection,
    options: { bucket?: string; replicas: number; cacheMs: number; requestTimeoutMs: number },
  ): Promise<EndpointStore> {
    const js = jetstream(nc, { timeout: options.requestTimeoutMs });
    const kv = await new Kvm(js).create(options.bucket ?? 'drawdown_webhooks', {
      storage: StorageType.File,
      replicas: options.replicas,
      history: 1,
      maxValueSize: 16 * 1024,
      allow_direct: false,
      description: 'drawdown webhook endpoints',
    });
    return new EndpointStore(kv, options.cacheMs);
  }

  async create(input: { url: string; events: NoticeType[]; description: string }, nowMs: number): Promise<Endpoint> {
    if ((await this.list()).length >= endpointsMax) throw new RangeError(`at most ${endpointsMax} webhook endpoints`);
    const endpoint: Endpoint = {
      id: `we_${randomBytes(16).toString('base64url').slice(0, 22)}`,
      url: input.url,
      events: input.events,
      description: input.description,
      secret: newWebhookSecret(),
      created_at: new Date(nowMs).toISOString(),
      disabled: false,
      disabled_at: null,
      disabled_reason: null,
      last_success_at: null,
    };
    await this.#kv.create(endpoint.id, JSON.stringify(endpoint));
    this.#cache = undefined;
    return endpoint;
  }

  async get(id: string): Promise<Endpoint | undefined> {
    if (!endpointIdPattern.test(id)) return undefined;
    const entry = await this.#kv.get(id);
    if (entry === null || entry.operation !== 'PUT' || entry.value.length === 0) return undefined;
    return JSON.parse(Buffer.from(entry.value).toString('utf8')) as Endpoint;
  }

  /** Every endpoint, read now (at most endpointsMax). */
  async list(): Promise<Endpoint[]> {
    const out: Endpoint[] = [];
    const keys = await this.#kv.keys();
    for await (const key of keys) {
      const endpoint = await this.get(key);
      if (endpoint !== undefined) out.push(endpoint);
      if (out.length >= endpointsMax) {
        keys.stop();
        break;
      }
    }
    return out.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
  }

  /** Every endpoint, read at most cacheMs ago (the dispatcher, per notice). */
  listCached(): Promise<Endpoint[]> {
    const nowMs = Date.now();
    if (this.#cache !== undefined && nowMs - this.#cache.atMs <= this.#cacheMs) return this.#cache.endpoints;
    const endpoints = this.list();
    const entry = { atMs: nowMs, endpoints };
    this.#cache = entry;
    endpoints.catch(() => {
      if (this.#cache === entry) this.#cache = undefined;
    });
    return endpoints;
  }

  /** Applies `change` under compare-and-set; `change` returning its input writes nothing. */
  async update(id: string, change: (endpoint: Endpoint) => Endpoint): Promise<Endpoint> {
    for (let attempt = 1; attempt <= 16; attempt++) {
      const entry = endpointIdPattern.test(id) ? await this.#kv.get(id) : null;
      if (entry === null || entry.operation !== 'PUT' || entry.value.length === 0) throw new EndpointNotFoundError(id);
      const current = JSON.parse(Buffer.from(entry.value).toString('utf8')) as Endpoint;
      const next = change(current);
      if (next === current) return current;
      try {
        await this.#kv.update(id, JSON.stringify(next), entry.revision);
        this.#cache = undefined;
        return next;
      } catch (error) {
        if (!isCasConflict(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
      }
    }
    throw new Error(`webhook endpoint ${id}: too many concurrent changes`);
  }

  async delete(id: string): Promise<boolean> {
    if ((await this.get(id)) === undefined) return false;
    await this.#kv.delete(id);
    this.#cache = undefined;
    return true;
  }
}
