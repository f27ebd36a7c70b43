/**
 * Request ids (docs/metrics.md "Logs"): every HTTP response carries an
 * X-Request-Id — the client's own when it is sane, a fresh one otherwise —
 * problem+json bodies repeat it as request_id, and the log lines about the
 * request carry it as requestId, so a pasted error finds its log lines.
 * Against a real nats-server and drawdown's gateway, with keys on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey, newKey } from '../shared/auth.js';
import { createLogger } from '../shared/log.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { packr, startNats, tempDir, testConfig } from './harness.js';

describe('request ids', () => {
  const dir = tempDir('request-id');
  const key = newKey();
  let nats: NatsServerProcess;
  let drawdown: Running;
  let logged = '';
  const logLines = (): Record<string, unknown>[] =>
    logged
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  beforeAll(async () => {
    nats = await startNats(dir.path);
    const log = createLogger('debug', 'drawdown-request-id-test', { write: (line: string) => void (logged += line) });
    const apiKeys = JSON.stringify([{ id: 'all', sha256: hashKey(key), scopes: ['ingest', 'read'] }]);
    drawdown = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: `chdb:${dir.path}/chdb`, auth: 'required', apiKeys }),
      { ingest: true, rater: false, settlement: true },
      { log },
    );
  });

  afterAll(async () => {
    await drawdown?.stop();
    await nats?.stop();
    dir.remove();
  });

  function post(body: unknown, headers: Record<string, string>): Promise<Response> {
    return fetch(`${drawdown.url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/msgpack', authorization: `Bearer ${key}`, ...headers },
      body: packr.pack(body),
    });
  }

  it('given a client X-Request-Id, when its batch is refused, then the header, the problem body and the log lines carry that id', async () => {
    const response = await post([{ customer: 'acme' }], { 'x-request-id': 'client-req-42' });
    expect(response.status).toBe(422);
    expect(response.headers.get('x-request-id')).toBe('client-req-42');
    const problem = (await response.json()) as Record<string, unknown>;
    expect(problem.code).toBe('event_invalid');
    expect(problem.request_id).toBe('client-req-42');
    const lines = logLines().filter((line) => line.requestId === 'client-req-42');
    expect(lines.map((line) => line.msg)).toEqual(expect.arrayContaining(['request rejected', 'request completed']));
    expect(lines.find((line) => line.msg === 'request completed')).toMatchObject({
      method: 'POST',
      path: '/v1/events',
      status: 422,
    });
  });

  it('given no X-Request-Id, when a batch is accepted, then the response has a generated id that its log line carries', async () => {
    const response = await post(
      [{ id: 'e1', customer: 'acme', meter: 'gpt-4o.input_tokens', timestamp: Date.now(), quantity: 1 }],
      {},
    );
    expect(response.status).toBe(202);
    const id = response.headers.get('x-request-id');
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const lines = logLines().filter((line) => line.requestId === id);
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'request completed', status: response.status }));
  });

  it('given an X-Request-Id that is too long or has spaces, when sent, then drawdown replaces it with its own', async () => {
    for (const bad of ['x'.repeat(129), 'has space', 'quote"d']) {
      const response = await post([], { 'x-request-id': bad });
      const id = response.headers.get('x-request-id');
      expect(id).not.toBe(bad);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it('given a refused key, when the request is logged, then the key is nowhere in the logs but the request id is', async () => {
    const secret = newKey();
    const response = await post([], { authorization: `Bearer ${secret}`, 'x-request-id': 'bad-key-1' });
    expect(response.status).toBe(401);
    expect(((await response.json()) as Record<string, unknown>).request_id).toBe('bad-key-1');
    expect(logLines().some((line) => line.requestId === 'bad-key-1')).toBe(true);
    expect(logged).not.toContain(secret);
    expect(logged).not.toContain(key);
  });

  it('given the default level (info), when requests are refused, then each refusal is exactly one info line with its request id, status, code, method and path without the query', async () => {
    const log = drawdown.log;
    log.level = 'info';
    try {
      const refusals = [
        () => post([{ customer: 'acme' }], {}),
        () => post([], { authorization: 'Bearer not-a-key' }),
        () =>
          fetch(`${drawdown.url}/v1/nothing-here?api_key=in-the-query`, {
            headers: { authorization: `Bearer ${key}` },
          }),
        () =>
          fetch(`${drawdown.url}/v1/customers/acme%E0%A4%A/balance`, { headers: { authorization: `Bearer ${key}` } }),
      ];
      const expected = [
        { status: 422, code: 'event_invalid', method: 'POST', path: '/v1/events' },
        { status: 401, code: 'unauthorized', method: 'POST', path: '/v1/events' },
        { status: 404, code: 'not_found', method: 'GET', path: '/v1/nothing-here' },
        { status: 400, code: 'request_invalid', method: 'GET', path: '/v1/customers/acme%E0%A4%A/balance' },
      ];
      for (const [i, refuse] of refusals.entries()) {
        const response = await refuse();
        const problem = (await response.json()) as Record<string, unknown>;
        const id = response.headers.get('x-request-id');
        expect(problem.request_id).toBe(id);
        const lines = logLines().filter((line) => JSON.stringify(line).includes(id!));
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatchObject({ level: 30, requestId: id, msg: 'request rejected', ...expected[i] });
      }
      expect(logged).not.toContain('in-the-query');
    } finally {
      log.level = 'debug';
    }
  });

  it('given a broken percent-escape in a customer id, when requested, then the answer is a 400 problem with its request id, not a dropped connection', async () => {
    const response = await fetch(`${drawdown.url}/v1/customers/acme%E0%A4%A/balance`, {
      headers: { authorization: `Bearer ${key}` },
    });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as Record<string, unknown>;
    expect(problem).toMatchObject({ code: 'request_invalid', request_id: response.headers.get('x-request-id') });
  });
});
