/**
 * API keys with scopes on every route (SPEC §3), against a real nats-server
 * and drawdown (ingest + rater + settlement on chDB): no key, a malformed
 * header or an unknown key is 401, a key without the route's scope is 403,
 * a key with it reaches the handler — checked before the body is read, so a
 * refused batch publishes nothing — and keys never reach the logs.
 */
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey, newKey, type Scope } from '../shared/auth.js';
import { createLogger } from '../shared/log.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { catalogPath, cliPath, packr, startNats, streamState, tempDir, testConfig } from './harness.js';

function runCli(
  args: string[],
  env: Record<string, string>,
): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [cliPath, ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** `drawdown keys new`, as an operator runs it: the key, and the entry to configure. */
function keysNew(scopes: string, id: string): { key: string; entry: { id: string; sha256: string; scopes: Scope[] } } {
  const result = runCli(['keys', 'new', '--scopes', scopes, '--id', id], {});
  if (result.status !== 0) throw new Error(`drawdown keys new failed: ${result.stderr}`);
  const [, key, , entry] = result.stdout
    .trim()
    .split('\n')
    .map((line) => line.trim());
  return { key: key!, entry: JSON.parse(entry!) };
}

describe('API keys and scopes', () => {
  const dir = tempDir('auth');
  let nats: NatsServerProcess;
  let drawdown: Running;
  let base: string;
  let logged = '';
  const bodyTimeoutMs = 3_000;

  // Three single-scope keys, one with every scope, and one made by the CLI.
  const fromCli = keysNew('ingest,read', 'from-cli');
  const keys = { ingest: newKey(), read: newKey(), admin: newKey(), all: newKey(), cli: fromCli.key };
  const keyTable = [
    { id: 'ingest-only', sha256: hashKey(keys.ingest), scopes: ['ingest'] },
    { id: 'read-only', sha256: hashKey(keys.read), scopes: ['read'] },
    { id: 'admin-only', sha256: hashKey(keys.admin), scopes: ['admin'] },
    { id: 'everything', sha256: hashKey(keys.all), scopes: ['ingest', 'read', 'admin'] },
    fromCli.entry,
  ];
  const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

  beforeAll(async () => {
    nats = await startNats(dir.path);
    // The logger drawdown builds for itself, writing to a string instead of stdout.
    const log = createLogger('trace', 'drawdown-auth-test', { write: (line: string) => void (logged += line) });
    drawdown = await startDrawdown(
      testConfig({
        natsUrl: nats.url,
        clickhouseUrl: `chdb:${dir.path}/chdb`,
        auth: 'required',
        apiKeys: JSON.stringify(keyTable),
        bodyTimeoutMs,
      }),
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

  const event = (id: string) => ({
    id,
    customer: 'acme',
    meter: 'gpt-4o.input_tokens',
    quantity: 1000,
    timestamp: Date.now() - 60_000,
  });
  let eventNumber = 0;
  const json = (method: string, body: string) => (h: Record<string, string>) => ({
    method,
    headers: { 'content-type': 'application/json', ...h },
    body,
  });

  interface Request {
    /** What the handler answers when it runs: its success, or its own 4xx for a bad request. */
    status: number;
    code?: string;
    path: string;
    init: (auth: Record<string, string>) => RequestInit;
  }
  const routes: { route: string; scope: Scope; valid: Request; invalid: Request }[] = [
    {
      route: 'POST /v1/events',
      scope: 'ingest',
      valid: {
        status: 202,
        path: '/v1/events',
        init: (h) => ({
          method: 'POST',
          headers: { 'content-type': 'application/msgpack', ...h },
          body: packr.pack([event(`e${eventNumber++}`)]),
        }),
      },
      invalid: {
        status: 415,
        code: 'unsupported_media_type',
        path: '/v1/events',
        init: (h) => ({ method: 'POST', headers: { 'content-type': 'text/plain', ...h }, body: 'x' }),
      },
    },
    {
      route: 'GET /v1/customers/{id}/balance',
      scope: 'read',
      valid: { status: 200, path: '/v1/customers/acme/balance', init: (h) => ({ headers: h }) },
      invalid: {
        status: 400,
        code: 'request_invalid',
        path: '/v1/customers/no%20spaces/balance',
        init: (h) => ({ headers: h }),
      },
    },
    {
      route: 'GET /v1/customers/{id}/ledger',
      scope: 'read',
      valid: { status: 200, path: '/v1/customers/acme/ledger', init: (h) => ({ headers: h }) },
      invalid: {
        status: 400,
        code: 'request_invalid',
        path: '/v1/customers/acme/ledger?limit=0',
        init: (h) => ({ headers: h }),
      },
    },
    {
      route: 'GET /v1/customers/{id}/usage',
      scope: 'read',
      valid: { status: 200, path: '/v1/customers/acme/usage?granularity=day&from=0', init: (h) => ({ headers: h }) },
      invalid: {
        status: 400,
        code: 'request_invalid',
        path: '/v1/customers/acme/usage?granularity=week',
        init: (h) => ({ headers: h }),
      },
    },
    {
      route: 'POST /v1/customers/{id}/purchases',
      scope: 'admin',
      valid: { status: 201, path: '/v1/customers/acme/purchases', init: json('POST', '{"package":"credits-100"}') },
      invalid: {
        status: 404,
        code: 'unknown_package',
        path: '/v1/customers/acme/purchases',
        init: json('POST', '{"package":"no-such-package"}'),
      },
    },
    {
      route: 'POST /v1/settlements',
      scope: 'admin',
      valid: { status: 200, path: '/v1/settlements', init: json('POST', '{}') },
      invalid: { status: 400, code: 'request_invalid', path: '/v1/settlements', init: json('POST', '[]') },
    },
  ];

  const callers: { caller: string; headers: Record<string, string>; scopes: Scope[] | 'none' }[] = [
    { caller: 'no key', headers: {}, scopes: 'none' },
    {
      caller: 'a malformed header (valid key, Basic scheme)',
      headers: { authorization: `Basic ${keys.all}` },
      scopes: 'none',
    },
    { caller: 'a malformed header (bare key)', headers: { authorization: keys.all }, scopes: 'none' },
    { caller: 'an unknown key', headers: bearer(newKey()), scopes: 'none' },
    { caller: 'the ingest-only key', headers: bearer(keys.ingest), scopes: ['ingest'] },
    { caller: 'the read-only key', headers: bearer(keys.read), scopes: ['read'] },
    { caller: 'the admin-only key', headers: bearer(keys.admin), scopes: ['admin'] },
    { caller: 'the key with every scope', headers: bearer(keys.all), scopes: ['ingest', 'read', 'admin'] },
    { caller: 'the CLI-made ingest+read key', headers: bearer(keys.cli), scopes: ['ingest', 'read'] },
  ];

  const cases = routes.flatMap(({ route, scope, valid, invalid }) =>
    callers.flatMap(({ caller, headers, scopes }) =>
      (
        [
          ['a valid request', valid],
          ['an invalid request', invalid],
        ] as const
      ).map(([kind, req]) => {
        const expected = scopes === 'none' ? 401 : scopes.includes(scope) ? req.status : 403;
        return {
          name: `${route}, ${kind}, ${caller} → ${expected}`,
          req,
          headers,
          expected,
          code: expected === 401 ? 'unauthorized' : expected === 403 ? 'forbidden' : req.code,
        };
      }),
    ),
  );

  it.each(cases)('$name', async ({ req, headers, expected, code }) => {
    // When the request is sent with this caller's Authorization header,
    const response = await fetch(base + req.path, req.init(headers));
    const text = await response.text();
    // then the status is the handler's own only for a key holding the route's scope,
    expect(response.status).toBe(expected);
    if (code !== undefined) expect(JSON.parse(text).code).toBe(code);
    if (expected === 401) expect(response.headers.get('www-authenticate')).toBe('Bearer');
    // and no answer echoes a key.
    for (const key of Object.values(keys)) expect(text).not.toContain(key);
  });

  it('refuses a key without the scope before reading the body: no waiting for a body that never comes', async () => {
    // Given a POST /v1/events that announces 1000 bytes and sends none,
    const announceOnly = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = request(
          `${base}/v1/events`,
          { method: 'POST', headers: { 'content-type': 'application/msgpack', 'content-length': '1000', ...headers } },
          (res) => {
            res.resume();
            resolve(res.statusCode!);
            req.destroy();
          },
        );
        req.on('error', reject);
        req.flushHeaders();
      });
    // when no key or a read-only key presents it, the answer comes at once;
    const started = Date.now();
    expect(await announceOnly({})).toBe(401);
    expect(await announceOnly(bearer(keys.read))).toBe(403);
    expect(Date.now() - started).toBeLessThan(bodyTimeoutMs);
    // while the ingest key's request reaches the gateway, which waits for the body until its time limit.
    expect(await announceOnly(bearer(keys.ingest))).toBe(408);
  });

  it('publishes nothing to the stream for a batch refused for its key', async () => {
    // Given the stream's last sequence (messages ever stored; the rater empties the stream as it goes),
    const before = (await streamState(nats.url)).lastSeq;
    // when valid batches arrive without a valid key or with a key lacking `ingest`,
    for (const headers of [
      {},
      { authorization: 'Bearer nope' },
      bearer(newKey()),
      bearer(keys.read),
      bearer(keys.admin),
    ]) {
      const response = await fetch(`${base}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/msgpack', 'idempotency-key': `refused-${newKey()}`, ...headers },
        body: packr.pack([event('refused')]),
      });
      expect([401, 403]).toContain(response.status);
      await response.arrayBuffer();
    }
    // then the stream holds nothing new,
    expect((await streamState(nats.url)).lastSeq).toBe(before);
    // and the same batch with the ingest key is stored.
    const accepted = await fetch(`${base}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/msgpack', ...bearer(keys.ingest) },
      body: packr.pack([event('accepted')]),
    });
    expect(accepted.status).toBe(202);
    expect((await streamState(nats.url)).lastSeq).toBe(before + 1);
  });

  it('keeps /healthz, /readyz and /metrics open for probes and Prometheus', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      const response = await fetch(base + path);
      await response.arrayBuffer();
      expect(response.status, path).toBe(200);
    }
  });

  it('counts refusals made before any handler in drawdown_http_requests_total, by route template and status', async () => {
    const count = async (labels: string): Promise<number> => {
      const text = await (await fetch(`${base}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`drawdown_http_requests_total{${labels}}`));
      return line === undefined ? 0 : Number(line.split(' ').pop());
    };
    // Given the counts so far, when a balance is asked for without a key and with a key lacking `read`,
    const route = 'route="/v1/customers/{}/balance"';
    const before401 = await count(`method="GET",${route},status="401"`);
    const before403 = await count(`method="GET",${route},status="403"`);
    await (await fetch(`${base}/v1/customers/acme/balance`)).arrayBuffer();
    await (await fetch(`${base}/v1/customers/acme/balance`, { headers: bearer(keys.ingest) })).arrayBuffer();
    // then each refusal is counted under the route's template, never its customer id.
    expect(await count(`method="GET",${route},status="401"`)).toBe(before401 + 1);
    expect(await count(`method="GET",${route},status="403"`)).toBe(before403 + 1);
    expect(await (await fetch(`${base}/metrics`)).text()).not.toContain('/v1/customers/acme');
  });

  it('never writes a key to the logs, even when a request with its header is logged', () => {
    // Given every request above was logged at trace level (refusals included),
    expect(logged).toContain('"code":"unauthorized"');
    expect(logged).toContain('"code":"forbidden"');
    // when something logs a request with its Authorization header,
    drawdown.log.info(
      { req: { method: 'POST', url: '/v1/events', headers: { authorization: `Bearer ${keys.all}` } } },
      'request logged',
    );
    drawdown.log.info({ headers: { authorization: `Bearer ${keys.ingest}` } }, 'headers logged');
    expect(logged).toContain('"authorization":"[redacted]"');
    // then no key appears anywhere in the log.
    for (const key of Object.values(keys)) expect(logged).not.toContain(key);
  });

  it('with DRAWDOWN_AUTH=off, logs one warning line and serves without keys', async () => {
    let offLog = '';
    const log = createLogger('info', 'drawdown-auth-off', { write: (line: string) => void (offLog += line) });
    const open = await startDrawdown(
      testConfig({ natsUrl: nats.url, auth: 'off' }),
      { ingest: true, rater: false, settlement: false },
      { log },
    );
    try {
      const response = await fetch(`${open.url}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/msgpack' },
        body: packr.pack([event('open')]),
      });
      expect(response.status).toBe(202);
      const warnings = offLog.split('\n').filter((line) => line.includes('"level":40'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('API keys are off (DRAWDOWN_AUTH=off)');
    } finally {
      await open.stop();
    }
  });

  it('refuses to start `drawdown ingest` with auth required and no keys, naming both settings', () => {
    const result = runCli(['ingest'], {
      DRAWDOWN_NATS_URL: nats.url,
      DRAWDOWN_CATALOG: catalogPath,
      DRAWDOWN_AUTH: '',
      DRAWDOWN_API_KEYS: '',
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('DRAWDOWN_API_KEYS is required while DRAWDOWN_AUTH=required');
    expect(result.stderr).toContain('DRAWDOWN_AUTH=off');
  });

  it('refuses a key pasted into DRAWDOWN_API_KEYS without printing it', () => {
    const result = runCli(['settlement'], {
      DRAWDOWN_CLICKHOUSE_URL: `chdb:${dir.path}/unused`,
      DRAWDOWN_CATALOG: catalogPath,
      DRAWDOWN_AUTH: 'required',
      DRAWDOWN_API_KEYS: keys.all,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('DRAWDOWN_API_KEYS is not valid JSON: it looks like a key itself');
    expect(result.stdout + result.stderr).not.toContain(keys.all);
  });
});
