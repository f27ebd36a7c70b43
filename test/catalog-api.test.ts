/**
 * The catalog admin API through real processes: the all-in-one on chDB for
 * day-to-day catalog changes (a rate added through the API prices the next
 * settlement run, no restart), a gateway on its own following a meter added
 * through the settlement process (clickhouse-server), and API keys.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey } from '../shared/auth.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  api,
  postEvents,
  postEventsUntil,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  waitForStreamDrained,
  type ClickHouseTarget,
} from './harness.js';

const minuteMs = 60_000;

describe('catalog admin API on the all-in-one (chDB)', () => {
  const dir = tempDir('catalog-api');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  let drawdown: Running;
  let base: string;
  const nowMinute = Math.floor(Date.now() / minuteMs) * minuteMs;
  const usageAtMs = nowMinute - 10 * minuteMs;

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('chdb', dir.path);
    drawdown = await startDrawdown(testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url }), {
      ingest: true,
      rater: true,
      settlement: true,
    });
    base = drawdown.url!;
  });

  afterAll(async () => {
    await drawdown?.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('given a catalog file and an empty store, then the file is revision 1 and GET returns it with its ETag', async () => {
    const response = await fetch(`${base}/v1/catalog`);
    const body = (await response.json()) as any;
    expect(response.status).toBe(200);
    expect(response.headers.get('etag')).toBe('"1"');
    expect(body).toMatchObject({ revision: 1, applied_by: expect.stringMatching(/^seed:/) });
    expect(body.document.meters.map((m: any) => m.key)).toEqual(['dall-e-3.images', 'gpt-4o.input_tokens', 'images']);
  });

  it('given the same document twice, then the second PUT changes nothing; a dry run shows the diff and writes nothing', async () => {
    const { document } = (await api(base, 'GET', '/v1/catalog')).body;
    const same = await api(base, 'PUT', '/v1/catalog', document);
    expect(same.body).toMatchObject({ revision: 1, changed: false, changes: [] });

    document.packages[0].price.amount = '95.00';
    const dry = await api(base, 'PUT', '/v1/catalog?dry_run=true', document);
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ revision: 1, changed: true, dry_run: true });
    expect(dry.body.changes).toEqual([
      {
        kind: 'package',
        id: 'credits-100',
        change: 'changed',
        fields: [{ path: 'price.amount', before: '100.00', after: '95.00' }],
      },
    ]);
    expect((await api(base, 'GET', '/v1/catalog')).body.revision).toBe(1);
  });

  it('given an invalid meter, then 422 names the field of the body and no revision is written', async () => {
    const bad = await api(base, 'PUT', '/v1/catalog/meters/tts.seconds', {
      name: 'TTS',
      aggregation: 'avg',
      dimensions: ['voice', 'voice'],
    });
    expect(bad.status).toBe(422);
    expect(bad.body.code).toBe('catalog_definition_invalid');
    expect(bad.body.errors.map((e: any) => e.field).sort()).toEqual(['aggregation', 'dimensions[1]']);
    // A typo of an optional field would otherwise create a sum meter and store the typo in a new revision.
    const typo = await api(base, 'PUT', '/v1/catalog/meters/tts.seconds', { name: 'TTS', agregation: 'max' });
    expect(typo.status).toBe(422);
    expect(typo.body.errors).toEqual([
      expect.objectContaining({
        field: 'agregation',
        code: 'unknown_field',
        message: expect.stringContaining('did you mean aggregation?'),
      }),
    ]);
    const mismatch = await api(base, 'PUT', '/v1/catalog/meters/tts.seconds', { key: 'other' });
    expect(mismatch.status).toBe(422);
    expect(mismatch.body.errors).toEqual([expect.objectContaining({ field: 'key' })]);
    expect((await api(base, 'GET', '/v1/catalog')).body.revision).toBe(1);
  });

  it('given a new meter through the API, then the gateway accepts its events at once, and changing its aggregation later is refused', async () => {
    const before = await postEvents(base, [
      { id: 'tts-0', customer: 'acme', meter: 'tts.seconds', quantity: 1, timestamp: usageAtMs },
    ]);
    expect(before.status).toBe(422);
    const added = await api(base, 'PUT', '/v1/catalog/meters/tts.seconds', {
      name: 'TTS seconds',
      aggregation: 'sum',
      dimensions: ['voice'],
    });
    expect(added.status).toBe(200);
    expect(added.body).toMatchObject({
      revision: 2,
      previous_revision: 1,
      changed: true,
      changes: [{ kind: 'meter', id: 'tts.seconds', change: 'added' }],
    });
    // The rater's workers follow meter changes through CatalogSource.onChange (wired by the rater), so only the
    // gateway is checked here.
    const refused = await api(base, 'PUT', '/v1/catalog/meters/tts.seconds', {
      name: 'TTS seconds',
      aggregation: 'max',
      dimensions: ['voice'],
    });
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({
      code: 'catalog_conflict',
      errors: [expect.objectContaining({ field: 'aggregation', code: 'immutable' })],
    });
    const renamed = await api(base, 'PUT', '/v1/catalog/meters/tts.seconds', {
      name: 'Speech seconds',
      aggregation: 'sum',
      dimensions: ['voice'],
    });
    expect(renamed.body).toMatchObject({
      revision: 3,
      changes: [
        {
          kind: 'meter',
          id: 'tts.seconds',
          change: 'changed',
          fields: [{ path: 'name', before: 'TTS seconds', after: 'Speech seconds' }],
        },
      ],
    });
  });

  it('given usage no rate prices, when a rate card version is added through the API, then the next settlement run prices it without a restart', async () => {
    const usage = {
      id: 'img-1',
      customer: 'painter',
      meter: 'images',
      quantity: 4,
      dimensions: { model: 'Flux', resolution: '1K', input: 'prompt' },
      timestamp: usageAtMs,
    };
    expect((await postEvents(base, [usage])).status).toBe(202);
    await waitForStreamDrained(nats.url);
    // Settle up to just before the usage: the cursor moves, the usage stays unsettled.
    const first = await api(base, 'POST', '/v1/settlements', {
      until: new Date(usageAtMs - 2 * minuteMs).toISOString(),
    });
    expect(first.status).toBe(200);

    const { document } = (await api(base, 'GET', '/v1/catalog')).body;
    const current = document.rate_card.versions.at(-1);
    const version = {
      version: 'flux',
      effective_from: new Date(usageAtMs - minuteMs).toISOString(),
      rows: [
        ...current.rows,
        { meter: 'images', match: { model: 'Flux' }, unit: 'credits', price: { model: 'unit', amount: '2.5' } },
      ],
    };
    const tooEarly = await api(base, 'POST', '/v1/catalog/rate-card/versions', {
      ...version,
      version: 'too-early',
      effective_from: new Date(usageAtMs - 5 * minuteMs).toISOString(),
    });
    expect(tooEarly.status).toBe(409);
    expect(tooEarly.body.errors).toEqual([expect.objectContaining({ field: 'effective_from', code: 'settled' })]);
    const added = await api(base, 'POST', '/v1/catalog/rate-card/versions', version);
    expect(added.status).toBe(200);
    expect(added.body.changes).toEqual([{ kind: 'rate_card_version', id: 'flux', change: 'added' }]);
    // Posting the same version again is a no-op, so a retried POST is safe.
    expect((await api(base, 'POST', '/v1/catalog/rate-card/versions', version)).body).toMatchObject({
      changed: false,
      revision: added.body.revision,
    });

    const second = await api(base, 'POST', '/v1/settlements', { until: new Date(nowMinute).toISOString() });
    expect(second.body.customers.painter.rated).toEqual([
      expect.objectContaining({ meter: 'images', rate_version: 'flux', quantity: '4', cost: '10' }),
    ]);
    const balance = await api(base, 'GET', '/v1/customers/painter/balance');
    expect(balance.body.units[0]).toMatchObject({ settled: '-10' });
  });

  it('given a package changed through the API, then purchases use it at once', async () => {
    const changed = await api(base, 'PUT', '/v1/catalog/packages/credits-50', {
      name: '50 credits',
      price: { currency: 'USD', amount: '50.00' },
      credits: '50',
      unit: 'credits',
    });
    expect(changed.status).toBe(200);
    const bought = await api(
      base,
      'POST',
      '/v1/customers/buyer/purchases',
      { package: 'credits-50' },
      { 'idempotency-key': 'buy-50' },
    );
    expect(bought.status).toBe(201);
    expect(bought.body.entry).toMatchObject({ kind: 'purchase', amount: '50' });
  });

  it('given plans through the API, then each POST adds a version, saved versions stay as they were, and the history lists them', async () => {
    const grant = (quantity: string) => ({
      grants: [{ id: 'monthly', unit: 'credits', quantity, frequency: 'monthly' }],
    });
    const missingBilling = await api(base, 'POST', '/v1/catalog/plans/starter/versions', grant('100'));
    expect(missingBilling.status).toBe(422);
    expect(missingBilling.body.errors).toEqual([expect.objectContaining({ field: 'billing' })]);
    const v1 = await api(base, 'POST', '/v1/catalog/plans/starter/versions', { billing: 'monthly', ...grant('100') });
    expect(v1.body.changes).toEqual([{ kind: 'plan', id: 'starter', change: 'added' }]);
    const v2 = await api(base, 'POST', '/v1/catalog/plans/starter/versions', grant('150'));
    expect(v2.body.changes[0].fields).toEqual(
      expect.arrayContaining([expect.objectContaining({ path: 'versions[1].grants[0].quantity', after: '150' })]),
    );
    const edit = await api(base, 'POST', '/v1/catalog/plans/starter/versions', { version: 1, ...grant('999') });
    expect(edit.status).toBe(409);
    expect(edit.body.errors).toEqual([expect.objectContaining({ field: 'version', code: 'immutable' })]);
    const badGrant = await api(base, 'POST', '/v1/catalog/plans/starter/versions', {
      grants: [{ id: 'monthly', unit: 'credits', quantity: '-1', frequency: 'monthly' }],
    });
    expect(badGrant.status).toBe(422);
    expect(badGrant.body.errors).toEqual([expect.objectContaining({ field: 'grants[0].quantity' })]);

    const subscribed = await api(base, 'PUT', '/v1/catalog/subscriptions/sub-starter', {
      customer: 'acme',
      plan: 'starter',
      plan_version: 1,
      start: new Date(nowMinute).toISOString(),
    });
    expect(subscribed.status).toBe(200);
    const history = await api(base, 'GET', '/v1/catalog/plans/starter/versions');
    expect(history.body).toMatchObject({ plan: 'starter', billing: 'monthly' });
    expect(history.body.versions.map((v: any) => [v.version, v.grants[0].quantity])).toEqual([
      [1, '100'],
      [2, '150'],
    ]);
  });

  it('given writes based on the same revision, then one wins and the other is told it is stale', async () => {
    const latest = await api(base, 'GET', '/v1/catalog');
    const tag = `"${latest.body.revision}"`;
    const [a, b] = await Promise.all([
      api(base, 'PUT', '/v1/catalog/credit-units/points', { name: 'Points' }, { 'if-match': tag }),
      api(base, 'PUT', '/v1/catalog/credit-units/tokens', { name: 'Tokens' }, { 'if-match': tag }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 412]);
    expect([a.body.code, b.body.code]).toContain('catalog_revision_stale');
    // Without If-Match an entity write applies to whatever is latest.
    expect((await api(base, 'PUT', '/v1/catalog/credit-units/tokens', { name: 'Tokens' })).status).toBe(200);
    const malformed = await api(
      base,
      'PUT',
      '/v1/catalog/credit-units/tokens',
      { name: 'Tokens' },
      { 'if-match': 'yesterday' },
    );
    expect(malformed.status).toBe(400);
  });

  it('given a removed credit unit in a whole document, then it is refused and the unit can be archived instead', async () => {
    const { document, revision } = (await api(base, 'GET', '/v1/catalog')).body;
    const removed = { ...document, credit_units: document.credit_units.filter((u: any) => u.id !== 'points') };
    const refused = await api(base, 'PUT', '/v1/catalog', removed, { 'if-match': `"${revision}"` });
    expect(refused.status).toBe(409);
    expect(refused.body.errors).toEqual([expect.objectContaining({ field: 'credit_units', code: 'removed' })]);
    const archived = await api(
      base,
      'PUT',
      '/v1/catalog/credit-units/points',
      { name: 'Points', archived: true },
      { 'if-match': `"${revision}"` },
    );
    expect(archived.body).toMatchObject({ revision: revision + 1, changed: true });
  });

  it('keeps every revision readable, newest first, page by page', async () => {
    const latest = (await api(base, 'GET', '/v1/catalog')).body.revision as number;
    const page1 = await api(base, 'GET', '/v1/catalog/revisions?limit=2');
    expect(page1.body.revisions.map((r: any) => r.revision)).toEqual([latest, latest - 1]);
    const page2 = await api(base, 'GET', `/v1/catalog/revisions?limit=100&before=${page1.body.next}`);
    expect(page2.body.revisions.at(-1)).toMatchObject({ revision: 1, applied_by: expect.stringMatching(/^seed:/) });
    expect(page2.body.next).toBeNull();
    const first = await api(base, 'GET', '/v1/catalog/revisions/1');
    expect(first.body.document.meters.map((m: any) => m.key)).not.toContain('tts.seconds');
    expect((await api(base, 'GET', '/v1/catalog/revisions/9999')).status).toBe(404);
  });
});

describe('a gateway on its own follows meters added through the settlement process (clickhouse-server)', () => {
  const dir = tempDir('catalog-gateway');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  const running: Running[] = [];

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
  });

  afterAll(async () => {
    for (const r of running) await r.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('given a meter added through the API, then the gateway accepts its events after its next refresh', async () => {
    const settlement = await startDrawdown(testConfig({ clickhouseUrl: clickhouse.url }), {
      ingest: false,
      rater: false,
      settlement: true,
    });
    running.push(settlement);
    // No catalog file: the gateway reads the store the settlement process seeded.
    const gateway = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url, catalog: '', catalogRefreshMs: 200 }),
      { ingest: true, rater: false, settlement: false },
    );
    running.push(gateway);
    const event = {
      id: 'v-1',
      customer: 'acme',
      meter: 'video.seconds',
      quantity: 3,
      timestamp: Date.now() - minuteMs,
    };
    expect((await postEvents(gateway.url!, [event])).status).toBe(422);

    const added = await api(settlement.url!, 'PUT', '/v1/catalog/meters/video.seconds', { name: 'Video seconds' });
    expect(added.status).toBe(200);
    expect(await postEventsUntil(gateway.url!, 202, () => [event])).toBe(202);
    expect(gateway.catalogSource.current().revision).toBe(added.body.revision);

    // Archived: the gateway stops accepting new events for it.
    expect(
      (await api(settlement.url!, 'PUT', '/v1/catalog/meters/video.seconds', { name: 'Video seconds', archived: true }))
        .status,
    ).toBe(200);
    expect(await postEventsUntil(gateway.url!, 422, (attempt) => [{ ...event, id: `v-${attempt + 2}` }])).toBe(422);
  });
});

describe('catalog admin API with API keys', () => {
  const dir = tempDir('catalog-keys');
  let drawdown: Running;
  const keys = { admin: 'dd_admin-key-for-catalog-tests', read: 'dd_read-key-for-catalog-tests' };

  beforeAll(async () => {
    const apiKeys = JSON.stringify([
      { id: 'billing', sha256: hashKey(keys.admin), scopes: ['admin'] },
      { id: 'dashboard', sha256: hashKey(keys.read), scopes: ['read'] },
    ]);
    drawdown = await startDrawdown(testConfig({ clickhouseUrl: `chdb:${dir.path}/chdb`, auth: 'required', apiKeys }), {
      ingest: false,
      rater: false,
      settlement: true,
    });
  });

  afterAll(async () => {
    await drawdown?.stop();
    dir.remove();
  });

  it('needs a key with the admin scope, and records which key made a change', async () => {
    const base = drawdown.url!;
    expect((await api(base, 'GET', '/v1/catalog')).status).toBe(401);
    expect(
      (await api(base, 'PUT', '/v1/catalog/meters/x', { name: 'x' }, { authorization: `Bearer ${keys.read}` })).status,
    ).toBe(403);
    expect(
      (await api(base, 'GET', '/v1/catalog/revisions', undefined, { authorization: `Bearer ${keys.read}` })).status,
    ).toBe(403);
    const written = await api(
      base,
      'PUT',
      '/v1/catalog/meters/x',
      { name: 'x' },
      { authorization: `Bearer ${keys.admin}` },
    );
    expect(written.status).toBe(200);
    const latest = await api(base, 'GET', '/v1/catalog', undefined, { authorization: `Bearer ${keys.admin}` });
    expect(latest.body).toMatchObject({ revision: 2, applied_by: 'key:billing' });
  });
});

describe('catalog bootstrap', () => {
  const dir = tempDir('catalog-bootstrap');
  afterAll(() => dir.remove());

  it('given an empty store and no catalog file, then settlement refuses to start and says how to seed it', async () => {
    const started = startDrawdown(testConfig({ clickhouseUrl: `chdb:${dir.path}/chdb`, catalog: '' }), {
      ingest: false,
      rater: false,
      settlement: true,
    });
    await expect(started).rejects.toMatchObject({
      code: 'config_invalid',
      message: expect.stringContaining('drawdown catalog apply FILE'),
    });
  });
});
