/**
 * docs/openapi.yaml against the code: every route the processes serve
 * (method, path, scope) is documented, every documented operation exists,
 * and error codes match shared/errors.ts. Routes come from the route
 * factories themselves, and a scan of the source makes sure no route sits in
 * a factory this test does not know — so a new route fails here until it is
 * documented. Then a running drawdown (real nats-server, chDB, keys on) is
 * asked every documented operation: without a key each is 401 (the route
 * exists and is protected; the router answers 404/405 otherwise), with a key
 * of another scope 403, with the documented scope neither. Last, the credit
 * hold routes (which need NATS, as this drawdown has) are driven through a
 * reserve, a replay, a refusal, list, entitlement, balance, usage naming the
 * hold and release, and every answer is checked against its documented
 * schema — objects closed: a member the document does not name fails too.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { hashKey, newKey, scopes, type Scope } from '../shared/auth.js';
import { errorCodes } from '../shared/errors.js';
import type { Route } from '../shared/http.js';
import { ingestRoutes } from '../ingest/gateway.js';
import { settlementRoutes } from '../settlement/api.js';
import { holdRoutes } from '../settlement/holds-api.js';
import { catalogRoutes } from '../catalog/api.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { repoRoot, startNats, tempDir, testConfig } from './harness.js';

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

/** The node a local `$ref` ('#/components/…') points at. */
function resolveRef(ref: string): Schema {
  const node = ref
    .replace(/^#\//, '')
    .split('/')
    .reduce<unknown>((at, key) => (at as Record<string, unknown> | undefined)?.[key], doc);
  if (node === undefined) throw new Error(`unresolved $ref ${ref}`);
  return node as Schema;
}

function typeMatches(type: string, value: unknown): boolean {
  switch (type) {
    case 'null':
      return value === null;
    case 'integer':
      return Number.isInteger(value);
    case 'number':
      return typeof value === 'number';
    case 'array':
      return Array.isArray(value);
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value);
    default:
      return typeof value === type;
  }
}

/** The property names an object schema declares, through `$ref` and `allOf`. */
function declaredProperties(schema: Schema): string[] {
  if (typeof schema.$ref === 'string') return declaredProperties(resolveRef(schema.$ref));
  return [
    ...Object.keys((schema.properties as Schema | undefined) ?? {}),
    ...((schema.allOf as Schema[] | undefined) ?? []).flatMap(declaredProperties),
  ];
}

/**
 * The JSON Schema keywords docs/openapi.yaml uses, enough to check an answer
 * against it. `closed`: an object whose schema lists `properties` and says
 * nothing of `additionalProperties` may have no other member, so a member the
 * document forgot fails here. Returns every problem, as `path: what`.
 */
