/**
 * Webhook delivery. Two durable JetStream consumers, shared by every
 * settlement process (each message goes to one of them):
 *
 *   DRAWDOWN_NOTICES ──(consumer webhook-fanout)──▶ one message per matching enabled endpoint
 *        │                                          on DRAWDOWN_WEBHOOK_DELIVERIES (msg id = endpoint:notice,
 *        │                                          so a fan-out repeated after a crash adds nothing), then ack
 *        ▼
 *   DRAWDOWN_WEBHOOK_DELIVERIES ──(consumer webhook-delivery, ≤ concurrency in flight per process)──▶
 *        POST url, signed (signer.ts), timeout ─▶ 2xx: log delivered, ack
 *                                               else: attempts left ─▶ log retrying, nak(delay ± jitter)
 *                                                     none left ─▶ log failed, term; disable the endpoint if it
 *                                                               has not succeeded since this delivery began
 *
 * Retries are JetStream redeliveries (nak with a delay), so they survive a
 * restart; a process killed mid-attempt has its message redelivered after
 * the ack wait. Delivery is therefore at-least-once: receivers dedupe on
 * `webhook-id` (the notice id). Limits: `concurrency` attempts at once per
 * process, `pendingMax` deliveries waiting between attempts (the consumer's
 * max_ack_pending), the deliveries stream's message and byte limits
 * (discard new: a fan-out that does not fit is retried, not dropped).
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from '../../shared/log.js';
import type { DeliveryAttempt, DeliveryLog, DeliveryRecord } from './delivery-log.js';
import { attemptsKept } from './delivery-log.js';
import type { Endpoint, EndpointStore } from './webhook-endpoints.js';
import { isNoticeType, noticeId, type Notice } from './notice.js';
import type { NoticePublisher } from './notice-stream.js';
import type { NoticeMetrics } from './notice-metrics.js';
import { webhookHeaders } from './signer.js';

export interface WebhookSettings {
  /** Delays before the 2nd, 3rd, … attempt, in ms; jittered ±jitterRatio. Their sum is how long a delivery is tried. */
  retryScheduleMs: readonly number[];
  jitterRatio: number;
  /** One attempt's time limit (connect, send, answer), in ms. */
  timeoutMs: number;
  /** Attempts in flight per process. */
  concurrency: number;
  /** Deliveries waiting between attempts, all processes (the consumer's max_ack_pending). */
  pendingMax: number;
  streamMessagesMax: number;
  streamBytesMax: number;
  replicas: number;
  noticeStream: string;
}

/** Standard Webhooks' suggested schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — 27 h 35 min in all. */
export const defaultRetryScheduleMs: readonly number[] = [
  5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

export const deliveriesStream = 'DRAWDOWN_WEBHOOK_DELIVERIES';
const deliveriesSubjectPrefix = 'drawdown.webhook_deliveries';
const fanoutConsumer = 'webhook-fanout';
const deliveryConsumer = 'webhook-delivery';

interface DeliveryMessage {
  endpoint: string;
  notice_id: string;
  notice_type: string;
  /** The notice's timestamp, for the delivery-latency metric. */
  notice_at: string;
  payload: string;
}

function isNotFound(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamNotFound || error.code === JetStreamApiCodes.ConsumerNotFound)
  );
}

function messageOf(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message;
  }
  return String(error);
}

export interface DispatcherDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  endpoints: EndpointStore;
  deliveries: DeliveryLog;
  publisher: NoticePublisher;
  settings: WebhookSettings;
  metrics: NoticeMetrics;
  log: Logger;
  now?: () => number;
}

export class WebhookDispatcher {
  readonly #deps: DispatcherDeps;
  readonly #now: () => number;
  readonly #streams: ConsumerMessages[] = [];
  readonly #loops: Promise<void>[] = [];
  readonly #inFlight = new Set<Promise<void>>();
  #stopped = false;
  /** When this process last recorded an endpoint's success (ms), so a busy endpoint is not rewritten per delivery. */
  readonly #successWritten = new Map<string, number>();

