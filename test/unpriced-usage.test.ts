/**
 * Unpriced usage is never free (SPEC §4): usage no rate row prices stays
 * outstanding — in the balance, every run report, the run history and the
 * statement of its term, the metrics and a warning log — until a rate card
 * version with a row for it is in force; the next run then bills it exactly
 * once, as an adjustment dated at the run's window start whose source names
 * the usage's first minute and the rate version. A settlement process killed
 * mid-run and resumed bills it once too. On chDB and on clickhouse-server 18.16.
 */
import { writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteColumns } from '../shared/clickhouse/usage-minute.js';
import type { Store } from '../shared/clickhouse/store.js';
import { createLogger } from '../shared/log.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { api, crashed, spawnDrawdown, startClickHouse, tempDir, testConfig, type ClickHouseTarget } from './harness.js';

const sec = (iso: string): number => Date.parse(iso) / 1000;
const runId = (fromIso: string, untilIso: string): string =>
  `run:${fromIso === '' ? 0 : sec(fromIso)}:${sec(untilIso)}`;

const v1 = {
  version: 'v1',
  effective_from: '2026-01-01T00:00:00Z',
  rows: [
    { meter: 'tokens', unit: 'credits', price: { model: 'unit', amount: '1' } },
    { meter: 'images', match: { size: 'small' }, unit: 'credits', price: { model: 'unit', amount: '2' } },
  ],
};
/** Prices every image size but `huge`: in force from 02:00, after runs 1 and 2 settled the large images. */
const v2 = {
  version: 'v2',
  effective_from: '2026-01-01T02:00:00Z',
  rows: [
    ...v1.rows,
    { meter: 'images', match: { size: 'large' }, unit: 'credits', price: { model: 'unit', amount: '4.25' } },
  ],
};
/** Prices `huge` images too, from 05:00. */
const v3 = {
  version: 'v3',
  effective_from: '2026-01-01T05:00:00Z',
  rows: [
    ...v2.rows,
    { meter: 'images', match: { size: 'huge' }, unit: 'credits', price: { model: 'unit', amount: '7' } },
  ],
};

function catalogDocument(versions: unknown[]): Record<string, unknown> {
  return {
    credit_units: [{ id: 'credits', name: 'Credits' }],
    meters: [
      { key: 'tokens', aggregation: 'sum' },
      { key: 'images', aggregation: 'sum', dimensions: ['size'] },
    ],
    rate_card: { versions },
    packages: [],
    plans: [
      {
        id: 'pro',
        billing: 'monthly',
        versions: [
          { version: 1, grants: [{ id: 'monthly', unit: 'credits', quantity: '1000', frequency: 'monthly' }] },
        ],
      },
    ],
    subscriptions: [
      { id: 'sub-acme', customer: 'acme', plan: 'pro', plan_version: 1, start: '2026-01-01T00:00:00Z' },
      { id: 'sub-beta', customer: 'beta', plan: 'pro', plan_version: 1, start: '2026-01-01T00:00:00Z' },
    ],
  };
}

