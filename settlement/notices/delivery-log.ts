/**
 * The delivery log: one record per (endpoint, notice), in NATS KV (bucket
 * `drawdown_webhook_log`, history 1, values expire after `retentionMs`),
 * keyed `<endpoint id>.<notice id>`. It holds the status, the last attempts
 * (≤ attemptsKept) and the payload, so an operator can see what happened and
 * redeliver it. Only the process handling a delivery writes its record.
 */
import { jetstream, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';

export type DeliveryStatus = 'pending' | 'retrying' | 'delivered' | 'failed' | 'skipped';

export interface DeliveryAttempt {
  at: string;
  /** The endpoint's HTTP status; null when no answer came (refused, timed out). */
  status_code: number | null;
  error: string | null;
  duration_ms: number;
}

export interface DeliveryRecord {
  /** The notice id: also the webhook-id header, the same on every attempt. */
  id: string;
  endpoint: string;
  notice_type: string;
  status: DeliveryStatus;
  /** Attempts made so far, over every redelivery. */
  attempts: number;
  last_attempts: DeliveryAttempt[];
  created_at: string;
  updated_at: string;
  next_attempt_at: string | null;
  /** Times an operator asked for it again. */
  redeliveries: number;
  payload: string;
}

export const attemptsKept = 10;
/** Records a listing reads per endpoint (newest of these first). */
export const deliveriesListedMax = 1_000;

export class DeliveryLog {
  readonly #kv: KV;

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  static async open(
    nc: NatsConnection,
    options: { replicas: number; retentionMs: number; requestTimeoutMs: number; bucket?: string },
  ): Promise<DeliveryLog> {
    const js = jetstream(nc, { timeout: options.requestTimeoutMs });
    const kv = await new Kvm(js).create(options.bucket ?? 'drawdown_webhook_log', {
      storage: StorageType.File,
      replicas: options.replicas,
      history: 1,
      ttl: options.retentionMs,
      maxValueSize: 128 * 1024,
      description: 'drawdown webhook delivery log, per (endpoint, notice)',
    });
    return new DeliveryLog(kv);
  }

  async get(endpoint: string, noticeId: string): Promise<DeliveryRecord | undefined> {
    const entry = await this.#kv.get(`${endpoint}.${noticeId}`);
    if (entry === null || entry.operation !== 'PUT' || entry.value.length === 0) return undefined;
    return JSON.parse(Buffer.from(entry.value).toString('utf8')) as DeliveryRecord;
  }

  async put(record: DeliveryRecord): Promise<void> {
    await this.#kv.put(`${record.endpoint}.${record.id}`, JSON.stringify(record));
  }

  /** The endpoint's newest records (by created_at), at most `limit` of the first deliveriesListedMax read. */
  async list(endpoint: string, limit: number, status?: DeliveryStatus): Promise<DeliveryRecord[]> {
    const out: DeliveryRecord[] = [];
    const keys = await this.#kv.keys(`${endpoint}.>`);
    let read = 0;
    for await (const key of keys) {
      if (++read > deliveriesListedMax) {
        keys.stop();
        break;
      }
      const entry = await this.#kv.get(key);
      if (entry === null || entry.operation !== 'PUT' || entry.value.length === 0) continue;
      const record = JSON.parse(Buffer.from(entry.value).toString('utf8')) as DeliveryRecord;
      if (status === undefined || record.status === status) out.push(record);
    }
    out.sort((a, b) => b.created_at.localeCompare(a.created_at) || a.id.localeCompare(b.id));
    return out.slice(0, limit);
  }
}
