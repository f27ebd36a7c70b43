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
  /** W3C Trace Context of the request that sent the batch (shared/trace-context.ts), under the spec's own names. */
  traceparent: 'traceparent',
  tracestate: 'tracestate',
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
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamNotFound || error.code === JetStreamApiCodes.ConsumerNotFound)
  );
}

/** Creates the stream, or brings the limits of an existing one in line with the settings. */
export async function ensureStream(jsm: JetStreamManager, settings: StreamSettings): Promise<void> {
  await ensureStreamLimits(jsm, streamConfig(settings));
}

/**
 * Creates a stream with `config`, or brings an existing one's limits in line
 * with it: every stream of ours (events, dead letters, notices) is kept so.
 */
export async function ensureStreamLimits(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
): Promise<void> {
  try {
    await jsm.streams.info(config.name);
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
 * Recreates a partition's consumer so that it delivers, in stream order,
 * every message of the partition still in the stream: with work-queue
 * retention that is exactly what was never acked. Nothing is purged here:
 * a message at or below the rater's watermark may be counted (its ack was
 * lost) or not (its delivery was lost), and only the rater's record of
 * counted sequences can tell (docs/exactly-once.md §2). Recreating rather
 * than resuming drops the old consumer's pending deliveries, so nothing the
 * rater no longer holds waits out an ack wait. It assumes one rater per
 * partition (docs/exactly-once.md).
 */
export async function recreatePartitionConsumer(
  jsm: JetStreamManager,
  settings: StreamSettings,
  partition: number,
  consumer: ConsumerSettings,
): Promise<string> {
  const subject = partitionSubject(settings, partition);
  const name = consumerName(partition);
  try {
    await jsm.consumers.delete(settings.name, name);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
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

/**
 * The lowest stream sequence of the partition's messages still in the
 * stream, or undefined when it holds none. Any message the partition is
 * delivered from now on has at least this sequence (later ones are appended
 * above it), so it bounds how much of the counted record a rater must load.
 */
export async function lowestPartitionSequence(
  jsm: JetStreamManager,
  settings: StreamSettings,
  partition: number,
): Promise<number | undefined> {
  // STREAM.MSG.GET with next_by_subj (nats-server ≥ 2.9): the first message of
  // the subject at or after seq. nats.js types getMessage's query narrower
  // than the server's request, so it is widened here.
  const query = { seq: 0, next_by_subj: partitionSubject(settings, partition) } as unknown as Parameters<
    JetStreamManager['streams']['getMessage']
  >[1];
  const message = await jsm.streams.getMessage(settings.name, query);
  return message === null ? undefined : message.seq;
}
