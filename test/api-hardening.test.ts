/**
 * The settlement API's edges (issue 16), against drawdown's settlement
 * process on chDB and on a real clickhouse-server:
 * - every time parameter outside what ClickHouse's DateTime stores, or not an
 *   instant, is 400 request_invalid naming it, and settlement never stores a
 *   zero-length or inverted window;
 * - concurrent purchases under one Idempotency-Key buy once, and a different
 *   body under the key is 409;
 * - with clickhouse-server stopped, reads and writes answer 503
 *   store_unavailable with Retry-After, and work again once it is back;
 * - a key sent in a query string never reaches a log line.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../shared/clickhouse/store.js';
import { createLogger } from '../shared/log.js';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import { api, catalogPath, cliPath, tempDir, testConfig } from './harness.js';

/** The demo catalog plus a second package, so two purchases under one key can differ. */
function writeCatalog(dir: string): string {
  const catalog = JSON.parse(readFileSync(catalogPath, 'utf8')) as { packages: unknown[] };
  catalog.packages.push({
    id: 'credits-500',
    name: '500 credits',
    price: { currency: 'USD', amount: '500.00' },
    credits: '500',
    unit: 'credits',
  });
  const path = join(dir, 'catalog.json');
  writeFileSync(path, JSON.stringify(catalog));
  return path;
}

async function startSettlement(
  clickhouseUrl: string,
  catalog: string,
): Promise<{ drawdown: Running; logged: () => string }> {
  let logged = '';
  // The logger drawdown builds for itself, at trace so every request line is written, into a string.
  const log = createLogger('trace', 'drawdown-hardening-test', { write: (line: string) => void (logged += line) });
  const drawdown = await startDrawdown(
    testConfig({ clickhouseUrl, catalog }),
    { ingest: false, rater: false, settlement: true },
    { log },
  );
  return { drawdown, logged: () => logged };
}

async function count(store: Store, sql: string): Promise<number> {
  return Number((await store.query(sql))[0]![0]);
}

const purchase = (base: string, customer: string, body: Record<string, unknown>, key: string) =>
  api(base, 'POST', `/v1/customers/${customer}/purchases`, body, { 'idempotency-key': key });

/** The same checks on either back end: 20 purchases at once under one key. */
function purchaseRaces(target: () => { base: string; store: Store }): void {
  it('given 20 concurrent purchases with one Idempotency-Key, then exactly one is created, all answer the same entry, and the ledger holds one row', async () => {
    const { base, store } = target();
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => purchase(base, 'race-same', { package: 'credits-100' }, 'buy-once')),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([...Array(19).fill(200), 201]);
    expect(answers.filter((a) => a.body.created === true)).toHaveLength(1);
    expect(new Set(answers.map((a) => JSON.stringify(a.body.entry))).size).toBe(1);
    expect(answers[0]!.body.entry).toMatchObject({ kind: 'purchase', amount: '100', unit: 'credits' });
    const ledger = await api(base, 'GET', '/v1/customers/race-same/ledger');
    expect(ledger.body.entries.map((e: any) => [e.kind, e.id, e.amount])).toEqual([
      ['purchase', answers[0]!.body.entry.id, '100'],
    ]);
    expect(await count(store, "SELECT count() FROM ledger_entries WHERE customer = 'race-same'")).toBe(1);
    const balance = await api(base, 'GET', '/v1/customers/race-same/balance');
    expect(balance.body.units).toEqual([expect.objectContaining({ unit: 'credits', settled: '100' })]);
  });

  it('given concurrent purchases with one key but two packages, then one package is bought once, the other body gets 409, and balance reads never flip', async () => {
    const { base, store } = target();
    const packages = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? 'credits-100' : 'credits-500'));
    const answers = await Promise.all(packages.map((p) => purchase(base, 'race-mixed', { package: p }, 'buy-mixed')));
    const created = answers.filter((a) => a.status === 201);
    expect(created).toHaveLength(1);
    const winner = created[0]!.body.entry;
    const winning = winner.amount === '100' ? 'credits-100' : 'credits-500';
    answers.forEach((a, i) => {
      if (packages[i] === winning) {
        expect([200, 201]).toContain(a.status);
        expect(a.body.entry).toEqual(winner);
      } else {
        expect(a.status).toBe(409);
        expect(a.body.code).toBe('idempotency_key_reused');
      }
    });
    expect(await count(store, "SELECT count() FROM ledger_entries WHERE customer = 'race-mixed'")).toBe(1);
    const reads = await Promise.all(
      Array.from({ length: 10 }, () => api(base, 'GET', '/v1/customers/race-mixed/balance')),
    );
    expect(new Set(reads.map((r) => r.body.units[0]?.settled))).toEqual(new Set([winner.amount]));
    // Later, too: the other package, or another effective_at, under the key is 409; the same body again is the first
    // entry.
    const other = winning === 'credits-100' ? 'credits-500' : 'credits-100';
    expect((await purchase(base, 'race-mixed', { package: other }, 'buy-mixed')).status).toBe(409);
    expect(
      (await purchase(base, 'race-mixed', { package: winning, effective_at: '2020-01-01T00:00:00Z' }, 'buy-mixed')).body
        .code,
    ).toBe('idempotency_key_reused');
    const again = await purchase(base, 'race-mixed', { package: winning }, 'buy-mixed');
    expect(again).toMatchObject({ status: 200, body: { created: false, entry: winner } });
    expect(await count(store, "SELECT count() FROM ledger_entries WHERE customer = 'race-mixed'")).toBe(1);
  });
}

