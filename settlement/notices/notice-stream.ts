/**
 * The notices stream: every notice drawdown emits, one JetStream message
 * each, on `drawdown.notices.<type>`, for the product to consume and for the
 * webhook dispatcher (dispatcher.ts).
 *
 * Exactly one stream message per notice id: each is published with
 * `Nats-Msg-Id` = the notice id, and JetStream stores a second publish of an
 * id inside the stream's duplicate window as nothing (the publish is
 * acknowledged as a duplicate). Limits retention (consumers read, nothing is
 * removed by reading), bounded by age and bytes, oldest dropped first.
 */
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { noticeSubject, noticeSubjectPrefix, type Notice } from './notice.js';
import { ensureStreamLimits } from '../../shared/nats/stream.js';

export interface NoticeStreamSettings {
  name: string;
  replicas: number;
  /** How long a notice stays readable, in ms. */
  maxAgeMs: number;
  maxBytes: number;
  /** Publishes of one notice id inside this window are one message, in ms (≤ maxAgeMs). */
  duplicateWindowMs: number;
  publishTimeoutMs: number;
}

export const noticeStreamDefaults: NoticeStreamSettings = {
  name: 'DRAWDOWN_NOTICES',
  replicas: 1,
  maxAgeMs: 7 * 24 * 3_600_000, // 7 days
  maxBytes: 256 * 1024 * 1024, // 256 MiB: ~500,000 notices; reserved against the server's max_file_store
  duplicateWindowMs: 2 * 3_600_000, // 2 h
  publishTimeoutMs: 5_000,
};

function streamConfig(settings: NoticeStreamSettings): Partial<StreamConfig> & { name: string } {
  return {
    name: settings.name,
    subjects: [`${noticeSubjectPrefix}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(settings.maxAgeMs),
    max_bytes: settings.maxBytes,
    max_msg_size: 64 * 1024,
    duplicate_window: nanos(settings.duplicateWindowMs),
    num_replicas: settings.replicas,
  };
}

export async function ensureNoticeStream(jsm: JetStreamManager, settings: NoticeStreamSettings): Promise<void> {
  await ensureStreamLimits(jsm, streamConfig(settings));
}

export interface Published {
  /** false: the stream already held this notice id (a retry, another process, a restart). */
  stored: boolean;
  seq: number;
}

export class NoticePublisher {
  readonly #js: JetStreamClient;
  readonly #settings: NoticeStreamSettings;

  constructor(js: JetStreamClient, settings: NoticeStreamSettings) {
    this.#js = js;
    this.#settings = settings;
  }

  async publish(notice: Notice): Promise<Published> {
    const ack = await this.#js.publish(noticeSubject(notice.type), JSON.stringify(notice), {
      msgID: notice.id,
      expect: { streamName: this.#settings.name },
      timeout: this.#settings.publishTimeoutMs,
    });
    return { stored: !ack.duplicate, seq: ack.seq };
  }
}
