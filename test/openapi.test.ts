/**
 * docs/openapi.yaml against the code: every route the processes serve
 * (method, path, scope) is documented, every documented operation exists,
 * and error codes match shared/errors.ts. Routes come from the route
 * factories themselves, and a scan of the source makes sure no route sits in
 * a factory this test does not know — so a new route fails here until it is
 * documented. Then a running drawdown (real nats-server, chDB, keys on) is
 * asked every documented operation: without a key each is 401 (the route
 * exists and is protected; the router answers 404/405 otherwise), with a key
 * of another scope 403, with the documented scope neither.
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
    // If this fails, a route was added outside ingestRoutes, settlementRoutes, catalogRoutes and startService: add
    // its factory above.
    expect({ routesInSource: inSource, files: [...routeLiteralsInSource().keys()].sort() }).toEqual({
      routesInSource: codeRoutes.length,
      files: ['catalog/api.ts', 'ingest/gateway.ts', 'settlement/api.ts', 'shared/service.ts'],
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
});
