/**
 * The JetStream stream that holds accepted batches until a rater has them in
 * ClickHouse, and the per-partition consumers the raters read it with.
 *
 *   gateway ──publish(msgID = Idempotency-Key)──▶ <prefix>.<p>   (p = 0..partitions-1)
 *                                                   │ one durable consumer per partition,
 *                                                   ▼ explicit acks, in stream order
 *                                                 rater
 *
 * Work-queue retention: a message leaves the stream when its partition's
 * consumer acks it, i.e. only after the rater committed it to ClickHouse.
 * Discard-new with byte/message limits: a full stream refuses new batches (the
 * gateway answers 429) instead of silently dropping old, unprocessed ones.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';

export interface StreamSettings {
  name: string;
  subjectPrefix: string;
  partitions: number;
  maxBytes: number;
  maxMessages: number;
  maxMessageBytes: number;
  duplicateWindowMs: number;
  replicas: number;
}

export const batchHeaders = {
  format: 'Drawdown-Format',
  receivedMs: 'Drawdown-Received-Ms',
  events: 'Drawdown-Events',
  /** The catalog revision the gateway validated the batch against; the rater catches up to it first. */
  catalogRevision: 'Drawdown-Catalog-Revision',
} as const;

export function partitionSubject(settings: Pick<StreamSettings, 'subjectPrefix'>, partition: number): string {
  return `${settings.subjectPrefix}.${partition}`;
}

export function consumerName(partition: number): string {
  return `rater-p${partition}`;
}

function streamConfig(settings: StreamSettings): Partial<StreamConfig> & { name: string } {
  return {
    name: settings.name,
    subjects: [`${settings.subjectPrefix}.*`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_bytes: settings.maxBytes,
    max_msgs: settings.maxMessages,
    max_msg_size: settings.maxMessageBytes,
    max_age: 0,
    duplicate_window: nanos(settings.duplicateWindowMs),
    num_replicas: settings.replicas,
  };
}

function isNotFound(error: unknown): boolean {
  return error instanceof JetStreamApiError && (error.code === JetStreamApiCodes.StreamNotFound || error.code === JetStreamApiCodes.ConsumerNotFound);
}

/** Creates the stream, or brings the limits of an existing one in line with the settings. */
export async function ensureStream(jsm: JetStreamManager, settings: StreamSettings): Promise<void> {
  const config = streamConfig(settings);
  try {
    await jsm.streams.info(settings.name);
  } catch (error) {
    if (!isNotFound(error)) throw error;
    await jsm.streams.add(config);
    return;
  }
  const { name, ...update } = config;
  // Retention, storage and replicas are fixed once created; the rest can move.
  delete update.retention;
  delete update.storage;
  await jsm.streams.update(name, update);
}

export interface ConsumerSettings {
  ackWaitMs: number;
  maxAckPending: number;
}

/**
 * Recreates a partition's consumer so that delivery starts after the
 * watermark the rater committed in ClickHouse. Messages at or below it were
 * committed but perhaps never acked (the rater died in between); they are
 * purged, not redelivered. Recreating, rather than resuming, guarantees the
 * first messages the rater sees are the oldest uncommitted ones, in order.
 * It assumes one rater per partition (docs/exactly-once.md).
 */
export async function resetPartitionConsumer(
  jsm: JetStreamManager,
  settings: StreamSettings,
  partition: number,
  committedSeq: number,
  consumer: ConsumerSettings,
): Promise<string> {
  const subject = partitionSubject(settings, partition);
  const name = consumerName(partition);
  try {
    await jsm.consumers.delete(settings.name, name);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  if (committedSeq > 0) await jsm.streams.purge(settings.name, { filter: subject, seq: committedSeq + 1 });
  await jsm.consumers.add(settings.name, {
    durable_name: name,
    filter_subject: subject,
    // Work-queue streams require explicit acks; the rater acks each message of a flush after it is committed.
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(consumer.ackWaitMs),
    max_ack_pending: consumer.maxAckPending,
    // Never give up on a message: an undelivered batch would be lost usage.
    max_deliver: -1,
  });
  return name;
}