describe('API hardening on chDB', () => {
  const dir = tempDir('hardening-chdb');
  let drawdown: Running;
  let logged: () => string;
  let base: string;

  beforeAll(async () => {
    ({ drawdown, logged } = await startSettlement(`chdb:${dir.path}/chdb`, writeCatalog(dir.path)));
    base = drawdown.url!;
  });

  afterAll(async () => {
    await drawdown?.stop();
    dir.remove();
  });

  const runs = (): Promise<number> => count(drawdown.store!, 'SELECT count() FROM settlement_runs');

  it('given a usage from/until outside 1970…2105, not an instant, or not after from, then 400 request_invalid names the parameter', async () => {
    const cases: [string, string, string][] = [
      ['from=1969-12-31T23:59:59Z', 'from', 'range'],
      ['until=2106-01-01T00:00:00Z', 'until', 'range'],
      ['until=2106-02-07T06:28:16Z', 'until', 'range'],
      ['from=99999999999999999', 'from', 'range'],
      ['from=-1', 'from', 'format'],
      ['from=yesterday', 'from', 'format'],
      ['until=2026-01-01T00:00:00', 'until', 'format'],
      ['from=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z', 'until', 'range'],
      ['from=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z', 'until', 'range'],
    ];
    for (const [query, field, code] of cases) {
      const response = await api(base, 'GET', `/v1/customers/acme/usage?${query}`);
      expect(response.status, query).toBe(400);
      expect(response.body.code, query).toBe('request_invalid');
      expect(response.body.errors[0], query).toMatchObject({ field, code });
    }
    // A ledger page token carries an instant too.
    const token = await api(
      base,
      'GET',
      `/v1/customers/acme/ledger?after=${encodeURIComponent('99999999999999999999|purchase:x')}`,
    );
    expect(token).toMatchObject({
      status: 400,
      body: { code: 'request_invalid', errors: [expect.objectContaining({ field: 'after' })] },
    });
    // The bounds themselves are a valid query: no usage, not an error.
    const widest = await api(
      base,
      'GET',
      '/v1/customers/acme/usage?from=1970-01-01T00:00:00Z&until=2105-12-31T23:59:59Z',
    );
    expect(widest).toMatchObject({ status: 200, body: { usage: [] } });
  });

  it('given a purchase effective_at outside 1970…2105 or not an instant, then 400 names effective_at and nothing is bought', async () => {
    for (const effective_at of [
      '1969-12-31T23:59:59Z',
      '2106-02-07T06:28:16Z',
      '9999-01-01T00:00:00Z',
      -1000,
      1e20,
      'last week',
      1.5,
    ]) {
      const response = await purchase(
        base,
        'dated',
        { package: 'credits-100', effective_at },
        `dated-${String(effective_at)}`,
      );
      expect(response.status, String(effective_at)).toBe(400);
      expect(response.body).toMatchObject({
        code: 'request_invalid',
        errors: [expect.objectContaining({ field: 'effective_at' })],
      });
    }
    expect((await api(base, 'GET', '/v1/customers/dated/ledger')).body.entries).toEqual([]);
    const epoch = await purchase(
      base,
      'dated',
      { package: 'credits-100', effective_at: '1970-01-01T00:00:00Z' },
      'dated-epoch',
    );
    expect(epoch).toMatchObject({ status: 201, body: { entry: { effective_at: '1970-01-01T00:00:00.000Z' } } });
  });

  it('given a settlement until/from outside 1970…2105 or not an instant, then 400 names it and no run is stored', async () => {
    const before = await runs();
    for (const [body, field] of [
      [{ until: '2106-02-07T06:28:16Z' }, 'until'],
      [{ until: '2200-01-01T00:00:00Z' }, 'until'],
      [{ until: 'tomorrow' }, 'until'],
      [{ until: 1e20 }, 'until'],
      [{ from: '1969-12-31T23:59:00Z', until: '2026-01-01T00:00:00Z' }, 'from'],
    ] as const) {
      const response = await api(base, 'POST', '/v1/settlements', body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body).toMatchObject({ code: 'request_invalid', errors: [expect.objectContaining({ field })] });
    }
    expect(await runs()).toBe(before);
  });

  it('given until at the settled time, then settling is a no-op that stores nothing; before it, or not after from, it is refused naming until', async () => {
    const settledMs = Math.floor(Date.now() / 60_000) * 60_000 - 60 * 60_000;
    const settled = new Date(settledMs).toISOString();
    const first = await api(base, 'POST', '/v1/settlements', { until: settled });
    expect(first.status).toBe(200);
    const stored = await runs();

    const again = await api(base, 'POST', '/v1/settlements', { until: settled });
    expect(again).toMatchObject({
      status: 200,
      body: { from: settled, until: settled, entries_posted: 0, entries_already_posted: 0, customers: {} },
    });
    const earlier = new Date(settledMs - 60_000).toISOString();
    const behind = await api(base, 'POST', '/v1/settlements', { until: earlier });
    expect(behind).toMatchObject({
      status: 400,
      body: { code: 'request_invalid', errors: [expect.objectContaining({ field: 'until', code: 'range' })] },
    });
    expect(behind.body.detail).toContain(`settled until ${settled}`);
    for (const window of [
      { from: settled, until: settled },
      { from: settled, until: earlier },
      { from: '2026-01-01T00:00:00Z', until: '2025-12-31T00:00:00Z' },
    ]) {
      const response = await api(base, 'POST', '/v1/settlements', window);
      expect(response.status, JSON.stringify(window)).toBe(400);
      expect(response.body.errors[0], JSON.stringify(window)).toMatchObject({ field: 'until', code: 'range' });
    }
    expect(await runs()).toBe(stored);
    expect((await api(base, 'GET', '/v1/customers/acme/balance')).body.settled_until).toBe(settled);
  });

  purchaseRaces(() => ({ base, store: drawdown.store! }));

  it('given a key in the query string, when requests succeed, fail validation, miss a route or are refused, then it reaches no log line', async () => {
    const secret = 'secret123';
    expect((await api(base, 'GET', `/v1/customers/x/balance?api_key=${secret}`)).status).toBe(200);
    expect((await api(base, 'GET', `/v1/customers/x/usage?from=bad&api_key=${secret}`)).status).toBe(400);
    expect((await api(base, 'GET', `/v1/nowhere?api_key=${secret}`)).status).toBe(404);
    expect((await api(base, 'DELETE', `/v1/customers/x/balance?api_key=${secret}`)).status).toBe(405);
    expect((await purchase(base, 'x', { package: 'nope' }, 'k')).status).toBe(404);
    expect(
      (
        await api(
          base,
          'POST',
          `/v1/customers/x/purchases?api_key=${secret}`,
          { package: 'credits-100' },
          { 'idempotency-key': 'logged' },
        )
      ).status,
    ).toBe(201);
    // And should a handler ever log its request or URL, the logger drops the query.
    drawdown.log.warn(
      { url: `/v1/catalog?api_key=${secret}`, req: { method: 'GET', url: `/v1/catalog?api_key=${secret}` } },
      'request logged by hand',
    );
    const lines = logged()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(
      lines.filter((l) => l.msg === 'request completed' && l.path === '/v1/customers/x/balance').length,
    ).toBeGreaterThanOrEqual(2);
    expect(lines.filter((l) => l.msg === 'request rejected' && l.path === '/v1/customers/x/usage')).toHaveLength(1);
    expect(logged()).not.toContain(secret);
  });
});