describe.each(['chdb', 'server'] as const)('unpriced usage stays outstanding until priced, on %s', (backend) => {
  const dir = tempDir(`unpriced-${backend}`);
  let clickhouse: ClickHouseTarget;
  let store: Store;
  let drawdown: Running;
  let base: string;
  let seq = 0;
  const logLines: Record<string, any>[] = [];
  const reports: Record<string, any> = {};

  async function usage(customer: string, meter: string, dimensions: string, atIso: string, quantity: string) {
    seq++;
    await store.insert(
      'usage_minute',
      usageMinuteColumns,
      encodeTsv([
        [
          customer,
          meter,
          dimensions,
          tsvDateTime(sec(atIso)),
          quantity,
          '1',
          '0',
          String(seq),
          tsvDateTime(sec(atIso)),
        ],
      ]),
    );
  }
  async function start(): Promise<void> {
    store = await openStore(clickhouse.url);
    await ensureSchema(store);
    const log = createLogger(
      'warn',
      'test-settlement',
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const line of chunk.toString().split('\n')) if (line) logLines.push(JSON.parse(line));
          done();
        },
      }),
    );
    drawdown = await startDrawdown(
      testConfig({ catalog: `${dir.path}/catalog.json`, clickhouseUrl: clickhouse.url }),
      { ingest: false, rater: false, settlement: true },
      { store, log },
    );
    base = drawdown.url!;
  }
  async function stop(): Promise<void> {
    await drawdown?.stop();
    await store?.close();
  }
  async function run(untilIso: string, fromIso?: string): Promise<any> {
    const response = await api(base, 'POST', '/v1/settlements', {
      until: untilIso,
      ...(fromIso === undefined ? {} : { from: fromIso }),
    });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    reports[untilIso] = response.body;
    return response.body;
  }
  const get = async (path: string): Promise<any> => {
    const response = await api(base, 'GET', path);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body;
  };
  /** The customer's ledger entries, one per id. */
  const ledger = async (customer: string): Promise<any[]> =>
    (await get(`/v1/customers/${customer}/ledger?limit=1000`)).entries;
  const settled = async (customer: string): Promise<string> =>
    (await get(`/v1/customers/${customer}/balance`)).units.find((u: any) => u.unit === 'credits').settled;
  const gauge = async (name: string): Promise<number> =>
    (await drawdown.registry.getSingleMetric(name)!.get()).values.reduce((n, v) => n + v.value, 0);
  const janTerm = async (customer: string): Promise<any> =>
    (await get(`/v1/customers/${customer}/statements?limit=120`)).statements.find(
      (s: any) => s.term_start === '2026-01-01T00:00:00.000Z',
    );

  const largeLine = {
    meter: 'images',
    dimensions: { size: 'large' },
    quantity: '3',
    since: '2026-01-01T00:10:00.000Z',
    found_by: runId('', '2026-01-01T01:00:00Z'),
  };

  beforeAll(async () => {
    clickhouse = await startClickHouse(backend, dir.path);
    writeFileSync(`${dir.path}/catalog.json`, JSON.stringify(catalogDocument([v1])));
    await start();
    await usage('acme', 'tokens', '{}', '2026-01-01T00:05:00Z', '10');
    await usage('acme', 'images', '{"size":"large"}', '2026-01-01T00:10:00Z', '3');
    await usage('acme', 'images', '{"size":"small"}', '2026-01-01T00:20:00Z', '1');
  }, 120_000);

  afterAll(async () => {
    await stop();
    await clickhouse?.stop();
    dir.remove();
  });

  it('given usage no rate row prices, when run 1 settles it, then the report shows it unrated and outstanding and nothing is posted for it', async () => {
    const report = await run('2026-01-01T01:00:00Z');
    const acme = report.customers.acme;
    expect(acme.unrated).toEqual([
      {
        meter: 'images',
        dimensions: { size: 'large' },
        quantity: '3',
        reason: 'rate card v1 has no row for this meter and dimensions',
      },
    ]);
    expect(acme.unpriced_outstanding).toEqual([
      { ...largeLine, reason: 'rate card v1 has no row for this meter and dimensions' },
    ]);
    expect(acme.unpriced_billed).toEqual([]);
    // 10 tokens at 1 and 1 small image at 2: the large images cost nothing yet, and nothing names them.
    expect(acme.deducted).toEqual({ credits: '12' });
    const entries = await ledger('acme');
    expect(entries.filter((e) => e.kind !== 'grant').map((e) => [e.kind, e.meter, e.amount])).toEqual([
      ['usage', 'tokens', '-10'],
      ['usage', 'images', '-2'],
    ]);
    expect(await settled('acme')).toBe('988');
    expect(await gauge('drawdown_settlement_unpriced_lines')).toBe(1);
  });

  it('given a run 2 with no new price, then balance, report, run history, statement, metric and log still show the line outstanding', async () => {
    logLines.length = 0;
    const report = await run('2026-01-01T02:00:00Z');
    expect(report.customers.acme.unrated).toEqual([]);
    expect(report.customers.acme.unpriced_outstanding).toEqual([
      { ...largeLine, reason: 'rate card v1 has no row for this meter and dimensions' },
    ]);
    expect(report.entries_posted).toBe(0);

    const balance = await get('/v1/customers/acme/balance');
    expect(balance.unrated_pending).toEqual([largeLine]);
    // An unpriced line has no cost: available is the settled balance.
    expect(balance.units).toMatchObject([{ unit: 'credits', settled: '988', pending: '0', available: '988' }]);

    const history = await get('/v1/settlements?limit=1');
    expect(history.runs[0]).toMatchObject({ run_id: report.run_id, unrated_lines: 0, unpriced_outstanding_lines: 1 });
    const detail = await get(`/v1/settlements/${encodeURIComponent(report.run_id)}`);
    expect(detail.unpriced_outstanding).toEqual([
      { customer: 'acme', ...largeLine, reason: 'rate card v1 has no row for this meter and dimensions' },
    ]);

    expect((await janTerm('acme')).unpriced).toEqual([largeLine]);
    expect(await gauge('drawdown_settlement_unpriced_lines')).toBe(1);
    expect(await gauge('drawdown_settlement_unpriced_quantity')).toBe(3);
    const warnings = logLines.filter((l) => l.msg.startsWith('unpriced usage outstanding'));
    expect(warnings.map((w) => [w.runId, w.total, w.lines])).toEqual([
      [
        report.run_id,
        1,
        [{ customer: 'acme', ...largeLine, reason: 'rate card v1 has no row for this meter and dimensions' }],
      ],
    ]);
  });

  it('given a rate card version with a row for it, then run 3 bills it exactly once at that price, dated at its window start and sourced', async () => {
    const applied = await api(base, 'PUT', '/v1/catalog', catalogDocument([v1, v2]));
    expect(applied.status, JSON.stringify(applied.body)).toBeLessThan(300);
    // Priced now: the balance counts it as pending (what the next run bills), no longer as unrated.
    const before = await get('/v1/customers/acme/balance');
    expect(before.unrated_pending).toEqual([]);
    expect(before.units).toMatchObject([{ settled: '988', pending: '12.75', available: '975.25' }]);

    const report = await run('2026-01-01T03:00:00Z');
    expect(report.customers.acme.unpriced_billed).toEqual([
      { ...largeLine, rate_version: 'v2', unit: 'credits', cost: '12.75' },
    ]);
    expect(report.customers.acme.unpriced_outstanding).toEqual([]);
    const billed = (await ledger('acme')).filter((e) => e.kind === 'adjustment');
    expect(billed).toHaveLength(1);
    expect(billed[0]).toMatchObject({
      amount: '-12.75',
      effective_at: '2026-01-01T02:00:00.000Z',
      run_id: report.run_id,
      meter: 'images',
      dimensions: { size: 'large' },
      quantity: '3',
      rate_version: 'v2',
      source: `unpriced usage since 2026-01-01T00:10:00.000Z (found by ${largeLine.found_by}), priced at rate card v2 by this run`,
    });
    // 3 large images at 4.25, exactly.
    expect(await settled('acme')).toBe('975.25');
    const after = await get('/v1/customers/acme/balance');
    expect(after.unrated_pending).toEqual([]);
    expect(after.units).toMatchObject([{ settled: '975.25', pending: '0', available: '975.25' }]);
    expect((await janTerm('acme')).unpriced).toEqual([]);
    expect(await gauge('drawdown_settlement_unpriced_lines')).toBe(0);
    expect((await get(`/v1/settlements/${encodeURIComponent(report.run_id)}`)).unpriced_outstanding).toEqual([]);
  });

  it('given run 4 and a re-run of run 3’s exact window, then nothing more is posted for it', async () => {
    const report = await run('2026-01-01T04:00:00Z');
    expect(report.entries_posted).toBe(0);
    expect(report.customers.acme?.unpriced_billed ?? []).toEqual([]);
    const again = await run('2026-01-01T03:00:00Z', '2026-01-01T02:00:00Z');
    expect(again.entries_posted).toBe(0);
    expect((await ledger('acme')).filter((e) => e.kind === 'adjustment')).toHaveLength(1);
    expect(await settled('acme')).toBe('975.25');
  });

  it('given a settlement process killed after its ledger insert and again after recording unpriced usage, then the resumed run bills the line once', async () => {
    // beta's huge images: found by the run to 05:00, priced by v3 from 05:00.
    await usage('beta', 'images', '{"size":"huge"}', '2026-01-01T04:30:00Z', '2');
    const found = await run('2026-01-01T05:00:00Z');
    expect(found.customers.beta.unpriced_outstanding).toMatchObject([
      { meter: 'images', dimensions: { size: 'huge' }, quantity: '2', since: '2026-01-01T04:30:00.000Z' },
    ]);
    const applied = await api(base, 'PUT', '/v1/catalog', catalogDocument([v1, v2, v3]));
    expect(applied.status, JSON.stringify(applied.body)).toBeLessThan(300);
    // chDB is one process's: the API process steps aside while `drawdown settle` runs.
    await stop();
    const env = { DRAWDOWN_CLICKHOUSE_URL: clickhouse.url };
    for (const fault of ['settle-after-ledger', 'settle-after-unpriced']) {
      const doomed = spawnDrawdown('settle', { ...env, DRAWDOWN_FAULT: fault });
      const exit = await crashed(doomed);
      expect(exit.signal, doomed.output()).toBe('SIGKILL');
    }
    const resumed = spawnDrawdown('settle', env);
    expect((await resumed.exited).code, resumed.output()).toBe(0);
    await start();

    const entries = (await ledger('beta')).filter((e) => e.kind === 'adjustment');
    expect(entries.map((e) => [e.amount, e.effective_at, e.rate_version, e.source])).toEqual([
      [
        '-14',
        '2026-01-01T05:00:00.000Z',
        'v3',
        `unpriced usage since 2026-01-01T04:30:00.000Z (found by ${found.run_id}), priced at rate card v3 by this run`,
      ],
    ]);
    const balance = await get('/v1/customers/beta/balance');
    expect(balance.unrated_pending).toEqual([]);
    // The resumed window run again exactly posts nothing more for it.
    const { runs } = await get('/v1/settlements?limit=100');
    const crashedRun = runs.find((r: any) => r.from === '2026-01-01T05:00:00.000Z');
    expect(crashedRun).toMatchObject({ status: 'completed', unpriced_outstanding_lines: 0 });
    const again = await run(crashedRun.until, crashedRun.from);
    expect(again.entries_posted).toBe(0);
    expect(again.customers.beta.unpriced_billed).toHaveLength(1);
    expect((await ledger('beta')).filter((e) => e.kind === 'adjustment')).toHaveLength(1);
  });
});
