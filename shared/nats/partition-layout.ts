/**
 * The partition layout is a recorded fact, not a setting each process is
 * trusted to repeat. Dedupe and exactly-once assume one customer → one
 * partition, forever (shared/events/partition.ts); one gateway or rater
 * started with another DRAWDOWN_PARTITIONS would misroute customers
 * silently. So the first gateway or rater to start records the layout
 *
 *   KV bucket drawdown_meta, key partition-layout.<stream>
 *     {"stream", "subjectPrefix", "partitions", "hash", "recordedAt", "recordedBy"}
 *
 * with a compare-and-set create (two processes starting at once agree: one
 * creates, the other reads what it created), and every gateway and rater
 * refuses to start with a different one (`partition_layout_mismatch`).
 * nats-server 2.9 has no stream metadata (2.10+), hence a KV key.
 *
 * Changing it is `drawdown partitions migrate` (docs/deploy.md, "Changing
 * the partition count"): only with the stream drained, as a CAS update.
 */
import { JetStreamApiError, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { DrawdownError } from '../errors.js';
import type { StreamSettings } from './stream.js';

export const metaBucket = 'drawdown_meta';
/** The partition hash of shared/events/partition.ts: part of the layout, so it could never change unnoticed either. */
export const partitionHash = 'fnv1a32-mod';

export interface PartitionLayout {
  stream: string;
  subjectPrefix: string;
  partitions: number;
  hash: string;
}

export interface RecordedLayout extends PartitionLayout {
  recordedAt: string;
  /** The process (or command) that recorded it. */
  recordedBy: string;
  /** The layout this one replaced, when a migration recorded it. */
  previous?: PartitionLayout;
}

export function layoutKey(streamName: string): string {
  return `partition-layout.${streamName}`;
}

export function layoutOf(settings: Pick<StreamSettings, 'name' | 'subjectPrefix' | 'partitions'>): PartitionLayout {
  return {
    stream: settings.name,
    subjectPrefix: settings.subjectPrefix,
    partitions: settings.partitions,
    hash: partitionHash,
  };
}

function describe(layout: PartitionLayout): string {
  return `${layout.partitions} partition(s), subjects ${layout.subjectPrefix}.<p>, hash ${layout.hash}`;
}

function sameLayout(a: PartitionLayout, b: PartitionLayout): boolean {
  return (
    a.stream === b.stream && a.subjectPrefix === b.subjectPrefix && a.partitions === b.partitions && a.hash === b.hash
  );
}

export async function openMeta(js: JetStreamClient, replicas: number): Promise<KV> {
  return new Kvm(js).create(metaBucket, {
    storage: StorageType.File,
    replicas,
    history: 5,
    allow_direct: false,
    description: 'drawdown facts every process must agree on (the partition layout)',
  });
}

export async function readLayout(
  kv: KV,
  streamName: string,
): Promise<{ layout: RecordedLayout; revision: number } | undefined> {
  const entry = await kv.get(layoutKey(streamName));
  if (entry === null || entry.operation !== 'PUT' || entry.length === 0) return undefined;
  return { layout: entry.json<RecordedLayout>(), revision: entry.revision };
}

/**
 * Partition subjects of the stream that hold messages now and lie outside
 * `partitions`: evidence, on a stream from before the layout was recorded,
 * that other processes use another count.
 */
async function subjectsBeyond(jsm: JetStreamManager, layout: PartitionLayout): Promise<string[]> {
  let subjects: Record<string, number> | undefined;
  try {
    const info = await jsm.streams.info(layout.stream, { subjects_filter: `${layout.subjectPrefix}.*` });
    subjects = info.state.subjects;
  } catch (error) {
    if (error instanceof JetStreamApiError) return [];
    throw error;
  }
  const prefix = `${layout.subjectPrefix}.`;
  return Object.keys(subjects ?? {}).filter((subject) => {
    const p = Number(subject.slice(prefix.length));
    return !Number.isInteger(p) || p >= layout.partitions;
  });
}

function mismatch(wanted: PartitionLayout, recorded: RecordedLayout): DrawdownError {
  return new DrawdownError(
    'partition_layout_mismatch',
    `the stream ${recorded.stream} is laid out as ${describe(recorded)} (recorded by ${recorded.recordedBy} at ${recorded.recordedAt} in KV ${metaBucket} key ${layoutKey(recorded.stream)}), but this process is configured for ${describe(wanted)}. Start it with DRAWDOWN_PARTITIONS=${recorded.partitions} and DRAWDOWN_SUBJECT_PREFIX=${recorded.subjectPrefix}; changing the layout is \`drawdown partitions migrate\` (docs/deploy.md, "Changing the partition count")`,
  );
}

/**
 * Records the layout if none is recorded, and refuses (throws
 * `partition_layout_mismatch`) if another one is. Called by every gateway
 * and rater at start-up, after the stream exists.
 */
export async function checkPartitionLayout(
  js: JetStreamClient,
  jsm: JetStreamManager,
  settings: StreamSettings,
  recordedBy: string,
  now: () => number = Date.now,
): Promise<{ recorded: boolean; layout: RecordedLayout }> {
  const kv = await openMeta(js, settings.replicas);
  const wanted = layoutOf(settings);
  const existing = await readLayout(kv, settings.name);
  if (existing !== undefined) {
    if (!sameLayout(wanted, existing.layout)) throw mismatch(wanted, existing.layout);
    return { recorded: false, layout: existing.layout };
  }
  const beyond = await subjectsBeyond(jsm, wanted);
  if (beyond.length > 0)
    throw new DrawdownError(
      'partition_layout_mismatch',
      `the stream ${settings.name} holds messages on ${beyond.slice(0, 5).join(', ')}, outside ${describe(wanted)}: it was written with another DRAWDOWN_PARTITIONS, and no layout is recorded yet. Start with the count it was written with (it is then recorded)`,
    );
  const layout: RecordedLayout = { ...wanted, recordedAt: new Date(now()).toISOString(), recordedBy };
  try {
    await kv.create(layoutKey(settings.name), JSON.stringify(layout));
    // Read back: a clustered nats-server before 2.9.21 does not serialise compare-and-set (nats-server#4320), so a
    // create racing another may have been overwritten; whichever layout is stored is the one.
    const stored = await readLayout(kv, settings.name);
    if (stored !== undefined && !sameLayout(wanted, stored.layout)) throw mismatch(wanted, stored.layout);
    return { recorded: true, layout };
  } catch (error) {
    if (error instanceof DrawdownError) throw error;
    // Another process recorded one first (CAS create): its layout is the one.
    const raced = await readLayout(kv, settings.name);
    if (raced === undefined) throw error;
    if (!sameLayout(wanted, raced.layout)) throw mismatch(wanted, raced.layout);
    return { recorded: false, layout: raced.layout };
  }
}

/**
 * Re-partitions: records `settings.partitions` as the layout, replacing the
 * recorded one, only when nothing of the old layout is in flight. Refused
 * (`partition_migration_refused`) while the stream holds any message (a
 * batch routed by the old count would be rated by the wrong partition) or
 * when the record changed meanwhile (CAS). Gateways and raters must be
 * stopped first: running ones keep their count (docs/deploy.md).
 */
export async function migratePartitionLayout(
  js: JetStreamClient,
  jsm: JetStreamManager,
  settings: StreamSettings,
  recordedBy: string,
  now: () => number = Date.now,
): Promise<{ from: RecordedLayout | undefined; to: RecordedLayout }> {
  const kv = await openMeta(js, settings.replicas);
  const wanted = layoutOf(settings);
  const existing = await readLayout(kv, settings.name);
  if (existing !== undefined && sameLayout(wanted, existing.layout))
    return { from: existing.layout, to: existing.layout };
  let held = 0;
  try {
    held = (await jsm.streams.info(settings.name)).state.messages;
  } catch (error) {
    if (!(error instanceof JetStreamApiError)) throw error;
  }
  if (held > 0)
    throw new DrawdownError(
      'partition_migration_refused',
      `the stream ${settings.name} still holds ${held} batch(es) routed by the recorded layout (${existing === undefined ? 'none recorded' : describe(existing.layout)}): stop every gateway, let the raters drain the stream (drawdown_rater_lag_messages 0, the stream empty), stop the raters, then run this again`,
    );
  const to: RecordedLayout = {
    ...wanted,
    recordedAt: new Date(now()).toISOString(),
    recordedBy,
    ...(existing === undefined ? {} : { previous: layoutOf({ ...existing.layout, name: existing.layout.stream }) }),
  };
  try {
    if (existing === undefined) await kv.create(layoutKey(settings.name), JSON.stringify(to));
    else await kv.update(layoutKey(settings.name), JSON.stringify(to), existing.revision);
  } catch (error) {
    throw new DrawdownError(
      'partition_migration_refused',
      `the recorded layout of ${settings.name} changed while migrating (another migration or a first start); run this again`,
      { cause: error },
    );
  }
  return { from: existing?.layout, to };
}
