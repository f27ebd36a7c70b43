/**
 * docs/openapi.yaml against the code: every route the processes serve
 * (method, path, scope) is documented, every documented operation exists,
 * and error codes match shared/errors.ts. Routes come from the route
 * factories themselves, and a scan of the source makes sure no route sits in
 * a factory this test does not know — so a new route fails here until it is
 * documented. Then a running drawdown (real nats-server, chDB, rater, keys
 * on) is asked every documented operation: without a key each is 401 (the
 * route exists and is protected; the router answers 404/405 otherwise), with
 * a key of another scope 403, with the documented scope neither. Last, every
 * documented operation is driven as a client would (holds; a catalog built
 * through the API, dry run and for real; purchases, JSON events and
 * CloudEvents, a settlement run and its history, balance, ledger,
 * statements, usage; health and metrics), with documented errors where
 * cheap. Each exchange is checked with ajv against the document: the body
 * sent is one its request schema accepts, the status is documented, the
 * Content-Type is a media type documented for it, and the body validates —
 * objects closed on both sides, so a member the document does not name
 * fails. An operation no call answered with a 2xx fails the last check.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { hashKey, newKey, scopes, type Scope } from '../shared/auth.js';
import { errorCodes } from '../shared/errors.js';
import type { Route } from '../shared/http.js';
import { ingestRoutes } from '../ingest/gateway.js';
import { settlementRoutes } from '../settlement/api.js';
import { holdRoutes } from '../settlement/holds-api.js';
import { noticeRoutes } from '../settlement/notices/notices-api.js';
import { catalogRoutes } from '../catalog/api.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { packr, repoRoot, startNats, tempDir, testConfig, waitForStreamDrained } from './harness.js';

interface Operation {
  method: string;
  template: string;
  scope: Scope | 'public';
}

const doc = parse(readFileSync(join(repoRoot, 'docs', 'openapi.yaml'), 'utf8')) as {
  openapi: string;
  paths: Record<
    string,
    Record<
      string,
      { security?: Record<string, string[]>[]; parameters?: { $ref?: string; name?: string; in?: string }[] }
    >
  >;
  components: { schemas: { ErrorCode: { enum: string[] } }; parameters: Record<string, { name: string; in: string }> };
};
const methods = ['get', 'put', 'post', 'delete', 'patch'];

const documented: Operation[] = Object.entries(doc.paths).flatMap(([template, item]) =>
  Object.entries(item)
    .filter(([method]) => methods.includes(method))
    .map(([method, op]) => {
      const required = op.security ?? [{ bearer: [] }];
      const scope = required.length === 0 ? 'public' : (required[0]!.bearer![0] as Scope);
      return { method: method.toUpperCase(), template, scope };
    }),
);

/** A path a documented template names, with sample values for its parameters. */
function concrete(template: string): string {
  return template
    .replace(/\{customer\}/g, 'acme')
    .replace(/\{revision\}/g, '1')
    .replace(/\{[a-z_]+\}/g, 'x1');
}

type Schema = Record<string, unknown>;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const schemaRef = '#/components/schemas/';
const openSuffix = '__open';

/**
 * A copy of the document in which every object schema that lists
 * `properties` (or joins parts with `allOf`) and says nothing of further
 * members refuses them (`unevaluatedProperties: false`), so a member the code
 * sends or takes that the document does not name fails validation. The parts
 * of an `allOf` stay open — the whole is closed, seeing every part's members
 * — so a named schema referenced as a part points at its open twin
 * (`Name__open`). Schema `$ref`s become absolute (`openapi#/…`) so an inline
 * schema compiles on its own.
 */
function closeSchemas(node: unknown, part = false): unknown {
  if (Array.isArray(node)) return node.map((item) => closeSchemas(item));
  if (!isRecord(node)) return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'allOf' && Array.isArray(value)) out.allOf = value.map((item) => closeSchemas(item, true));
    else if (key === '$ref' && typeof value === 'string' && value.startsWith(schemaRef))
      out.$ref = `openapi${value}${part ? openSuffix : ''}`;
    else if (key === 'properties' && isRecord(value))
      out.properties = Object.fromEntries(Object.entries(value).map(([name, member]) => [name, closeSchemas(member)]));
    else out[key] = closeSchemas(value);
  }
  const closable = 'properties' in node || 'allOf' in node;
  if (closable && !part && !('additionalProperties' in node) && !('unevaluatedProperties' in node))
    out.unevaluatedProperties = false;
  return out;
}

const closedDoc = closeSchemas(doc) as typeof doc & { components: { schemas: Record<string, Schema> } };
for (const [name, schema] of Object.entries(doc.components.schemas as Record<string, Schema>))
  closedDoc.components.schemas[`${name}${openSuffix}`] = closeSchemas(schema, true) as Schema;

// OpenAPI 3.1 schemas are JSON Schema 2020-12; `x-` keywords and `example` are annotations.
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addFormat(
  'date-time',
  (text: string) =>
    /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(text) && !Number.isNaN(Date.parse(text)),
);
ajv.addFormat('uri', (text: string) => URL.canParse(text));
ajv.addSchema({ $id: 'openapi', components: closedDoc.components });