describe('API hardening on clickhouse-server', () => {
  const dir = tempDir('hardening-server');
  let clickhouse: ClickHouseServerProcess;
  let drawdown: Running;
  let logged: () => string;
  let base: string;

  beforeAll(async () => {
    clickhouse = await ClickHouseServerProcess.start({ dir: join(dir.path, 'clickhouse') });
    ({ drawdown, logged } = await startSettlement(clickhouse.url, writeCatalog(dir.path)));
    base = drawdown.url!;
  });

  afterAll(async () => {
    await drawdown?.stop();
    await clickhouse?.stop();
    dir.remove();
  });

  purchaseRaces(() => ({ base, store: drawdown.store! }));

  it('given clickhouse-server stopped mid-test, then reads and writes answer 503 store_unavailable with Retry-After, and succeed once it is back', async () => {
    const settled = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000).toISOString();
    expect((await purchase(base, 'down', { package: 'credits-100' }, 'before-outage')).status).toBe(201);
    expect((await api(base, 'POST', '/v1/settlements', { until: settled })).status).toBe(200);

    await clickhouse.stop();
    const requests: [string, string, unknown?, Record<string, string>?][] = [
      ['GET', '/v1/customers/down/balance?api_key=secret123'],
      ['GET', '/v1/customers/down/ledger'],
      ['GET', '/v1/customers/down/usage?from=2026-01-01T00:00:00Z'],
      ['GET', '/v1/customers/down/statements'],
      ['GET', '/v1/catalog'],
      ['GET', '/v1/catalog/revisions'],
      ['GET', '/v1/catalog/plans/none/versions'],
      ['POST', '/v1/customers/down/purchases', { package: 'credits-100' }, { 'idempotency-key': 'during-outage' }],
      ['POST', '/v1/settlements', {}],
    ];
    for (const [method, path, body, headers] of requests) {
      const response = await fetch(base + path, {
        method,
        headers: { 'content-type': 'application/json', ...headers },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const problem = (await response.json()) as Record<string, unknown>;
      expect(response.status, `${method} ${path}`).toBe(503);
      expect(problem.code, `${method} ${path}`).toBe('store_unavailable');
      expect(response.headers.get('retry-after'), `${method} ${path}`).toBe('2');
      expect(response.headers.get('content-type')).toBe('application/problem+json');
    }
    const warned = logged()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((l) => l.msg === 'request refused: dependency unavailable');
    expect(warned.length).toBeGreaterThanOrEqual(requests.length);
    expect(warned[0]).toMatchObject({ code: 'store_unavailable', path: '/v1/customers/down/balance' });
    expect(logged()).not.toContain('secret123');

    await clickhouse.restart();
    // The first request after a restart may meet a pooled connection the old server closed: that is a 503 too.
    let balance = await api(base, 'GET', '/v1/customers/down/balance');
    for (let i = 0; i < 50 && balance.status === 503; i++) {
      await new Promise((r) => setTimeout(r, 200));
      balance = await api(base, 'GET', '/v1/customers/down/balance');
    }
    expect(balance).toMatchObject({
      status: 200,
      body: { settled_until: settled, units: [expect.objectContaining({ settled: '100' })] },
    });
    // The refused purchase was not stored: its retry under the same key buys it now, once.
    expect((await purchase(base, 'down', { package: 'credits-100' }, 'during-outage')).status).toBe(201);
    expect((await api(base, 'GET', '/v1/customers/down/balance')).body.units[0].settled).toBe('200');
    expect((await api(base, 'GET', '/v1/catalog')).status).toBe(200);
  });
});

describe('drawdown settle --until', () => {
  const dir = tempDir('hardening-cli');
  afterAll(() => dir.remove());

  const settle = (until: string): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [cliPath, 'settle', '--until', until], {
      env: {
        ...process.env,
        DRAWDOWN_CLICKHOUSE_URL: `chdb:${dir.path}/chdb`,
        DRAWDOWN_CATALOG: catalogPath,
        DRAWDOWN_LOG_LEVEL: 'warn',
      },
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('given an until outside 1970…2105, not an instant, or before the settled time, then it exits 1 naming --until or the settled time, and settles nothing', () => {
    for (const until of ['2106-02-07T06:28:16Z', '1969-12-31T23:00:00Z', 'next tuesday', '2026-01-01']) {
      const result = settle(until);
      expect(result.status, until).toBe(1);
      // One JSON line, like everything the CronJob writes.
      expect(JSON.parse(result.stderr), until).toMatchObject({
        level: 60,
        code: 'request_invalid',
        msg: expect.stringMatching(/^drawdown: --until must /),
      });
      expect(result.stdout, until).toBe('');
    }
    const first = settle('2026-01-01T01:00:00Z');
    expect(first.status, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({
      from: '1970-01-01T00:00:00.000Z',
      until: '2026-01-01T01:00:00.000Z',
    });
    const same = settle('2026-01-01T01:00:00Z');
    expect(same.status, same.stderr).toBe(0);
    expect(JSON.parse(same.stdout)).toMatchObject({
      from: '2026-01-01T01:00:00.000Z',
      until: '2026-01-01T01:00:00.000Z',
      entries_posted: 0,
    });
    const behind = settle('2026-01-01T00:00:00Z');
    expect(behind.status).toBe(1);
    expect(JSON.parse(behind.stderr).msg).toContain(
      'drawdown: until 2026-01-01T00:00:00.000Z is before the settled time (settled until 2026-01-01T01:00:00.000Z)',
    );
  });
});