  constructor(deps: DispatcherDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  async start(): Promise<void> {
    const { jsm, settings } = this.#deps;
    const config = {
      name: deliveriesStream,
      subjects: [`${deliveriesSubjectPrefix}.*`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.New,
      max_msgs: settings.streamMessagesMax,
      max_bytes: settings.streamBytesMax,
      duplicate_window: nanos(2 * 3_600_000),
      num_replicas: settings.replicas,
    };
    try {
      await jsm.streams.info(deliveriesStream);
      const { name, retention: _r, storage: _s, ...update } = config;
      await jsm.streams.update(name, update);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await jsm.streams.add(config);
    }
    await this.#ensureConsumer(settings.noticeStream, fanoutConsumer, 30_000, 1_000);
    await this.#ensureConsumer(deliveriesStream, deliveryConsumer, settings.timeoutMs + 10_000, settings.pendingMax);
    const fanout = await this.#deps.js.consumers.get(settings.noticeStream, fanoutConsumer);
    const delivery = await this.#deps.js.consumers.get(deliveriesStream, deliveryConsumer);
    this.#loops.push(this.#run(fanout, 64, (m) => this.#fanout(m)));
    this.#loops.push(this.#run(delivery, settings.concurrency, (m) => this.#deliver(m)));
  }

  async #ensureConsumer(stream: string, name: string, ackWaitMs: number, maxAckPending: number): Promise<void> {
    const config = {
      durable_name: name,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(ackWaitMs),
      max_ack_pending: maxAckPending,
      // Never dropped by the server: the dispatcher ends a delivery itself (term) when its schedule is spent.
      max_deliver: -1,
    };
    try {
      await this.#deps.jsm.consumers.info(stream, name);
      await this.#deps.jsm.consumers.update(stream, name, {
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
      });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await this.#deps.jsm.consumers.add(stream, config);
    }
  }

  /** Pulls messages and handles up to `parallel` at once; a handler that throws leaves its message to redelivery. */
  async #run(consumer: Consumer, parallel: number, handle: (m: JsMsg) => Promise<void>): Promise<void> {
    while (!this.#stopped) {
      let messages: ConsumerMessages;
      try {
        messages = await consumer.consume({ max_messages: parallel });
      } catch (error) {
        this.#deps.log.warn({ err: error }, 'webhook consumer unavailable; retrying');
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        continue;
      }
      this.#streams.push(messages);
      const slots = new Set<Promise<void>>();
      for await (const message of messages) {
        if (this.#stopped) break;
        const work = handle(message).catch((error: unknown) => {
          this.#deps.log.warn({ err: error }, 'webhook work failed; the message is redelivered after its ack wait');
        });
        slots.add(work);
        this.#inFlight.add(work);
        void work.finally(() => {
          slots.delete(work);
          this.#inFlight.delete(work);
        });
        if (slots.size >= parallel) await Promise.race(slots);
      }
    }
  }

  async #fanout(message: JsMsg): Promise<void> {
    let notice: Notice;
    try {
      notice = message.json<Notice>();
    } catch {
      message.term();
      return;
    }
    if (!isNoticeType(notice.type) || typeof notice.id !== 'string') {
      message.term();
      return;
    }
    const endpoints = await this.#deps.endpoints.listCached();
    const payload = message.string();
    for (const endpoint of endpoints) {
      if (endpoint.disabled || !endpoint.events.includes(notice.type)) continue;
      const delivery: DeliveryMessage = {
        endpoint: endpoint.id,
        notice_id: notice.id,
        notice_type: notice.type,
        notice_at: notice.timestamp,
        payload,
      };
      await this.#deps.js.publish(`${deliveriesSubjectPrefix}.${endpoint.id}`, JSON.stringify(delivery), {
        msgID: `${endpoint.id}:${notice.id}`,
      });
    }
    message.ack();
  }

  #jittered(delayMs: number): number {
    const ratio = this.#deps.settings.jitterRatio;
    return Math.max(0, Math.round(delayMs * (1 - ratio + 2 * ratio * Math.random())));
  }

  async #deliver(message: JsMsg): Promise<void> {
    const { settings, metrics, deliveries } = this.#deps;
    const delivery = message.json<DeliveryMessage>();
    const attempt = message.info.deliveryCount;
    const endpoint = (await this.#deps.endpoints.listCached()).find((e) => e.id === delivery.endpoint);
    const nowMs = this.#now();
    const previous = await deliveries.get(delivery.endpoint, delivery.notice_id);
    const record: DeliveryRecord = previous ?? {
      id: delivery.notice_id,
      endpoint: delivery.endpoint,
      notice_type: delivery.notice_type,
      status: 'pending',
      attempts: 0,
      last_attempts: [],
      created_at: new Date(nowMs).toISOString(),
      updated_at: new Date(nowMs).toISOString(),
      next_attempt_at: null,
      redeliveries: 0,
      payload: delivery.payload,
    };
    if (endpoint === undefined || endpoint.disabled) {
      await deliveries.put({
        ...record,
        status: 'skipped',
        next_attempt_at: null,
        updated_at: new Date(nowMs).toISOString(),
      });
      metrics.deliveries.inc({ outcome: 'skipped' });
      message.term();
      return;
    }
    const outcome = await this.#attempt(endpoint, delivery);
    const attempts = [...record.last_attempts, outcome.attempt].slice(-attemptsKept);
    const base = { ...record, attempts: record.attempts + 1, last_attempts: attempts, updated_at: outcome.attempt.at };
    if (outcome.ok) {
      await deliveries.put({ ...base, status: 'delivered', next_attempt_at: null });
      metrics.deliveries.inc({ outcome: 'delivered' });
      const noticeMs = Date.parse(delivery.notice_at);
      if (Number.isFinite(noticeMs)) metrics.deliveryLatency.observe(Math.max(0, this.#now() - noticeMs) / 1000);
      message.ack();
      await this.#recordSuccess(endpoint.id);
      return;
    }
    if (attempt <= settings.retryScheduleMs.length) {
      const delayMs = this.#jittered(settings.retryScheduleMs[attempt - 1]!);
      await deliveries.put({
        ...base,
        status: 'retrying',
        next_attempt_at: new Date(this.#now() + delayMs).toISOString(),
      });
      metrics.deliveries.inc({ outcome: 'retrying' });
      message.nak(delayMs);
      return;
    }
    await deliveries.put({ ...base, status: 'failed', next_attempt_at: null });
    metrics.deliveries.inc({ outcome: 'failed' });
    message.term();
    await this.#maybeDisable(endpoint.id, record.created_at, delivery.notice_id);
  }

  async #attempt(endpoint: Endpoint, delivery: DeliveryMessage): Promise<{ ok: boolean; attempt: DeliveryAttempt }> {
    const startedMs = this.#now();
    const started = performance.now();
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      const response = await fetch(endpoint.url, {
        method: 'POST',
        headers: webhookHeaders(endpoint.secret, delivery.notice_id, startedMs, delivery.payload),
        body: delivery.payload,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#deps.settings.timeoutMs),
      });
      statusCode = response.status;
      // The answer's body is not needed; not reading it frees the connection.
      await response.body?.cancel().catch(() => undefined);
      if (statusCode < 200 || statusCode >= 300) error = `HTTP ${statusCode}`;
    } catch (caught) {
      error =
        caught instanceof Error && (caught.name === 'TimeoutError' || caught.name === 'AbortError')
          ? `no answer within ${this.#deps.settings.timeoutMs} ms`
          : messageOf(caught).slice(0, 500);
    }
    const seconds = (performance.now() - started) / 1000;
    this.#deps.metrics.attemptDuration.observe(seconds);
    return {
      ok: error === null,
      attempt: {
        at: new Date(startedMs).toISOString(),
        status_code: statusCode,
        error,
        duration_ms: Math.round(seconds * 1000),
      },
    };
  }

  async #recordSuccess(endpointId: string): Promise<void> {
    const nowMs = this.#now();
    const written = this.#successWritten.get(endpointId) ?? 0;
    if (nowMs - written < 1_000) return;
    this.#successWritten.set(endpointId, nowMs);
    await this.#deps.endpoints
      .update(endpointId, (e) => ({ ...e, last_success_at: new Date(nowMs).toISOString() }))
      .catch((error: unknown) => this.#deps.log.warn({ err: error, endpoint: endpointId }, 'could not record success'));
  }

  /**
   * Sustained failure: a delivery spent its whole schedule (≥ 24 h by default) and the endpoint answered no
   * delivery with a 2xx since this one began. The endpoint is disabled (compare-and-set: once, whichever
   * process sees it first) and a webhook.endpoint_disabled notice goes to the stream.
   */
  async #maybeDisable(endpointId: string, deliveryCreatedAt: string, deliveryNoticeId: string): Promise<void> {
    const nowMs = this.#now();
    let disabledNow = false;
    const endpoint = await this.#deps.endpoints.update(endpointId, (e) => {
      if (e.disabled) return e;
      if (e.last_success_at !== null && e.last_success_at >= deliveryCreatedAt) return e;
      disabledNow = true;
      return {
        ...e,
        disabled: true,
        disabled_at: new Date(nowMs).toISOString(),
        disabled_reason: `no 2xx answer to any delivery since ${deliveryCreatedAt}; delivery ${deliveryNoticeId} failed every attempt`,
      };
    });
    if (!disabledNow) return;
    this.#deps.metrics.endpointsDisabled.inc();
    this.#deps.log.warn(
      { endpoint: endpointId, url: endpoint.url },
      'webhook endpoint disabled after sustained failure',
    );
    const notice: Notice = {
      id: noticeId(['webhook.endpoint_disabled', endpointId, deliveryNoticeId]),
      type: 'webhook.endpoint_disabled',
      timestamp: endpoint.disabled_at ?? new Date(nowMs).toISOString(),
      data: { endpoint: endpointId, url: endpoint.url, reason: endpoint.disabled_reason },
    };
    const result = await this.#deps.publisher.publish(notice);
    if (result.stored) this.#deps.metrics.emitted.inc({ type: notice.type });
  }

  /** Sends a logged delivery again, as a new chain of attempts (its record keeps counting). */
  async redeliver(endpointId: string, noticeIdText: string): Promise<DeliveryRecord | undefined> {
    const record = await this.#deps.deliveries.get(endpointId, noticeIdText);
    if (record === undefined) return undefined;
    const nowMs = this.#now();
    const next: DeliveryRecord = {
      ...record,
      status: 'pending',
      redeliveries: record.redeliveries + 1,
      next_attempt_at: new Date(nowMs).toISOString(),
      updated_at: new Date(nowMs).toISOString(),
    };
    await this.#deps.deliveries.put(next);
    let noticeAt = next.created_at;
    try {
      noticeAt = (JSON.parse(record.payload) as Notice).timestamp;
    } catch {
      // The payload is the notice as published; keep the record's time if it ever is not JSON.
    }
    const message: DeliveryMessage = {
      endpoint: endpointId,
      notice_id: record.id,
      notice_type: record.notice_type,
      notice_at: noticeAt,
      payload: record.payload,
    };
    await this.#deps.js.publish(`${deliveriesSubjectPrefix}.${endpointId}`, JSON.stringify(message), {
      msgID: `${endpointId}:${record.id}:redelivery:${next.redeliveries}`,
    });
    return next;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const messages of this.#streams) await messages.close().catch(() => undefined);
    await Promise.allSettled([...this.#inFlight]);
    await Promise.allSettled(this.#loops);
  }
}
