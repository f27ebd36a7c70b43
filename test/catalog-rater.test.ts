/**
 * A meter added to the catalog while the rater runs: the gateway, following
 * the store, accepts its events; the rater — which would otherwise not look
 * at the catalog for a long time — sees the batch was validated against a
 * newer revision, refreshes first, and counts the events instead of
 * skipping them as undecodable. Real nats-server and clickhouse-server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  api,
  openTestStore,
  postEventsUntil,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type ClickHouseTarget,
} from './harness.js';

describe('a meter added while the rater runs', () => {
  const dir = tempDir('catalog-rater');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  const running: Running[] = [];

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
  });

  afterAll(async () => {
    for (const r of running.reverse()) await r.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('is counted by a rater that had not refreshed its catalog yet, and nothing is skipped', async () => {
    // Given the settlement service (which seeds the store from the catalog file), a gateway that
    // follows the store quickly, and a rater that would not poll the store for ten minutes,
    const settlement = await startDrawdown(testConfig({ clickhouseUrl: clickhouse.url }), {
      ingest: false,
      rater: false,
      settlement: true,
    });
    running.push(settlement);
    const gateway = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url, catalog: '', catalogRefreshMs: 100 }),
      { ingest: true, rater: false, settlement: false },
    );
    running.push(gateway);
    const rater = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url, catalog: '', catalogRefreshMs: 600_000 }),
      { ingest: false, rater: true, settlement: false },
    );
    running.push(rater);
    const raterRevision = rater.catalogSource.current().revision;

    // when a meter is added through the API and the gateway starts accepting its events,
    const added = await api(settlement.url!, 'PUT', '/v1/catalog/meters/audio.seconds', {
      name: 'Audio seconds',
      aggregation: 'sum',
      dimensions: ['voice'],
    });
    expect(added.status).toBe(200);
    const events = [
      {
        id: 'a-1',
        customer: 'acme',
        meter: 'audio.seconds',
        quantity: '12.5',
        timestamp: Date.now() - 60_000,
        dimensions: { voice: 'alto' },
      },
      {
        id: 'a-2',
        customer: 'acme',
        meter: 'audio.seconds',
        quantity: '7.25',
        timestamp: Date.now() - 60_000,
        dimensions: { voice: 'alto' },
      },
    ];
    expect(await postEventsUntil(gateway.url!, 202, () => events, { key: 'new-meter-batch' })).toBe(202);
    expect(rater.catalogSource.current().revision).toBe(raterRevision);
    await waitForStreamDrained(nats.url);

    // then the rater caught up with the gateway's revision, and ClickHouse holds the events, none skipped.
    expect(rater.catalogSource.current().revision).toBe(added.body.revision);
    const store = await openTestStore(clickhouse.url);
    try {
      expect((await usageTotals(store)).get('acme|audio.seconds|{"voice":"alto"}')).toBe('19.75|2');
    } finally {
      await store.close();
    }
    const metrics = await (await fetch(`${rater.url}/metrics`)).text();
    expect(metrics).not.toMatch(/^drawdown_rater_dead_letters_total\{[^}]*\} [1-9]/m);
  });
});