/** The node a local `$ref` ('#/components/…') points at, in the closed document. */
function resolveRef(ref: string): Schema {
  const node = ref
    .replace(/^(openapi)?#\//, '')
    .split('/')
    .reduce<unknown>((at, key) => (at as Record<string, unknown> | undefined)?.[key], closedDoc);
  if (node === undefined) throw new Error(`unresolved $ref ${ref}`);
  return node as Schema;
}

/** Every way `value` breaks `schema` (a node of the closed document), as `path message`; none when it validates. */
function schemaProblems(schema: Schema, value: unknown): string[] {
  const validate = ajv.compile(schema);
  return validate(value)
    ? []
    : (validate.errors ?? []).map((e) => `${e.instancePath || '$'} ${e.message} ${JSON.stringify(e.params)}`);
}

/** A named schema of the document, closed. */
function named(name: string): Schema {
  return { $ref: `openapi${schemaRef}${name}` };
}

interface Documented {
  /** Media type → schema; empty when the answer has no body. */
  content: Record<string, Schema | undefined>;
}

/** What the document says one operation answers with one status. */
function documentedAnswer(method: string, template: string, status: number): Documented {
  const operation = closedDoc.paths[template]?.[method.toLowerCase()] as
    { responses?: Record<string, Schema> } | undefined;
  let response = operation?.responses?.[String(status)];
  if (response === undefined) throw new Error(`${method} ${template} documents no ${status} answer`);
  if (typeof response.$ref === 'string') response = resolveRef(response.$ref);
  const content = (response.content ?? {}) as Record<string, { schema?: Schema }>;
  return { content: Object.fromEntries(Object.entries(content).map(([type, media]) => [type, media.schema])) };
}

/** The schema of an operation's request body for one media type. */
function documentedRequest(method: string, template: string, type: string): Schema {
  const operation = closedDoc.paths[template]?.[method.toLowerCase()] as { requestBody?: Schema } | undefined;
  let body = operation?.requestBody;
  if (body === undefined) throw new Error(`${method} ${template} documents no request body`);
  if (typeof body.$ref === 'string') body = resolveRef(body.$ref);
  const schema = (body.content as Record<string, { schema?: Schema }> | undefined)?.[type]?.schema;
  if (schema === undefined) throw new Error(`${method} ${template} documents no ${type} request body`);
  return schema;
}

// The route factories need their dependencies only when a handler runs; listing routes touches none.
const public3: Route[] = ['/healthz', '/readyz', '/metrics'].map((path) => ({
  method: 'GET',
  path: new RegExp(`^${path}$`),
  scope: 'public',
  handler: async () => {},
}));
const codeRoutes: Route[] = [
  ...ingestRoutes({} as never),
  ...settlementRoutes({} as never),
  ...holdRoutes({} as never),
  ...noticeRoutes({} as never),
  ...catalogRoutes({ auth: 'off' } as never),
  ...public3,
];

/** Route literals in the source (`{ method: 'GET', path: … }`), outside tests, per file. */
function routeLiteralsInSource(): Map<string, number> {
  const counts = new Map<string, number>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts') && !name.endsWith('.test.ts') && !path.includes(`${join(repoRoot, 'test')}`)) {
        const n = (readFileSync(path, 'utf8').match(/method: '[A-Z]+',\s*path:/g) ?? []).length;
        if (n > 0) counts.set(relative(repoRoot, path), n);
      }
    }
  };
  walk(repoRoot);
  return counts;
}

describe('docs/openapi.yaml', () => {
  it('is OpenAPI 3.1 and every $ref in it resolves', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
    const text = readFileSync(join(repoRoot, 'docs', 'openapi.yaml'), 'utf8');
    const unresolved = [...text.matchAll(/\$ref: '#\/([^']+)'/g)]
      .map(([, pointer]) => pointer!)
      .filter(
        (pointer) =>
          pointer
            .split('/')
            .reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], doc) === undefined,
      );
    expect(unresolved).toEqual([]);
  });

  it('declares every path parameter of every template', () => {
    for (const { method, template } of documented) {
      const op = doc.paths[template]![method.toLowerCase()]!;
      const declared = (op.parameters ?? [])
        .map((p) => (p.$ref ? doc.components.parameters[p.$ref.split('/').pop()!]! : p))
        .filter((p) => p.in === 'path')
        .map((p) => p.name);
      expect({ method, template, params: declared.sort() }).toEqual({
        method,
        template,
        params: [...template.matchAll(/\{([a-z_]+)\}/g)].map(([, n]) => n).sort(),
      });
    }
  });

  it('given the route factories, when the source is scanned for route literals, then every route is collected here', () => {
    const inSource = [...routeLiteralsInSource().values()].reduce((a, b) => a + b, 0);
    // If this fails, a route was added outside ingestRoutes, settlementRoutes, holdRoutes, catalogRoutes and
    // startService: add its factory above.
    expect({ routesInSource: inSource, files: [...routeLiteralsInSource().keys()].sort() }).toEqual({
      routesInSource: codeRoutes.length,
      files: [
        'catalog/api.ts',
        'ingest/gateway.ts',
        'settlement/api.ts',
        'settlement/holds-api.ts',
        'settlement/notices/notices-api.ts',
        'shared/service.ts',
      ],
    });
  });

  it('documents every route the code serves, with its scope', () => {
    for (const route of codeRoutes) {
      const match = documented.filter((op) => op.method === route.method && route.path.test(concrete(op.template)));
      expect({
        route: `${route.method} ${route.path.source}`,
        documentedAs: match.map((op) => `${op.method} ${op.template} [${op.scope}]`),
      }).toEqual({
        route: `${route.method} ${route.path.source}`,
        documentedAs: [
          `${match[0]?.method ?? route.method} ${match[0]?.template ?? '(undocumented)'} [${route.scope}]`,
        ],
      });
    }
  });

  it('documents only operations the code serves', () => {
    for (const op of documented) {
      const served = codeRoutes.some((route) => route.method === op.method && route.path.test(concrete(op.template)));
      expect({ ...op, served }).toEqual({ ...op, served: true });
    }
  });

  it('given the closed document, when an answer carries a member its schema does not name, then ajv refuses it — also through allOf', () => {
    const hold = {
      id: 'YQ.Yg.AAAAAAAAAAAAAAAA',
      customer: 'a',
      unit: 'credits',
      status: 'open',
      amount: '1',
      remaining: '1',
      consumed: '0',
      created_at: '2026-01-01T00:00:00Z',
      expires_at: null,
      closed_at: null,
      metadata: null,
      spent: '0',
      reserved: '1',
    };
    expect(schemaProblems(named('Hold'), hold)).toEqual([]);
    expect(schemaProblems(named('Hold'), { ...hold, extra: 1 }).join()).toContain('unevaluated properties');
    expect(schemaProblems(named('Hold'), { ...hold, created_at: 'yesterday' }).join()).toContain('date-time');
    const refusal = {
      type: 'https://drawdown.dev/errors/insufficient_credits',
      title: 'Insufficient credits',
      status: 402,
      code: 'insufficient_credits',
      detail: 'no',
      customer: 'a',
      unit: 'credits',
      amount: '2',
      available: '1',
      allowance: '0',
    };
    expect(schemaProblems(named('InsufficientCredits'), refusal)).toEqual([]);
    expect(schemaProblems(named('InsufficientCredits'), { ...refusal, held: '1' })).not.toEqual([]);
    // The events 202 names `parts`; a member it does not name fails.
    const accepted = documentedAnswer('POST', '/v1/events', 202).content['application/json']!;
    expect(schemaProblems(accepted, { accepted: 1, duplicate: false, sequence: 3, parts: 1 })).toEqual([]);
    expect(schemaProblems(accepted, { accepted: 1, duplicate: false, partitions: 1 })).not.toEqual([]);
    // Requests too: a body member the request schema does not name fails.
    const purchase = documentedRequest('POST', '/v1/customers/{customer}/purchases', 'application/json');
    expect(schemaProblems(purchase, { package: 'credits-100' })).toEqual([]);
    expect(schemaProblems(purchase, { package: 'credits-100', pakage: 'x' })).not.toEqual([]);
  });

  it('lists exactly the error codes of shared/errors.ts', () => {
    expect([...doc.components.schemas.ErrorCode.enum].sort()).toEqual(Object.keys(errorCodes).sort());
  });
});

