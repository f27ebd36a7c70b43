/**
 * One Idempotency-Key, one batch. A batch is published as one JetStream
 * message per partition its customers map to, each with the message id
 * `<key>#<partition>`; on its own that lets a retry whose body maps to other
 * partitions store parts the first body never had. So before publishing any
 * part, the gateway claims the key: a small message with the body's
 * fingerprint, message id = the key, in a stream of its own that keeps
 * claims as long as JetStream remembers message ids (the duplicate window).
 *
 *   claim stored            → the first body under this key: publish its parts
 *   claim was a duplicate,
 *     same fingerprint      → a retry of that body: publish its parts again
 *                             (stored ones are recognised, missing ones completed)
 *   claim was a duplicate,
 *     other fingerprint     → 422 idempotency_key_reused; nothing is published
 *
 * JetStream decides which of two racing claims is first, on every node of a
 * cluster alike; the gateway keeps no state of its own.
 */
import { createHash } from 'node:crypto';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { StreamSettings } from '../shared/nats/stream.js';

export type ClaimOutcome = 'first' | 'retry' | 'other-body';

/** What the claims may take on disk at most; past it the oldest go first (their keys then work as if unclaimed). */
export const claimStreamMaxBytes = 1024 * 1024 * 1024;

export function claimStreamName(settings: Pick<StreamSettings, 'name'>): string {
  return `${settings.name}_KEYS`;
}

function claimSubjectPrefix(settings: Pick<StreamSettings, 'subjectPrefix'>): string {
  // A sibling of the events' prefix, never matched by its `<prefix>.*`.
  return `${settings.subjectPrefix}_keys`;
}

/** Keys may hold characters subjects cannot; their SHA-256 names the subject. */
function claimSubject(settings: Pick<StreamSettings, 'subjectPrefix'>, key: string): string {
  return `${claimSubjectPrefix(settings)}.${createHash('sha256').update(key).digest('hex')}`;
}

function isNotFound(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound;
}

/** Creates the claims stream, or brings its limits in line with the settings. */
export async function ensureClaimStream(jsm: JetStreamManager, settings: StreamSettings): Promise<void> {
  const config = {
    name: claimStreamName(settings),
    subjects: [`${claimSubjectPrefix(settings)}.*`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(settings.duplicateWindowMs),
    duplicate_window: nanos(settings.duplicateWindowMs),
    max_msgs_per_subject: 1,
    max_bytes: claimStreamMaxBytes,
    num_replicas: settings.replicas,
  };
  try {
    await jsm.streams.info(config.name);
  } catch (error) {
    if (!isNotFound(error)) throw error;
    await jsm.streams.add(config);
    return;
  }
  const { name, retention: _retention, storage: _storage, ...update } = config;
  await jsm.streams.update(name, update);
}

export class KeyClaims {
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #settings: StreamSettings;
  readonly #timeoutMs: number;

  constructor(js: JetStreamClient, jsm: JetStreamManager, settings: StreamSettings, timeoutMs: number) {
    this.#js = js;
    this.#jsm = jsm;
    this.#settings = settings;
    this.#timeoutMs = timeoutMs;
  }

  /** Claims `key` for the body with `fingerprint`; errors are the publish's (the caller maps them to 503/429). */
  async claim(key: string, fingerprint: string): Promise<ClaimOutcome> {
    const subject = claimSubject(this.#settings, key);
    const ack = await this.#js.publish(subject, fingerprint, { msgID: key, timeout: this.#timeoutMs });
    if (!ack.duplicate) return 'first';
    const stored = await this.#jsm.streams.getMessage(claimStreamName(this.#settings), { last_by_subj: subject });
    // Gone already (aged out a moment before the id did, or pushed out by the
    // size limit): nothing left to compare, so the retry is taken as one.
    if (stored === null) return 'retry';
    return stored.string() === fingerprint ? 'retry' : 'other-body';
  }
}