function schemaProblems(schema: Schema, value: unknown, path = '$', closed = true): string[] {
  if (typeof schema.$ref === 'string') return schemaProblems(resolveRef(schema.$ref), value, path, closed);
  const problems: string[] = [];
  if (Array.isArray(schema.allOf)) {
    for (const part of schema.allOf as Schema[]) problems.push(...schemaProblems(part, value, path, false));
    if (closed && typeMatches('object', value)) {
      const known = new Set(declaredProperties(schema));
      for (const key of Object.keys(value as object))
        if (!known.has(key)) problems.push(`${path}.${key}: not in the documented schema`);
    }
  }
  if (Array.isArray(schema.oneOf)) {
    const matching = (schema.oneOf as Schema[]).filter((s) => schemaProblems(s, value, path, closed).length === 0);
    if (matching.length !== 1) problems.push(`${path}: matches ${matching.length} of oneOf`);
  }
  if ('const' in schema && value !== schema.const) problems.push(`${path}: not ${JSON.stringify(schema.const)}`);
  if (Array.isArray(schema.enum) && !schema.enum.includes(value))
    problems.push(`${path}: ${JSON.stringify(value)} not in enum`);
  if (schema.type !== undefined) {
    const types = (Array.isArray(schema.type) ? schema.type : [schema.type]) as string[];
    if (!types.some((type) => typeMatches(type, value))) return [...problems, `${path}: not ${types.join('|')}`];
  }
  if (typeof value === 'string') {
    if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern, 'u').test(value))
      problems.push(`${path}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
    if (schema.format === 'date-time' && (!/^\d{4}-\d\d-\d\dT/.test(value) || Number.isNaN(Date.parse(value))))
      problems.push(`${path}: ${JSON.stringify(value)} is not a date-time`);
  }
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) problems.push(`${path}: below minimum`);
    if (typeof schema.exclusiveMinimum === 'number' && value <= schema.exclusiveMinimum)
      problems.push(`${path}: not above exclusiveMinimum`);
  }
  if (Array.isArray(value) && schema.items !== undefined)
    value.forEach((item, i) => problems.push(...schemaProblems(schema.items as Schema, item, `${path}[${i}]`, closed)));
  if (typeMatches('object', value)) {
    const object = value as Record<string, unknown>;
    for (const key of (schema.required as string[] | undefined) ?? [])
      if (!(key in object)) problems.push(`${path}.${key}: required`);
    const properties = (schema.properties as Record<string, Schema> | undefined) ?? {};
    for (const [key, member] of Object.entries(object)) {
      if (key in properties) problems.push(...schemaProblems(properties[key]!, member, `${path}.${key}`, closed));
      else if (typeof schema.additionalProperties === 'object')
        problems.push(...schemaProblems(schema.additionalProperties as Schema, member, `${path}.${key}`, closed));
      else if (
        schema.additionalProperties === false ||
        (closed && schema.properties !== undefined && schema.additionalProperties === undefined)
      )
        problems.push(`${path}.${key}: not in the documented schema`);
    }
  }
  return problems;
}

/** The documented answer of one operation for one status: its media type and schema. */
function documentedAnswer(method: string, template: string, status: number): { type: string; schema: Schema } {
  const operation = doc.paths[template]?.[method.toLowerCase()] as { responses?: Record<string, Schema> } | undefined;
  let response = operation?.responses?.[String(status)];
  if (response === undefined) throw new Error(`${method} ${template} documents no ${status} answer`);
  if (typeof response.$ref === 'string') response = resolveRef(response.$ref);
  const media = Object.entries(response.content as Record<string, { schema: Schema }>);
  if (media.length !== 1) throw new Error(`${method} ${template} ${status}: expected one media type`);
  return { type: media[0]![0], schema: media[0]![1].schema };
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
      testConfig({ natsUrl: nats.url, clickhouseUrl: `chdb:${dir.path}/chdb`, auth: 'required', apiKeys }),
      { ingest: true, rater: false, settlement: true },
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

  /** Calls the API as a client would and checks the answer against what docs/openapi.yaml says of it. */
  async function documentedCall(
    method: string,
    template: string,
    path: string,
    scope: Scope,
    options: { body?: unknown; headers?: Record<string, string>; status: number },
  ): Promise<{ body: Record<string, unknown>; headers: Headers }> {
    const response = await fetch(`${drawdown.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${keys[scope]}`,
        ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...options.headers,
      },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    const documented = documentedAnswer(method, template, options.status);
    expect({ method, path, status: response.status, code: body.code }).toMatchObject({
      method,
      path,
      status: options.status,
    });
    expect({ method, path, type: response.headers.get('content-type')?.split(';')[0] }).toEqual({
      method,
      path,
      type: documented.type,
    });
    expect({ method, path, problems: schemaProblems(documented.schema, body) }).toEqual({ method, path, problems: [] });
    return { body, headers: response.headers };
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
    expect(schemaProblems({ $ref: '#/components/schemas/HoldReserve' }, reserve)).toEqual([]);

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
    expect(schemaProblems({ $ref: '#/components/schemas/Event' }, event)).toEqual([]);
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
});
