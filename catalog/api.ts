/**
 * The catalog admin API (scope `admin`, served by the settlement process):
 * read the catalog and its history, replace it whole, or change one entity.
 * Every write reads the latest revision, builds the whole new document,
 * validates it with parseCatalog, checks the transition rules, and writes a
 * new revision — or none, when nothing changed. Bodies are snake_case, as in
 * the catalog file.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authorize, type Auth } from '../shared/auth.js';
import { DrawdownError } from '../shared/errors.js';
import { queryParams, readJsonBody, sendJson, type Route } from '../shared/http.js';
import { isPlainObject } from '../shared/validate.js';
import { changeJson } from './diff.js';
import { canonicalText, entityList, setEntityList, type CatalogDocument } from './document.js';
import type { CatalogSource } from './source.js';
import {
  catalogDocumentBytesMax,
  historyPageMax,
  type ApplyOptions,
  type ApplyResult,
  type CatalogStore,
  type Revision,
  type RevisionSummary,
} from './store.js';

export interface CatalogApiDeps {
  catalogs: CatalogStore;
  /** Refreshed after every write, so this process uses a new revision at once. */
  source: CatalogSource;
  /** To name the key that made a change in `applied_by`. */
  auth: Auth;
  now?: () => number;
}

const idPath = '([A-Za-z0-9._:@%-]{1,384})';

function summaryJson(r: RevisionSummary): Record<string, unknown> {
  return {
    revision: r.revision,
    applied_at: new Date(r.appliedAtSec * 1000).toISOString(),
    applied_by: r.appliedBy,
    sha256: r.sha256,
  };
}

function revisionJson(r: Revision): Record<string, unknown> {
  return { ...summaryJson(r), document: r.document };
}

function etag(revision: number): Record<string, string> {
  return { etag: `"${revision}"` };
}

function resultJson(r: ApplyResult): Record<string, unknown> {
  return {
    revision: r.revision,
    previous_revision: r.previousRevision,
    changed: r.changed,
    dry_run: r.dryRun,
    sha256: r.sha256,
    changes: r.changes.map(changeJson),
  };
}

/** `If-Match: "7"` (as GET's ETag), `W/"7"` or `7`: the revision the write is based on; `*` or absent: any. */
function expectedRevision(req: IncomingMessage): number | undefined {
  const header = req.headers['if-match'];
  if (header === undefined || header.trim() === '*') return undefined;
  const match = /^\s*(?:W\/)?"?(\d{1,15})"?\s*$/.exec(header);
  if (match === null) {
    throw new DrawdownError(
      'request_invalid',
      'If-Match must be the catalog revision this write is based on, e.g. "7" (the ETag of GET /v1/catalog)',
      {
        problems: [{ field: 'If-Match', code: 'format', message: 'If-Match must be a revision number such as "7"' }],
      },
    );
  }
  return Number(match[1]);
}

function dryRun(req: IncomingMessage): boolean {
  const value = queryParams(req).get('dry_run');
  if (value === null || value === 'false') return false;
  if (value === 'true' || value === '') return true;
  throw new DrawdownError('request_invalid', 'dry_run must be true or false', {
    problems: [{ field: 'dry_run', code: 'enum', message: 'dry_run must be true or false' }],
  });
}

function objectBody(body: unknown): Record<string, unknown> {
  if (!isPlainObject(body))
    throw new DrawdownError('catalog_definition_invalid', 'body must be a JSON object', {
      problems: [{ field: '(body)', code: 'type', message: 'body must be a JSON object' }],
    });
  return body;
}

/** The path names the entity; a body that names another is refused rather than guessed at. */
function withKey(body: Record<string, unknown>, field: string, value: string): Record<string, unknown> {
  if (body[field] !== undefined && body[field] !== value) {
    throw new DrawdownError(
      'catalog_definition_invalid',
      `${field} in the body (${JSON.stringify(body[field])}) differs from the path (${value})`,
      {
        problems: [{ field, code: 'mismatch', message: `${field} must be ${value}, as in the path` }],
      },
    );
  }
  return { ...body, [field]: value };
}

/** Replaces the entity with the same key, or appends it; returns its index in the new document. */
function upsert(document: CatalogDocument, list: string, key: string, entity: Record<string, unknown>): number {
  const entities = [...entityList(document, list)];
  let index = entities.findIndex((e) => e[key] === entity[key]);
  if (index < 0) index = entities.push(entity) - 1;
  else entities[index] = entity;
  setEntityList(document, list, entities);
  return index;
}

