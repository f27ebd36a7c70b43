/**
 * The rater's lease manager against a real nats-server when the bucket holds
 * less than the manager saw: a write the watch delivered and a JetStream
 * leader change then lost (nats-server before 2.11), or a key the bucket's
 * max age dropped, leaves no marker. Found in the cluster node-loss test
 * (test/nats-restart-cluster.test.ts): one partition was never taken again,
 * its batches stayed in the stream, and the stream never drained.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { leaseBucket, LeaseManager } from '../rater/leases.js';
import { createRaterMetrics } from '../rater/metrics.js';
import { createLogger } from '../shared/log.js';
import { createRegistry } from '../shared/metrics.js';
import { startNats, tempDir } from './harness.js';

async function waitFor(what: string, timeoutMs: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('rater lease view', () => {
  const dir = tempDir('rater-lease-view');
  let nats: NatsServerProcess;
  let nc: NatsConnection;

  beforeAll(async () => {
    nats = await startNats(dir.path);
    nc = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
    dir.remove();
  });

  it('given the bucket lost a lease key the rater last saw held by another, then the rater takes the partition again once that holder looks expired', async () => {
    const stream = 'view-test';
    const events: string[] = [];
    const manager = await LeaseManager.open({
      nc,
      stream,
      partitions: 1,
      wants: 'auto',
      ttlMs: 1_000,
      replicas: 1,
      log: createLogger('silent', 'rater-lease-view'),
      metrics: createRaterMetrics(createRegistry()),
      hooks: {
        start: async (partition) => void events.push(`start ${partition}`),
        stop: async (partition, how) => void events.push(`stop ${partition} ${how}`),
      },
    });
    await manager.start();
    try {
      expect(manager.owned).toEqual([0]);

      // Another writer holds the lease now: the manager sees the key is not its own and lets the partition go.
      const kv = await new Kvm(nc).open(leaseBucket);
      await kv.put(`${stream}.partition.0`, JSON.stringify({ owner: 'elsewhere', token: 'other', since: '' }));
      await waitFor('the partition stopped as lost', 5_000, () => events.includes('stop 0 lost'));
      expect(manager.owned).toEqual([]);

      // The bucket then loses that key without a marker; the manager's view still shows "elsewhere" holding it.
      const jsm = await jetstreamManager(nc);
      await jsm.streams.purge(`KV_${leaseBucket}`, { filter: `$KV.${leaseBucket}.${stream}.partition.0` });
      expect(await kv.get(`${stream}.partition.0`)).toBeNull();

      // "elsewhere" never renews, so after a TTL the manager takes the partition: the lease is its own again.
      await waitFor('the partition taken again', 8_000, () => manager.owned.includes(0));
      expect(events).toEqual(['start 0', 'stop 0 lost', 'start 0']);
      const entry = await kv.get(`${stream}.partition.0`);
      expect(entry?.operation).toBe('PUT');
      expect((entry?.json() as { owner: string }).owner).toBe(manager.id);
    } finally {
      await manager.stop(1_000);
    }
  });
});
