/**
 * What a settlement run reports, wherever it is read: the HTTP response of
 * POST /v1/settlements, the report stored in settlement_runs, and the output
 * of `drawdown settle` — each names the catalog revision the run priced with.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import { api, catalogPath, startClickHouse, tempDir, testConfig, type ClickHouseTarget } from './harness.js';

describe('settlement reports name the catalog revision they priced with', () => {
  const dir = tempDir('settlement-report');
  let clickhouse: ClickHouseTarget;
  let drawdown: Running;
  let base: string;

  beforeAll(async () => {
    clickhouse = await startClickHouse('chdb', dir.path);
    drawdown = await startDrawdown(testConfig({ clickhouseUrl: clickhouse.url }), {
      ingest: false,
      rater: false,
      settlement: true,
    });
    base = drawdown.url!;
  }, 60_000);

  afterAll(async () => {
    await drawdown?.stop();
    await clickhouse?.stop();
    dir.remove();
  });

  it('given the seeded catalog (revision 1), then the response and the stored report say catalog_revision 1', async () => {
    const run = await api(base, 'POST', '/v1/settlements', { until: '2026-01-01T00:00:00Z' });
    expect(run.status).toBe(200);
    expect(run.body).toMatchObject({ run_id: run.body.run_id, catalog_revision: 1 });
    const stored = await drawdown.store!.query(
      `SELECT report FROM settlement_runs WHERE run_id = '${run.body.run_id}' AND status = 'completed'`,
    );
    expect(JSON.parse(stored[0]![0]!)).toMatchObject({ run_id: run.body.run_id, catalog_revision: 1 });
  });

  it('given a catalog change applied through the API, when settlement runs again, then its report says the new revision', async () => {
    const next = JSON.parse(readFileSync(catalogPath, 'utf8'));
    next.meters.push({ key: 'tts.seconds', name: 'TTS seconds' });
    const applied = await api(base, 'PUT', '/v1/catalog', next);
    expect(applied.status, JSON.stringify(applied.body)).toBeLessThan(300);
    expect(applied.body.revision).toBe(2);
    const run = await api(base, 'POST', '/v1/settlements', { until: '2026-01-02T00:00:00Z' });
    expect(run.body.catalog_revision).toBe(2);
    const stored = await drawdown.store!.query(
      `SELECT report FROM settlement_runs WHERE run_id = '${run.body.run_id}' AND status = 'completed'`,
    );
    expect(JSON.parse(stored[0]![0]!).catalog_revision).toBe(2);
  });
});
