/**
 * API keys with scopes on every route (SPEC §3): no key or an unknown key is
 * 401, a key without the route's scope is 403 — checked before the body is
 * read, so a refused batch publishes nothing — and keys never reach the logs.
 */
import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey, newKey } from '../shared/auth.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { catalogPath, cliPath, packr, startNats, streamState, tempDir, testConfig } from './harness.js';

describe('API keys and scopes', () => {
  const dir = tempDir('auth');
  let nats: NatsServerProcess;
  let drawdown: Running;
  let base: string;
  let logged = '';
  const keys = { ingest: newKey(), read: newKey(), admin: newKey(), all: newKey() };
  const table = [
    { id: 'ingest-only', sha256: hashKey(keys.ingest), scopes: ['ingest'] },
    { id: 'read-only', sha256: hashKey(keys.read), scopes: ['read'] },
    { id: 'admin-only', sha256: hashKey(keys.admin), scopes: ['admin'] },
    { id: 'everything', sha256: hashKey(keys.all), scopes: ['ingest', 'read', 'admin'] },
  ];

  beforeAll(async () => {
    nats = await startNats(dir.path);
    const log = pino({ level: 'debug' }, new Writable({ write: (chunk, _encoding, done) => ((logged += chunk.toString()), done()) }));
    drawdown = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: `chdb:${dir.path}/chdb`, auth: 'required', apiKeys: JSON.stringify(table) }),
      { ingest: true, rater: true, settlement: true },
      { log },
    );
    base = drawdown.url!;
  });

  afterAll(async () => {
    await drawdown?.stop();
    await nats?.stop();
    dir.remove();
  });

  const event = { id: 'a1', customer: 'acme', meter: 'gpt-4o.input_tokens', quantity: 1, timestamp: Date.now() };
  const routes: { name: string; scope: 'ingest' | 'read' | 'admin'; send: (auth: Record<string, string>) => Promise<Response> }[] = [
    { name: 'POST /v1/events', scope: 'ingest', send: (h) => fetch(`${base}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/msgpack', ...h }, body: packr.pack([event]) }) },
    { name: 'GET balance', scope: 'read', send: (h) => fetch(`${base}/v1/customers/acme/balance`, { headers: h }) },
    { name: 'GET ledger', scope: 'read', send: (h) => fetch(`${base}/v1/customers/acme/ledger`, { headers: h }) },
    { name: 'GET usage', scope: 'read', send: (h) => fetch(`${base}/v1/customers/acme/usage`, { headers: h }) },
    { name: 'POST purchases', scope: 'admin', send: (h) => fetch(`${base}/v1/customers/acme/purchases`, { method: 'POST', headers: { 'content-type': 'application/json', ...h }, body: '{"package":"credits-100"}' }) },
    { name: 'POST settlements', scope: 'admin', send: (h) => fetch(`${base}/v1/settlements`, { method: 'POST', headers: { 'content-type': 'application/json', ...h }, body: '{}' }) },
  ];

  it('answers every route by key: 401 without a valid key, 403 without the scope, the handler otherwise', async () => {
    const callers: [string, Record<string, string>, (scope: string) => number[]][] = [
      ['no key', {}, () => [401]],
      ['malformed header', { authorization: `Basic ${keys.all}` }, () => [401]],
      ['unknown key', { authorization: `Bearer ${newKey()}` }, () => [401]],
      ['ingest key', { authorization: `Bearer ${keys.ingest}` }, (s) => (s === 'ingest' ? [202] : [403])],
      ['read key', { authorization: `Bearer ${keys.read}` }, (s) => (s === 'read' ? [200] : [403])],
      ['admin key', { authorization: `Bearer ${keys.admin}` }, (s) => (s === 'admin' ? [200, 201] : [403])],
      ['all scopes', { authorization: `Bearer ${keys.all}` }, () => [200, 201, 202]],
    ];
    for (const route of routes) {
      for (const [caller, headers, expected] of callers) {
        const response = await route.send(headers);
        expect(expected(route.scope), `${caller} → ${route.name}`).toContain(response.status);
        if (response.status === 401) {
          expect(response.headers.get('www-authenticate')).toBe('Bearer');
          expect(((await response.json()) as { code: string }).code).toBe('unauthorized');
        } else if (response.status === 403) {
          expect(((await response.json()) as { code: string }).code).toBe('forbidden');
        } else await response.arrayBuffer();
      }
    }
  });

  it('publishes nothing for a batch refused for its key', async () => {
    const before = (await streamState(nats.url)).lastSeq;
    for (const headers of [{}, { authorization: `Bearer ${keys.read}` }] as Record<string, string>[]) {
      const response = await routes[0]!.send(headers);
      expect([401, 403]).toContain(response.status);
    }
    expect((await streamState(nats.url)).lastSeq).toBe(before);
  });

  it('keeps health and metrics open for probes and Prometheus', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) expect((await fetch(base + path)).status).toBe(200);
  });

  it('never writes a key to the logs', () => {
    expect(logged.length).toBeGreaterThan(0);
    for (const key of Object.values(keys)) expect(logged).not.toContain(key);
  });

  it('refuses to start a service with auth required and no keys', () => {
    const result = spawnSync(process.execPath, [cliPath, 'ingest'], {
      env: { ...process.env, DRAWDOWN_NATS_URL: nats.url, DRAWDOWN_CATALOG: catalogPath, DRAWDOWN_AUTH: '', DRAWDOWN_API_KEYS: '' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('DRAWDOWN_API_KEYS is required while DRAWDOWN_AUTH=required');
  });
});