export function catalogRoutes(deps: CatalogApiDeps): Route[] {
  const { catalogs, source } = deps;
  const now = deps.now ?? Date.now;

  function appliedBy(req: IncomingMessage): string {
    // The router has checked the key already; this only names it.
    if (deps.auth === 'off') return 'api';
    return `key:${authorize(deps.auth, req.headers.authorization, 'admin').id}`;
  }

  function options(req: IncomingMessage, extra: Partial<ApplyOptions> = {}): ApplyOptions {
    const expected = expectedRevision(req);
    return {
      appliedBy: appliedBy(req),
      dryRun: dryRun(req),
      nowMs: now(),
      ...(expected === undefined ? {} : { expectedRevision: expected }),
      ...extra,
    };
  }

  async function respond(res: ServerResponse, result: ApplyResult): Promise<void> {
    if (result.changed && !result.dryRun) await source.refresh();
    sendJson(res, 200, resultJson(result), etag(result.revision));
  }

  async function getCatalog(_req: IncomingMessage, res: ServerResponse): Promise<void> {
    const latest = await catalogs.latest();
    if (latest === undefined) throw new DrawdownError('not_found', 'the catalog store has no revision yet');
    sendJson(res, 200, revisionJson(latest), etag(latest.revision));
  }

  async function history(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const params = queryParams(req);
    const limit = Number(params.get('limit') ?? '100');
    if (!Number.isInteger(limit) || limit < 1 || limit > historyPageMax)
      throw new DrawdownError('request_invalid', `limit must be 1–${historyPageMax}`);
    const beforeText = params.get('before');
    if (beforeText !== null && !/^\d{1,15}$/.test(beforeText))
      throw new DrawdownError(
        'request_invalid',
        'before must be a revision number (the next token of a previous page)',
      );
    const page = await catalogs.history(limit, beforeText === null ? undefined : Number(beforeText));
    const last = page.at(-1);
    sendJson(res, 200, {
      revisions: page.map(summaryJson),
      next: page.length === limit && last !== undefined && last.revision > 1 ? String(last.revision) : null,
    });
  }

  async function getRevision(_req: IncomingMessage, res: ServerResponse, [n]: string[]): Promise<void> {
    if (!/^\d{1,15}$/.test(n!)) throw new DrawdownError('request_invalid', 'revision must be a number');
    const revision = await catalogs.get(Number(n));
    if (revision === undefined) throw new DrawdownError('not_found', `no catalog revision ${n}`);
    sendJson(res, 200, revisionJson(revision), etag(revision.revision));
  }

  async function putCatalog(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonBody(req, catalogDocumentBytesMax);
    await respond(res, await catalogs.apply(body, options(req)));
  }

  function putEntity(list: string, key: string) {
    return async (req: IncomingMessage, res: ServerResponse, [id]: string[]): Promise<void> => {
      const body = await readJsonBody(req);
      const base = options(req);
      let at = '';
      const result = await catalogs
        .update((document) => {
          const entity = withKey(objectBody(body), key, id!);
          at = `${list}[${upsert(document, list, key, entity)}]`;
          return document;
        }, base)
        .catch((error: unknown) => {
          throw relativeError(error, [at]);
        });
      await respond(res, result);
    };
  }

  async function addRateCardVersion(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonBody(req);
    const base = options(req);
    let at = '';
    const result = await catalogs
      .update((document) => {
        const version = objectBody(body);
        const versions = entityList(document, 'rate_card.versions');
        const existing = versions.findIndex((v) => v.version === version.version);
        if (existing >= 0) {
          // Retrying the same POST is a no-op; a different body under a saved id is an edit, which this route does
          // not do.
          if (canonicalText(versions[existing]) === canonicalText(version)) return document;
          throw new DrawdownError(
            'catalog_conflict',
            `rate card version ${String(version.version)} exists; add a version with a new id (a future version can be replaced with PUT /v1/catalog)`,
            {
              problems: [
                { field: 'version', code: 'exists', message: `rate card version ${String(version.version)} exists` },
              ],
            },
          );
        }
        at = `rate_card.versions[${versions.length}]`;
        setEntityList(document, 'rate_card.versions', [...versions, version]);
        return document;
      }, base)
      .catch((error: unknown) => {
        throw relativeError(error, [at]);
      });
    await respond(res, result);
  }

  async function addPlanVersion(req: IncomingMessage, res: ServerResponse, [planId]: string[]): Promise<void> {
    const body = await readJsonBody(req);
    const base = options(req);
    let prefixes: string[] = [];
    const result = await catalogs
      .update((document) => {
        const { name, billing, ...version } = objectBody(body);
        const plans = [...entityList(document, 'plans')];
        let i = plans.findIndex((p) => p.id === planId);
        const plan: Record<string, unknown> = i < 0 ? { id: planId, name: name ?? planId, billing } : { ...plans[i]! };
        if (i >= 0 && billing !== undefined) plan.billing = billing;
        if (i >= 0 && name !== undefined) plan.name = name;
        const versions = [...entityList(plan, 'versions')];
        const number = version.version ?? versions.length + 1;
        if (typeof number === 'number' && Number.isInteger(number) && number >= 1 && number <= versions.length) {
          // The same version again (a retried POST) changes nothing; anything else would edit a saved version.
          if (canonicalText(versions[number - 1]) === canonicalText({ ...version, version: number })) return document;
          throw new DrawdownError(
            'catalog_conflict',
            `plan ${planId} version ${number} is saved and cannot change; post version ${versions.length + 1}`,
            {
              problems: [
                {
                  field: 'version',
                  code: 'immutable',
                  message: `plan ${planId} version ${number} is saved and cannot change`,
                },
              ],
            },
          );
        }
        versions.push({ ...version, version: number });
        plan.versions = versions;
        if (i < 0) i = plans.push(plan) - 1;
        else plans[i] = plan;
        setEntityList(document, 'plans', plans);
        prefixes = [`plans[${i}].versions[${versions.length - 1}]`, `plans[${i}]`];
        return document;
      }, base)
      .catch((error: unknown) => {
        throw relativeError(error, prefixes);
      });
    await respond(res, result);
  }

  async function planVersions(_req: IncomingMessage, res: ServerResponse, [planId]: string[]): Promise<void> {
    const snapshot = await catalogs.latest();
    const plan = entityList(snapshot?.document ?? {}, 'plans').find((p) => p.id === planId);
    if (snapshot === undefined || plan === undefined) throw new DrawdownError('not_found', `no plan ${planId}`);
    sendJson(
      res,
      200,
      {
        revision: snapshot.revision,
        plan: plan.id,
        name: plan.name ?? plan.id,
        billing: plan.billing,
        versions: entityList(plan, 'versions'),
      },
      etag(snapshot.revision),
    );
  }

  return [
    { method: 'GET', path: /^\/v1\/catalog$/, scope: 'admin', handler: getCatalog },
    { method: 'PUT', path: /^\/v1\/catalog$/, scope: 'admin', handler: putCatalog },
    { method: 'GET', path: /^\/v1\/catalog\/revisions$/, scope: 'admin', handler: history },
    { method: 'GET', path: /^\/v1\/catalog\/revisions\/([^/]{1,32})$/, scope: 'admin', handler: getRevision },
    {
      method: 'PUT',
      path: new RegExp(`^/v1/catalog/credit-units/${idPath}$`),
      scope: 'admin',
      handler: putEntity('credit_units', 'id'),
    },
    {
      method: 'PUT',
      path: new RegExp(`^/v1/catalog/meters/${idPath}$`),
      scope: 'admin',
      handler: putEntity('meters', 'key'),
    },
    {
      method: 'PUT',
      path: new RegExp(`^/v1/catalog/packages/${idPath}$`),
      scope: 'admin',
      handler: putEntity('packages', 'id'),
    },
    {
      method: 'PUT',
      path: new RegExp(`^/v1/catalog/add-ons/${idPath}$`),
      scope: 'admin',
      handler: putEntity('add_ons', 'id'),
    },
    {
      method: 'PUT',
      path: new RegExp(`^/v1/catalog/charges/${idPath}$`),
      scope: 'admin',
      handler: putEntity('charges', 'id'),
    },
    {
      method: 'PUT',
      path: new RegExp(`^/v1/catalog/subscriptions/${idPath}$`),
      scope: 'admin',
      handler: putEntity('subscriptions', 'id'),
    },
    { method: 'POST', path: /^\/v1\/catalog\/rate-card\/versions$/, scope: 'admin', handler: addRateCardVersion },
    {
      method: 'GET',
      path: new RegExp(`^/v1/catalog/plans/${idPath}/versions$`),
      scope: 'admin',
      handler: planVersions,
    },
    {
      method: 'POST',
      path: new RegExp(`^/v1/catalog/plans/${idPath}/versions$`),
      scope: 'admin',
      handler: addPlanVersion,
    },
  ];
}

/**
 * Problems about the entity a route wrote are reported relative to its body
 * (`price.amount`, not `packages[3].price.amount`); others keep their path.
 */
function relativeError(error: unknown, prefixes: readonly string[]): unknown {
  if (!(error instanceof DrawdownError) || error.problems.length === 0 || prefixes.every((p) => p === '')) return error;
  const problems = error.problems.map((p) => {
    for (const prefix of prefixes) {
      if (prefix === '') continue;
      if (p.field === prefix) return { ...p, field: '(body)' };
      if (p.field.startsWith(`${prefix}.`)) return { ...p, field: p.field.slice(prefix.length + 1) };
    }
    return p;
  });
  const first = problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem(s) listed)` : '';
  return new DrawdownError(error.code, `${first.field}: ${first.message}${more}`, { problems });
}