describe('documented operations on a running drawdown', () => {
  const dir = tempDir('openapi');
  const keys = Object.fromEntries(scopes.map((scope) => [scope, newKey()])) as Record<Scope, string>;
  let nats: NatsServerProcess;
  let drawdown: Running;

  beforeAll(async () => {
    nats = await startNats(dir.path);
    const apiKeys = JSON.stringify(
      scopes.map((scope) => ({ id: `only-${scope}`, sha256: hashKey(keys[scope]), scopes: [scope] })),
    );
    drawdown = await startDrawdown(
      testConfig({
        natsUrl: nats.url,
        clickhouseUrl: `chdb:${dir.path}/chdb`,
        auth: 'required',
        apiKeys,
        // Catalog writes reach the gateway (CloudEvents mappings) at its next refresh.
        catalogRefreshMs: 200,
      }),
      { ingest: true, rater: true, settlement: true },
    );
  });

  afterAll(async () => {
    await drawdown?.stop();
    await nats?.stop();
    dir.remove();
  });

  /** A request that changes nothing: writes get an empty JSON array, which no write handler stores anything for. */
  async function call(op: Operation, key: string | undefined): Promise<{ status: number; code: string | undefined }> {
    const write = op.method !== 'GET';
    const response = await fetch(`${drawdown.url}${concrete(op.template)}`, {
      method: op.method,
      headers: {
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...(write ? { 'content-type': 'application/json' } : {}),
      },
      ...(write ? { body: '[]' } : {}),
    });
    const text = await response.text();
    const code = response.headers.get('content-type')?.startsWith('application/problem+json')
      ? (JSON.parse(text) as { code: string }).code
      : undefined;
    return { status: response.status, code };
  }

  it('given no key, when each documented operation is called, then protected ones are 401 and public ones answer — none is unrouted', async () => {
    for (const op of documented) {
      const { status, code } = await call(op, undefined);
      if (op.scope === 'public')
        expect({ ...op, routed: code !== 'not_found' && code !== 'method_not_allowed' && status < 500 }).toEqual({
          ...op,
          routed: true,
        });
      else expect({ ...op, status, code }).toEqual({ ...op, status: 401, code: 'unauthorized' });
    }
  });

  it('given a key of each scope, when each protected operation is called, then only its documented scope gets past the key check', async () => {
    for (const op of documented.filter((o) => o.scope !== 'public')) {
      for (const scope of scopes) {
        const { status, code } = await call(op, keys[scope]);
        const refused = status === 401 || status === 403;
        const unrouted =
          code === 'method_not_allowed' || (code === 'not_found' && status === 404 && op.method !== 'GET');
        expect({ ...op, key: scope, refused, unrouted }).toEqual({
          ...op,
          key: scope,
          refused: scope !== op.scope,
          unrouted: false,
        });
      }
    }
  });

  /** `METHOD template` of every documented operation a call answered with a 2xx. */
  const exercised = new Set<string>();

  /**
   * Calls the API as a client would and checks the exchange against docs/openapi.yaml: a body sent for a 2xx is
   * one the operation's request schema accepts; the status is `status` and one the operation documents; the
   * Content-Type is a media type documented for that status (none for an answer without a body); the body
   * validates against that media type's schema, objects closed.
   */
  async function documentedCall(
    method: string,
    template: string,
    path: string,
    scope: Scope | 'public',
    options: {
      body?: unknown;
      type?: string;
      encode?: (body: unknown) => Uint8Array;
      headers?: Record<string, string>;
      status: number;
    },
  ): Promise<{ body: Record<string, unknown>; headers: Headers; text: string }> {
    const type = options.type ?? 'application/json';
    if (options.body !== undefined && options.status < 300)
      expect({
        method,
        path,
        request: schemaProblems(documentedRequest(method, template, type), options.body),
      }).toEqual({ method, path, request: [] });
    const response = await fetch(`${drawdown.url}${path}`, {
      method,
      headers: {
        ...(scope === 'public' ? {} : { authorization: `Bearer ${keys[scope]}` }),
        ...(options.body === undefined ? {} : { 'content-type': type }),
        ...options.headers,
      },
      ...(options.body === undefined ? {} : { body: options.encode?.(options.body) ?? JSON.stringify(options.body) }),
    });
    const text = await response.text();
    const received = response.headers.get('content-type')?.split(';')[0]?.trim() ?? null;
    const json = received !== null && /[/+]json$/.test(received);
    const body = (json ? JSON.parse(text) : {}) as Record<string, unknown>;
    expect({ method, path, status: response.status, code: body.code }).toMatchObject({
      method,
      path,
      status: options.status,
    });
    const documented = documentedAnswer(method, template, options.status);
    const types = Object.keys(documented.content);
    expect({ method, path, type: received }).toEqual({
      method,
      path,
      type: types.length === 0 ? null : types.includes(received ?? '') ? received : types,
    });
    if (types.length === 0) expect({ method, path, body: text }).toEqual({ method, path, body: '' });
    const schema = documented.content[received ?? ''];
    if (schema !== undefined)
      expect({ method, path, problems: schemaProblems(schema, json ? body : text) }).toEqual({
        method,
        path,
        problems: [],
      });
    if (response.status >= 200 && response.status < 300) exercised.add(`${method} ${template}`);
    return { body, headers: response.headers, text };
  }

  it('given credits bought, when a hold is reserved, replayed, refused, listed, checked, spent and released, then every answer matches its documented schema', async () => {
    const customer = 'openapi-holds';
    const holds = '/v1/customers/{customer}/holds';
    const bought = await documentedCall(
      'POST',
      '/v1/customers/{customer}/purchases',
      `/v1/customers/${customer}/purchases`,
      'admin',
      {
        body: { package: 'credits-100' },
        headers: { 'idempotency-key': 'openapi-holds-1' },
        status: 201,
      },
    );
    expect(bought.body.created).toBe(true);

    const reserve = { unit: 'credits', amount: '30', ttl_ms: 60_000, metadata: { request: 'r-1' } };
    const reserveKey = { 'idempotency-key': 'openapi-hold-1' };
    const first = await documentedCall('POST', holds, `/v1/customers/${customer}/holds`, 'ingest', {
      body: reserve,
      headers: reserveKey,
      status: 201,
    });
    const hold = first.body.hold as { id: string; status: string; reserved: string; metadata: unknown };
    expect({
      created: first.body.created,
      available: first.body.available,
      replayed: first.headers.get('idempotent-replayed'),
    }).toEqual({
      created: true,
      available: '70',
      replayed: null,
    });
    expect(hold).toMatchObject({ status: 'open', reserved: '30', metadata: { request: 'r-1' } });
    const replay = await documentedCall('POST', holds, `/v1/customers/${customer}/holds`, 'ingest', {
      body: reserve,
      headers: reserveKey,
      status: 201,
    });
    expect({
      created: replay.body.created,
      id: (replay.body.hold as { id: string }).id,
      replayed: replay.headers.get('idempotent-replayed'),
    }).toEqual({
      created: false,
      id: hold.id,
      replayed: 'true',
    });
    // The documented request body admits what the route admits.
    expect(schemaProblems(named('HoldReserve'), reserve)).toEqual([]);

    const refused = await documentedCall('POST', holds, `/v1/customers/${customer}/holds`, 'ingest', {
      body: { unit: 'credits', amount: 71 },
      headers: { 'idempotency-key': 'openapi-hold-2' },
      status: 402,
    });
    expect(refused.body).toMatchObject({
      code: 'insufficient_credits',
      customer,
      unit: 'credits',
      amount: '71',
      available: '70',
      allowance: '0',
    });
    const reused = await documentedCall('POST', holds, `/v1/customers/${customer}/holds`, 'ingest', {
      body: { ...reserve, amount: '31' },
      headers: reserveKey,
      status: 409,
    });
    expect(reused.body.code).toBe('idempotency_key_reused');

    const listed = await documentedCall('GET', holds, `/v1/customers/${customer}/holds?unit=credits`, 'read', {
      status: 200,
    });
    expect(listed.body).toMatchObject({ customer, held: { credits: '30' }, holds: [{ id: hold.id }] });
    await documentedCall('GET', holds, `/v1/customers/${customer}/holds`, 'read', { status: 200 });

    const entitlement = '/v1/customers/{customer}/entitlement';
    const allowed = await documentedCall(
      'GET',
      entitlement,
      `/v1/customers/${customer}/entitlement?unit=credits&amount=70`,
      'read',
      { status: 200 },
    );
    expect(allowed.body).toMatchObject({ allowed: true, available: '70', held: '30', allowance: '0', amount: '70' });
    const tooMuch = await documentedCall(
      'GET',
      entitlement,
      `/v1/customers/${customer}/entitlement?unit=credits&amount=70.000000001`,
      'read',
      { status: 200 },
    );
    expect(tooMuch.body.allowed).toBe(false);
    const noUnit = await documentedCall('GET', entitlement, `/v1/customers/${customer}/entitlement?amount=1`, 'read', {
      status: 400,
    });
    expect(noUnit.body.code).toBe('request_invalid');

    const balance = await documentedCall(
      'GET',
      '/v1/customers/{customer}/balance',
      `/v1/customers/${customer}/balance`,
      'read',
      { status: 200 },
    );
    expect(balance.body.units).toEqual([
      expect.objectContaining({ unit: 'credits', settled: '100', held: '30', available: '70' }),
    ]);

    const got = await documentedCall('GET', '/v1/holds/{hold}', `/v1/holds/${hold.id}`, 'read', { status: 200 });
    expect(got.body).toMatchObject({ id: hold.id, status: 'open', spent: '0', reserved: '30' });

    // Usage naming the hold: the documented event (additionalProperties: false) has `hold`, and the gateway takes it.
    const event = {
      id: 'openapi-hold-usage-1',
      customer,
      meter: 'images',
      quantity: 2,
      timestamp: Date.now(),
      hold: hold.id,
      dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
    };
    expect(schemaProblems(named('Event'), event)).toEqual([]);
    await documentedCall('POST', '/v1/events', '/v1/events', 'ingest', { body: [event], status: 202 });

    const release = '/v1/holds/{hold}/release';
    const released = await documentedCall('POST', release, `/v1/holds/${hold.id}/release`, 'ingest', { status: 200 });
    expect(released.body).toMatchObject({ released: true, hold: { id: hold.id, status: 'releasing' } });
    const again = await documentedCall('POST', release, `/v1/holds/${hold.id}/release`, 'ingest', { status: 200 });
    expect(again.body.released).toBe(false);
    const now = await documentedCall('POST', release, `/v1/holds/${hold.id}/release`, 'ingest', {
      status: 200,
      body: { wait_for_usage: false },
    });
    expect(now.body).toMatchObject({ released: true, hold: { id: hold.id, status: 'released', reserved: '0' } });
    const closed = await documentedCall('GET', '/v1/holds/{hold}', `/v1/holds/${hold.id}`, 'read', { status: 200 });
    expect(closed.body).toMatchObject({ status: 'released', expires_at: null, metadata: null, reserved: '0' });

    const unknown = `${hold.id.slice(0, hold.id.lastIndexOf('.'))}.AAAAAAAAAAAAAAAA`;
    const missing = await documentedCall('GET', '/v1/holds/{hold}', `/v1/holds/${unknown}`, 'read', { status: 404 });
    expect(missing.body.code).toBe('hold_not_found');
    const notReleased = await documentedCall('POST', release, `/v1/holds/${unknown}/release`, 'ingest', {
      status: 404,
    });
    expect(notReleased.body.code).toBe('hold_not_found');
  });

  it('given a catalog built through the API, usage and a settlement run, when every documented operation is called as a client would, then each answer is documented', async () => {
    const customer = 'openapi-live';
    // Whole minutes, well inside the lateness window and wholly before the run's end.
    const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 30 * 60_000;
    const at = new Date(atMs).toISOString();
    const untilIso = new Date(atMs + 20 * 60_000).toISOString();
    // Two whole monthly terms end before the run: the statements have closed terms.
    const subscriptionStart = new Date(atMs - 70 * 86_400_000).toISOString();

    // Catalog: read it, replace it (dry run), and write one entity of each kind — dry run first, then for real.
    const current = await documentedCall('GET', '/v1/catalog', '/v1/catalog', 'admin', { status: 200 });
    const document = current.body.document as { rate_card: { versions: { rows: unknown[] }[] } };
    const asIs = await documentedCall('PUT', '/v1/catalog', '/v1/catalog?dry_run=true', 'admin', {
      body: document,
      headers: { 'if-match': current.headers.get('etag')! },
      status: 200,
    });
    expect(asIs.body).toMatchObject({ changed: false, dry_run: true });
    const writes: { method: string; template: string; path: string; body: unknown }[] = [
      {
        method: 'PUT',
        template: '/v1/catalog/credit-units/{id}',
        path: '/v1/catalog/credit-units/openapi-minutes',
        body: { id: 'openapi-minutes', name: 'Minutes', fiat: { currency: 'USD', value: '0.10' }, precision: 0 },
      },
      {
        method: 'PUT',
        template: '/v1/catalog/meters/{id}',
        path: '/v1/catalog/meters/openapi.prompt',
        body: {
          key: 'openapi.prompt',
          name: 'Prompt tokens',
          unit: { singular: 'token', plural: 'tokens' },
          aggregation: 'sum',
          dimensions: ['model'],
          event_type: 'openapi.prompt',
          value_property: '$.tokens',
          group_by: { model: '$.model' },
        },
      },
      {
        method: 'POST',
        template: '/v1/catalog/rate-card/versions',
        path: '/v1/catalog/rate-card/versions',
        body: {
          version: 'openapi-1',
          effective_from: new Date(atMs - 3_600_000).toISOString(),
          // A version replaces the rows before it: the earlier rows, and a price for the small model only.
          rows: [
            ...document.rate_card.versions.at(-1)!.rows,
            {
              meter: 'openapi.prompt',
              match: { model: 'small' },
              unit: 'credits',
              price: { model: 'unit', amount: '0.5' },
            },
          ],
        },
      },
      {
        method: 'PUT',
        template: '/v1/catalog/packages/{id}',
        path: '/v1/catalog/packages/openapi-50',
        body: {
          id: 'openapi-50',
          name: '50 credits',
          price: { currency: 'USD', amount: '5.00' },
          credits: '50',
          unit: 'credits',
        },
      },
      {
        method: 'POST',
        template: '/v1/catalog/plans/{id}/versions',
        path: '/v1/catalog/plans/openapi-pro/versions',
        body: {
          name: 'OpenAPI Pro',
          billing: 'monthly',
          grants: [
            {
              id: 'monthly',
              unit: 'credits',
              quantity: '20',
              frequency: 'monthly',
              rollover: { kind: 'capped', percent: '50', maximum: '10' },
            },
          ],
          overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.02' } },
        },
      },
      {
        method: 'PUT',
        template: '/v1/catalog/add-ons/{id}',
        path: '/v1/catalog/add-ons/openapi-5',
        body: {
          id: 'openapi-5',
          name: '+5 credits / month',
          billing: 'monthly',
          versions: [
            { version: 1, grant: { unit: 'credits', quantity: '5', frequency: 'monthly', rollover: { kind: 'none' } } },
          ],
        },
      },
      {
        method: 'PUT',
        template: '/v1/catalog/charges/{id}',
        path: '/v1/catalog/charges/openapi-bonus',
        body: { id: 'openapi-bonus', grant: { unit: 'credits', quantity: '2', expires_after: 'P60D' } },
      },
      {
        method: 'PUT',
        template: '/v1/catalog/subscriptions/{id}',
        path: '/v1/catalog/subscriptions/openapi-sub',
        body: {
          id: 'openapi-sub',
          customer,
          plan: 'openapi-pro',
          plan_version: 1,
          start: subscriptionStart,
          add_ons: [{ add_on: 'openapi-5', quantity: 2 }],
          charges: [{ id: 'bonus', charge: 'openapi-bonus', at: subscriptionStart }],
        },
      },
    ];
    for (const { method, template, path, body } of writes) {
      const dry = await documentedCall(method, template, `${path}?dry_run=true`, 'admin', { body, status: 200 });
      expect({ path, dry_run: dry.body.dry_run, changed: dry.body.changed }).toEqual({
        path,
        dry_run: true,
        changed: true,
      });
      const done = await documentedCall(method, template, path, 'admin', { body, status: 200 });
      expect({ path, dry_run: done.body.dry_run, changed: done.body.changed }).toEqual({
        path,
        dry_run: false,
        changed: true,
      });
    }
    const renamed = await documentedCall(
      'PUT',
      '/v1/catalog/packages/{id}',
      '/v1/catalog/packages/openapi-50',
      'admin',
      {
        body: { ...(writes[3]!.body as object), name: '50 credits (spring)' },
        status: 200,
      },
    );
    expect(renamed.body.changes).toEqual([
      {
        kind: 'package',
        id: 'openapi-50',
        change: 'changed',
        fields: [{ path: 'name', before: '50 credits', after: '50 credits (spring)' }],
      },
    ]);
    const misspelt = await documentedCall(
      'PUT',
      '/v1/catalog/meters/{id}',
      '/v1/catalog/meters/openapi.typo',
      'admin',
      {
        body: { key: 'openapi.typo', agregation: 'max' },
        status: 422,
      },
    );
    expect(misspelt.body.errors).toEqual([expect.objectContaining({ field: 'agregation' })]);
    // A metered add-on is an overage price: a grant on it is refused, naming the field.
    const metered = await documentedCall(
      'PUT',
      '/v1/catalog/add-ons/{id}',
      '/v1/catalog/add-ons/openapi-metered',
      'admin',
      {
        body: {
          kind: 'metered',
          billing: 'monthly',
          overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.02' } },
          versions: [{ version: 1, grant: { unit: 'credits', quantity: '5', frequency: 'monthly' } }],
        },
        status: 422,
      },
    );
    expect(metered.body.errors).toEqual([expect.objectContaining({ field: 'versions[0].grant', code: 'metered' })]);
    const plan = await documentedCall(
      'GET',
      '/v1/catalog/plans/{id}/versions',
      '/v1/catalog/plans/openapi-pro/versions',
      'admin',
      { status: 200 },
    );
    expect(plan.body).toMatchObject({ plan: 'openapi-pro', name: 'OpenAPI Pro', versions: [{ version: 1 }] });
    await documentedCall('GET', '/v1/catalog/plans/{id}/versions', '/v1/catalog/plans/no-such-plan/versions', 'admin', {
      status: 404,
    });
    const revisions = await documentedCall('GET', '/v1/catalog/revisions', '/v1/catalog/revisions?limit=2', 'admin', {
      status: 200,
    });
    const newest = (revisions.body.revisions as { revision: number }[])[0]!.revision;
    const revision = await documentedCall(
      'GET',
      '/v1/catalog/revisions/{revision}',
      `/v1/catalog/revisions/${newest}`,
      'admin',
      { status: 200 },
    );
    expect(revision.body.revision).toBe(newest);
    await documentedCall('GET', '/v1/catalog/revisions/{revision}', '/v1/catalog/revisions/999999', 'admin', {
      status: 404,
    });
    await documentedCall('GET', '/v1/catalog/revisions', '/v1/catalog/revisions?before=x', 'admin', { status: 400 });

    // Credits, then usage: JSON events (priced), CloudEvents (priced and unpriced), and a refused batch.
    const bought = await documentedCall(
      'POST',
      '/v1/customers/{customer}/purchases',
      `/v1/customers/${customer}/purchases`,
      'admin',
      {
        body: { package: 'openapi-50', effective_at: new Date(atMs - 86_400_000).toISOString() },
        headers: { 'idempotency-key': 'openapi-live-1' },
        status: 201,
      },
    );
    expect(bought.body).toMatchObject({ created: true, entry: { kind: 'purchase', amount: '50' } });
    const again = await documentedCall(
      'POST',
      '/v1/customers/{customer}/purchases',
      `/v1/customers/${customer}/purchases`,
      'admin',
      {
        body: { package: 'openapi-50', effective_at: new Date(atMs - 86_400_000).toISOString() },
        headers: { 'idempotency-key': 'openapi-live-1' },
        status: 200,
      },
    );
    expect(again.body.created).toBe(false);
    await documentedCall('POST', '/v1/customers/{customer}/purchases', `/v1/customers/${customer}/purchases`, 'admin', {
      body: { package: 'no-such-package' },
      status: 404,
    });
    // A manual credit with an expiry, its retry, and a refused debit with an expiry.
    const adjustments = '/v1/customers/{customer}/adjustments';
    const credit = {
      unit: 'credits',
      amount: '3',
      reason: 'goodwill',
      expires_at: new Date(atMs + 86_400_000).toISOString(),
    };
    for (const status of [201, 200])
      await documentedCall('POST', adjustments, `/v1/customers/${customer}/adjustments`, 'admin', {
        body: credit,
        headers: { 'idempotency-key': 'openapi-adjust-1' },
        status,
      });
    await documentedCall('POST', adjustments, `/v1/customers/${customer}/adjustments`, 'admin', {
      body: { unit: 'credits', amount: '-1', reason: 'x', expires_at: new Date(atMs + 86_400_000).toISOString() },
      headers: { 'idempotency-key': 'openapi-adjust-2' },
      status: 400,
    });
    const images = [
      {
        id: 'live-1',
        customer,
        meter: 'images',
        quantity: '2',
        timestamp: at,
        dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
      },
    ];
    const sent = await documentedCall('POST', '/v1/events', '/v1/events', 'ingest', { body: images, status: 202 });
    expect(sent.body).toMatchObject({ accepted: 1, duplicate: false });
    // MessagePack, retried under one Idempotency-Key: the retry is a duplicate.
    const packed = [{ ...images[0], id: 'live-2', quantity: 1 }];
    for (const duplicate of [false, true]) {
      const answer = await documentedCall('POST', '/v1/events', '/v1/events', 'ingest', {
        body: packed,
        type: 'application/msgpack',
        encode: (body) => packr.pack(body),
        headers: { 'idempotency-key': 'openapi-live-packed' },
        status: 202,
      });
      expect(answer.body).toMatchObject({ accepted: 1, duplicate });
    }
    const badEvent = await documentedCall('POST', '/v1/events', '/v1/events', 'ingest', {
      body: [{ ...images[0], id: 'live-bad', quantity: -1 }],
      status: 422,
    });
    expect(badEvent.body.errors).toEqual([expect.objectContaining({ index: 0, field: 'quantity' })]);
    const cloudEvents = ['small', 'large'].map((model) => ({
      specversion: '1.0',
      id: `live-ce-${model}`,
      source: 'openapi-test',
      type: 'openapi.prompt',
      subject: customer,
      time: at,
      datacontenttype: 'application/json',
      data: { tokens: 10, model },
    }));
    // The meter's mapping reaches the gateway at its next catalog refresh: until then the type is unknown (400).
    let status = 0;
    for (let attempt = 0; attempt < 200 && status !== 204; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 50));
      const probe = await fetch(`${drawdown.url}/api/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${keys.ingest}`, 'content-type': 'application/cloudevents+json' },
        body: JSON.stringify({ ...cloudEvents[0], id: 'live-ce-probe', data: { tokens: 0, model: 'small' } }),
      });
      status = probe.status;
      await probe.text();
    }
    expect(status).toBe(204);
    await documentedCall('POST', '/api/v1/events', '/api/v1/events', 'ingest', {
      body: cloudEvents,
      type: 'application/cloudevents-batch+json',
      status: 204,
    });
    const unmapped = await documentedCall('POST', '/api/v1/events', '/api/v1/events', 'ingest', {
      body: { ...cloudEvents[0], id: 'live-ce-unmapped', type: 'no.such.type' },
      type: 'application/cloudevents+json',
      status: 400,
    });
    expect(unmapped.body.code).toBe('cloudevent_invalid');
    await waitForStreamDrained(nats.url);

    const usage = '/v1/customers/{customer}/usage';
    const from = new Date(atMs - 3_600_000).toISOString();
    const used = await documentedCall(
      'GET',
      usage,
      `/v1/customers/${customer}/usage?from=${from}&granularity=day`,
      'read',
      {
        status: 200,
      },
    );
    expect((used.body.usage as { meter: string }[]).map((u) => u.meter).sort()).toEqual([
      'images',
      'openapi.prompt',
      'openapi.prompt',
    ]);
    await documentedCall('GET', usage, `/v1/customers/${customer}/usage?granularity=week`, 'read', { status: 400 });

    // Settlement: a run, a refused earlier `until`, the run history.
    const run = await documentedCall('POST', '/v1/settlements', '/v1/settlements', 'admin', {
      body: { until: untilIso },
      status: 200,
    });
    const runId = run.body.run_id as string;
    expect((run.body.customers as Record<string, unknown>)[customer]).toMatchObject({
      deducted: { credits: '14' },
      unpriced_outstanding: [expect.objectContaining({ meter: 'openapi.prompt', dimensions: { model: 'large' } })],
    });
    await documentedCall('POST', '/v1/settlements', '/v1/settlements', 'admin', {
      body: { until: new Date(atMs).toISOString() },
      status: 400,
    });
    const runs = await documentedCall('GET', '/v1/settlements', '/v1/settlements?limit=5', 'admin', { status: 200 });
    expect((runs.body.runs as { run_id: string }[])[0]!.run_id).toBe(runId);
    await documentedCall('GET', '/v1/settlements', '/v1/settlements?limit=0', 'admin', { status: 400 });
    const one = await documentedCall(
      'GET',
      '/v1/settlements/{run_id}',
      `/v1/settlements/${encodeURIComponent(runId)}`,
      'admin',
      {
        status: 200,
      },
    );
    expect(one.body).toMatchObject({ run_id: runId, status: 'completed' });
    await documentedCall('GET', '/v1/settlements/{run_id}', '/v1/settlements/run:1:2', 'admin', { status: 404 });

    // What the customer sees afterwards.
    const balance = await documentedCall(
      'GET',
      '/v1/customers/{customer}/balance',
      `/v1/customers/${customer}/balance`,
      'read',
      { status: 200 },
    );
    expect(balance.body.unrated_pending).toEqual([
      expect.objectContaining({ meter: 'openapi.prompt', dimensions: { model: 'large' }, found_by: runId }),
    ]);
    const ledger = '/v1/customers/{customer}/ledger';
    const entries: { effective_at: string; kind: string }[] = [];
    for (let after: string | null = '', pages = 0; after !== null && pages < 50; pages++) {
      const page = await documentedCall(
        'GET',
        ledger,
        `/v1/customers/${customer}/ledger?limit=3${after ? `&after=${encodeURIComponent(after)}` : ''}`,
        'read',
        {
          status: 200,
        },
      );
      entries.push(...(page.body.entries as typeof entries));
      after = page.body.next as string | null;
    }
    expect(entries.map((e) => e.kind)).toEqual(expect.arrayContaining(['purchase', 'grant', 'usage']));
    // Oldest first, as documented.
    const times = entries.map((e) => e.effective_at);
    expect(times).toEqual([...times].sort());
    await documentedCall('GET', ledger, `/v1/customers/${customer}/ledger?limit=0`, 'read', { status: 400 });
    const statements = await documentedCall(
      'GET',
      '/v1/customers/{customer}/statements',
      `/v1/customers/${customer}/statements`,
      'read',
      { status: 200 },
    );
    expect((statements.body.statements as unknown[]).length).toBeGreaterThanOrEqual(2);
    await documentedCall(
      'GET',
      '/v1/customers/{customer}/statements',
      `/v1/customers/${customer}/statements?limit=0`,
      'read',
      {
        status: 400,
      },
    );

    // Operations.
    await documentedCall('GET', '/healthz', '/healthz', 'public', { status: 200 });
    await documentedCall('GET', '/readyz', '/readyz', 'public', { status: 200 });
    const metrics = await documentedCall('GET', '/metrics', '/metrics', 'public', { status: 200 });
    expect(metrics.text).toContain('# TYPE');
  });

  it('given a webhook endpoint and a customer’s notice settings, when each notices operation is called as an admin would, then every answer matches its documented schema', async () => {
    // A receiver that answers 204, so a delivery is logged and can be redelivered.
    const received: string[] = [];
    const receiver = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        received.push(String(req.headers['webhook-id']));
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
      const created = await documentedCall('POST', '/v1/webhooks', '/v1/webhooks', 'admin', {
        body: { url, events: ['purchase.posted', 'balance.low'], description: 'openapi' },
        status: 201,
      });
      const id = created.body.id as string;
      expect(created.body.secret).toMatch(/^whsec_/);
      await documentedCall('POST', '/v1/webhooks', '/v1/webhooks', 'admin', {
        body: { url: 'gopher://x', events: [] },
        status: 400,
      });
      await documentedCall('GET', '/v1/webhooks', '/v1/webhooks', 'admin', { status: 200 });
      const one = '/v1/webhooks/{endpoint}';
      await documentedCall('GET', one, `/v1/webhooks/${id}`, 'admin', { status: 200 });
      await documentedCall('GET', one, '/v1/webhooks/we_AAAAAAAAAAAAAAAAAAAAAA', 'admin', { status: 404 });
      await documentedCall('PATCH', one, `/v1/webhooks/${id}`, 'admin', {
        body: { description: 'openapi, renamed' },
        status: 200,
      });

      const customer = 'openapi-notices';
      const settings = '/v1/customers/{customer}/notice-settings';
      await documentedCall('PUT', settings, `/v1/customers/${customer}/notice-settings`, 'admin', {
        body: {
          units: {
            credits: {
              low: ['50'],
              expiring_within: 'P3D',
              auto_top_up: { below: '20', package: 'credits-100', max_per_day: 1, mode: 'confirm' },
            },
          },
        },
        status: 200,
      });
      await documentedCall('PUT', settings, `/v1/customers/${customer}/notice-settings`, 'admin', {
        body: { units: { credits: { low: ['x'] } } },
        status: 400,
      });
      await documentedCall('PUT', settings, `/v1/customers/${customer}/notice-settings`, 'admin', {
        body: { units: { credits: { expiring_within: 'P1M' } } },
        status: 400,
      });
      // A credit expiring within the lead time: the GET below lists its grant.expiring.
      const credited = await fetch(`${drawdown.url}/v1/customers/${customer}/adjustments`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${keys.admin}`,
          'content-type': 'application/json',
          'idempotency-key': 'openapi-notices-credit',
        },
        body: JSON.stringify({
          unit: 'credits',
          amount: '5',
          reason: 'openapi',
          expires_at: new Date(Date.now() + 86_400_000).toISOString(),
        }),
      });
      expect(credited.status).toBe(201);
      expect(await drawdown.notices!.checkExpiring()).toBe(1);
      const bought = await fetch(`${drawdown.url}/v1/customers/${customer}/purchases`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${keys.admin}`,
          'content-type': 'application/json',
          'idempotency-key': 'openapi-notices-1',
        },
        body: JSON.stringify({ package: 'credits-100' }),
      });
      expect(bought.status).toBe(201);
      await drawdown.notices!.evaluator.idle();
      const got = await documentedCall('GET', settings, `/v1/customers/${customer}/notice-settings`, 'admin', {
        status: 200,
      });
      expect((got.body.units as Record<string, unknown>).credits).toMatchObject({
        low: ['50'],
        low_source: 'customer',
        expiring_within: 'P3D',
        expiring_within_source: 'customer',
        expiring: [expect.objectContaining({ expires_at: expect.any(String) })],
      });

      const deliveries = '/v1/webhooks/{endpoint}/deliveries';
      let delivered: { id: string } | undefined;
      for (let i = 0; i < 200 && delivered === undefined; i++) {
        const log = await documentedCall('GET', deliveries, `/v1/webhooks/${id}/deliveries?status=delivered`, 'admin', {
          status: 200,
        });
        delivered = (log.body.deliveries as { id: string }[])[0];
        if (delivered === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      expect(delivered).toBeDefined();
      await documentedCall('GET', deliveries, `/v1/webhooks/${id}/deliveries?limit=0`, 'admin', { status: 400 });
      const redeliver = '/v1/webhooks/{endpoint}/deliveries/{delivery}/redeliver';
      await documentedCall('POST', redeliver, `/v1/webhooks/${id}/deliveries/${delivered!.id}/redeliver`, 'admin', {
        status: 202,
      });
      await documentedCall(
        'POST',
        redeliver,
        `/v1/webhooks/${id}/deliveries/ntc_AAAAAAAAAAAAAAAAAAAAAA/redeliver`,
        'admin',
        { status: 404 },
      );
      for (let i = 0; i < 200 && received.filter((r) => r === delivered!.id).length < 2; i++)
        await new Promise((r) => setTimeout(r, 50));
      expect(received.filter((r) => r === delivered!.id)).toHaveLength(2);
      await documentedCall('DELETE', one, `/v1/webhooks/${id}`, 'admin', { status: 200 });
      const again = await documentedCall('DELETE', one, `/v1/webhooks/${id}`, 'admin', { status: 200 });
      expect(again.body).toEqual({ id, deleted: false });
    } finally {
      receiver.closeAllConnections();
      await new Promise((resolve) => receiver.close(resolve));
    }
  });

  it('given the calls above, then every documented operation was answered with a 2xx by a live check', () => {
    expect(documented.map((op) => `${op.method} ${op.template}`).filter((op) => !exercised.has(op))).toEqual([]);
  });
});
