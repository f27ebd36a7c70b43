import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager } from '@nats-io/jetstream';

/**
 * The stream baselines (a) and (c) publish to: file storage and work-queue
 * retention like the gateway's, subjects `<prefix>.*`. One definition, so the
 * two baselines store the same way.
 */
export async function addBaselineStream(jsm: JetStreamManager, name: string, subjectPrefix: string): Promise<void> {
  await jsm.streams.add({
    name,
    subjects: [`${subjectPrefix}.*`],
    storage: StorageType.File,
    retention: RetentionPolicy.Workqueue,
    max_bytes: 16 * 1024 ** 3,
    discard: DiscardPolicy.Old,
  });
}
