/**
 * The dead-letter stream: where the rater puts a stream message it cannot
 * store, so its partition keeps flowing and the message is kept, with the
 * reason, for someone to look at (docs/exactly-once.md §2b).
 *
 *   <stream>            <prefix>.<p>        ─▶ rater ─┬─▶ usage_minute (counted)
 *                                                     └─▶ <stream>_DEAD  <prefix>_dead.<p>  (never counted)
 *
 * A message goes there whole (its bytes and headers as the gateway stored
 * them, plus the reason) and is never counted: the gateway accepts a batch
 * whole or not at all, and the rater does the same with a batch part.
 *
 * It is published BEFORE its source message is acked, with a message id made
 * of partition, sequence and fingerprint: a rater that dies between the two
 * publishes it again when the message comes again, and JetStream stores it
 * once (within the duplicate window, `duplicateWindowMs` below).
 *
 * Limits: file storage, discard-new. A full dead-letter stream refuses the
 * publish; the partition then stops (retrying, unready) rather than lose the
 * only copy of accepted usage. Messages leave it after `maxAgeMs`.
 */
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamConfig,
} from '@nats-io/jetstream';
import { headers as natsHeaders, nanos } from '@nats-io/transport-node';
import { ensureStreamLimits, type StreamSettings } from '../shared/nats/stream.js';

export interface DeadLetterSettings {
  /** How long a dead letter is kept, in ms. */
  maxAgeMs: number;
  /** The dead-letter stream's size limit, in bytes. */
  maxBytes: number;
}

/** How long a dead letter's message id is remembered, so a re-publish after a crash stores nothing new. */
const duplicateWindowMsMax = 24 * 3_600_000;
/** A reason longer than this is cut: it is a log line's worth, not a payload. */
const reasonLengthMax = 1_000;
/** Room for the headers a dead letter adds to the source message's. */
const headerAllowanceBytes = 8 * 1024;

export const deadLetterHeaders = {
  /** Why the message could not be stored. */
  reason: 'Drawdown-Dead-Reason',
  /** `refused` (decode, event rules, time window) or `insert_refused` (ClickHouse refused its rows). */
  cause: 'Drawdown-Dead-Cause',
  sourceStream: 'Drawdown-Dead-Stream',
  sourceSequence: 'Drawdown-Dead-Sequence',
  partition: 'Drawdown-Dead-Partition',
  /** The first 16 hex digits of SHA-256 of the message's bytes (rater/counted-log.ts). */
  fingerprint: 'Drawdown-Dead-Fingerprint',
} as const;

export type DeadLetterCause = 'refused' | 'insert_refused';

export function deadLetterStreamName(settings: Pick<StreamSettings, 'name'>): string {
  return `${settings.name}_DEAD`;
}

export function deadLetterSubject(settings: Pick<StreamSettings, 'subjectPrefix'>, partition: number): string {
  // `<prefix>_dead.<p>` never matches the event stream's `<prefix>.*`.
  return `${settings.subjectPrefix}_dead.${partition}`;
}

/** The message id: the same source message always makes the same dead letter. */
export function deadLetterId(partition: number, seq: number, fingerprint: string): string {
  return `dead:${partition}:${seq}:${fingerprint}`;
}

function deadLetterConfig(
  stream: StreamSettings,
  settings: DeadLetterSettings,
): Partial<StreamConfig> & { name: string } {
  return {
    name: deadLetterStreamName(stream),
    subjects: [`${stream.subjectPrefix}_dead.*`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_age: nanos(settings.maxAgeMs),
    max_bytes: settings.maxBytes,
    max_msg_size: stream.maxMessageBytes + headerAllowanceBytes,
    duplicate_window: nanos(Math.min(duplicateWindowMsMax, settings.maxAgeMs)),
    num_replicas: stream.replicas,
  };
}

/** Creates the dead-letter stream, or brings an existing one's limits in line with the settings. */
export async function ensureDeadLetterStream(
  jsm: JetStreamManager,
  stream: StreamSettings,
  settings: DeadLetterSettings,
): Promise<void> {
  await ensureStreamLimits(jsm, deadLetterConfig(stream, settings));
}

export interface DeadLetter {
  partition: number;
  fingerprint: string;
  cause: DeadLetterCause;
  reason: string;
}

/**
 * Publishes `message` to the dead-letter stream and waits for JetStream's
 * acknowledgement. Throws when it was not stored: the caller must not ack
 * the source message then. `duplicate`: it was stored before (the same
 * message dead-lettered again after a resume or a restart).
 */
export async function publishDeadLetter(
  js: JetStreamClient,
  stream: StreamSettings,
  message: JsMsg,
  letter: DeadLetter,
  timeoutMs: number,
): Promise<{ duplicate: boolean }> {
  const h = natsHeaders();
  if (message.headers !== undefined)
    for (const [key, values] of message.headers) {
      // JetStream's own headers (Nats-Msg-Id, …) describe the source message; the dead letter gets its own id.
      if (key.toLowerCase().startsWith('nats-')) continue;
      for (const value of values) h.append(key, value);
    }
  // Headers are one line each: a reason's line breaks are flattened.
  h.set(deadLetterHeaders.reason, letter.reason.replace(/[\r\n]+/g, ' ').slice(0, reasonLengthMax));
  h.set(deadLetterHeaders.cause, letter.cause);
  h.set(deadLetterHeaders.sourceStream, stream.name);
  h.set(deadLetterHeaders.sourceSequence, String(message.seq));
  h.set(deadLetterHeaders.partition, String(letter.partition));
  h.set(deadLetterHeaders.fingerprint, letter.fingerprint);
  const ack = await js.publish(deadLetterSubject(stream, letter.partition), message.data, {
    msgID: deadLetterId(letter.partition, message.seq, letter.fingerprint),
    headers: h,
    timeout: timeoutMs,
  });
  return { duplicate: ack.duplicate };
}
