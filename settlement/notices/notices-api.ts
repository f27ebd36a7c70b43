/**
 * Notices and webhooks over HTTP (docs/notices.md), all admin:
 *
 *   POST   /v1/webhooks                                           register {url, events, description?} → secret, once
 *   GET    /v1/webhooks                                           list (no secrets)
 *   GET    /v1/webhooks/{endpoint}                                one
 *   PATCH  /v1/webhooks/{endpoint}                                {url?, events?, description?, disabled?}
 *   DELETE /v1/webhooks/{endpoint}                                remove (idempotent: deleted false if absent)
 *   GET    /v1/webhooks/{endpoint}/deliveries?status=&limit=      delivery log
 *   POST   /v1/webhooks/{endpoint}/deliveries/{delivery}/redeliver  send again
 *   GET    /v1/customers/{id}/notice-settings                     thresholds, lead times, top-up rules and their state
 *   PUT    /v1/customers/{id}/notice-settings                     replace the customer's own settings
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Catalog } from '../../catalog/model.js';
import { DrawdownError } from '../../shared/errors.js';
import { queryParams, readJsonBody, sendJson, type Route } from '../../shared/http.js';
import { formatAmount } from '../../shared/money.js';
import { isPlainObject, Problems, refuseUnknownFields } from '../../shared/validate.js';
import { checkCustomer, customerPath } from '../api.js';
import { CrossingStore } from './crossing-store.js';
import type { DeliveryLog, DeliveryRecord, DeliveryStatus } from './delivery-log.js';
import type { WebhookDispatcher } from './dispatcher.js';
import { isNoticeType, noticeTypes, type NoticeType } from './notice.js';
import { expiringWithinFor, parseCustomerSettings, rulesFor, type NoticeSettingsStore } from './notice-settings.js';
import { endpointView, EndpointNotFoundError, endpointsMax, type EndpointStore } from './webhook-endpoints.js';

// Loose on purpose: an id of another shape is a 404 from the handler, not an unrouted path.
const endpointPath = '([A-Za-z0-9_-]{1,64})';
const deliveryPath = '([A-Za-z0-9_-]{1,64})';
const urlLengthMax = 2_048;
const descriptionLengthMax = 256;
const deliveryStatuses: readonly DeliveryStatus[] = ['pending', 'retrying', 'delivered', 'failed', 'skipped'];

export interface NoticesApiDeps {
  endpoints: EndpointStore;
  deliveries: DeliveryLog;
  dispatcher: WebhookDispatcher;
  settings: NoticeSettingsStore;
  crossings: CrossingStore;
  catalog: Catalog;
  /** Re-evaluate a customer whose settings changed. */
  touch: (customer: string) => void;
  now?: () => number;
}

function refuse(problems: Problems): void {
  if (!problems.empty)
    throw new DrawdownError('request_invalid', problems.list[0]!.message, { problems: problems.list });
}

function readUrl(problems: Problems, value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > urlLengthMax) {
    problems.add(
      'url',
      value === undefined ? 'required' : 'type',
      `url must be an http(s) URL of ≤ ${urlLengthMax} characters`,
    );
    return undefined;
  }
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    problems.add('url', 'format', 'url must be an absolute http(s) URL');
    return undefined;
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    problems.add('url', 'format', 'url must use http or https');
    return undefined;
  }
  if (parsed.username !== '' || parsed.password !== '') {
    problems.add('url', 'format', 'url may not carry credentials; the signature authenticates deliveries');
    return undefined;
  }
  return value;
}

function readEvents(problems: Problems, value: unknown): NoticeType[] | undefined {
  if (!Array.isArray(value) || value.length === 0) {
    problems.add(
      'events',
      value === undefined ? 'required' : 'type',
      `events must list notice types: ${noticeTypes.join(', ')}`,
    );
    return undefined;
  }
  const out: NoticeType[] = [];
  value.forEach((type, i) => {
    if (!isNoticeType(type))
      problems.add(`events[${i}]`, 'enum', `events[${i}] must be one of ${noticeTypes.join(', ')}`);
    else if (!out.includes(type)) out.push(type);
  });
  return out;
}

function readDescription(problems: Problems, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length > descriptionLengthMax) {
    problems.add('description', 'type', `description must be a string of ≤ ${descriptionLengthMax} characters`);
    return undefined;
  }
  return value;
}

function deliveryJson(record: DeliveryRecord): Record<string, unknown> {
  const { payload: _payload, ...rest } = record;
  return rest;
}

export function noticeRoutes(deps: NoticesApiDeps): Route[] {
  const now = deps.now ?? Date.now;
  const { endpoints, catalog } = deps;

  async function found<T>(work: Promise<T>): Promise<T> {
    try {
      return await work;
    } catch (error) {
      if (error instanceof EndpointNotFoundError) throw new DrawdownError('not_found', error.message);
      throw error;
    }
  }

  async function create(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonBody(req, 16 * 1024);
    if (!isPlainObject(body)) throw new DrawdownError('request_invalid', 'body must be a JSON object');
    const problems = new Problems();
    refuseUnknownFields(problems, body, '', ['url', 'events', 'description']);
    const url = readUrl(problems, body.url);
    const events = readEvents(problems, body.events);
    const description = readDescription(problems, body.description) ?? '';
    refuse(problems);
    if ((await endpoints.list()).length >= endpointsMax)
      throw new DrawdownError('request_invalid', `at most ${endpointsMax} webhook endpoints; delete one first`);
    const endpoint = await endpoints.create({ url: url!, events: events!, description }, now());
    // The only answer that carries the secret: it is not shown again.
    sendJson(res, 201, { ...endpointView(endpoint), secret: endpoint.secret });
  }

  async function list(_req: IncomingMessage, res: ServerResponse): Promise<void> {
    sendJson(res, 200, { endpoints: (await endpoints.list()).map(endpointView) });
  }

  async function get(_req: IncomingMessage, res: ServerResponse, [id]: string[]): Promise<void> {
    const endpoint = await endpoints.get(id!);
    if (endpoint === undefined) throw new DrawdownError('not_found', `no webhook endpoint ${id}`);
    sendJson(res, 200, endpointView(endpoint));
  }

  async function patch(req: IncomingMessage, res: ServerResponse, [id]: string[]): Promise<void> {
    const body = await readJsonBody(req, 16 * 1024);
    if (!isPlainObject(body)) throw new DrawdownError('request_invalid', 'body must be a JSON object');
    const problems = new Problems();
    refuseUnknownFields(problems, body, '', ['url', 'events', 'description', 'disabled']);
    const url = body.url === undefined ? undefined : readUrl(problems, body.url);
    const events = body.events === undefined ? undefined : readEvents(problems, body.events);
    const description = readDescription(problems, body.description);
    if (body.disabled !== undefined && typeof body.disabled !== 'boolean')
      problems.add('disabled', 'type', 'disabled must be true or false');
    refuse(problems);
    const nowIso = new Date(now()).toISOString();
    const updated = await found(
      endpoints.update(id!, (e) => {
        const disabled = typeof body.disabled === 'boolean' ? body.disabled : e.disabled;
        return {
          ...e,
          ...(url === undefined ? {} : { url }),
          ...(events === undefined ? {} : { events }),
          ...(description === undefined ? {} : { description }),
          disabled,
          disabled_at: disabled ? (e.disabled ? e.disabled_at : nowIso) : null,
          disabled_reason: disabled ? (e.disabled ? e.disabled_reason : 'disabled through the API') : null,
          // Re-enabling starts the failure count afresh.
          last_success_at: !disabled && e.disabled ? nowIso : e.last_success_at,
        };
      }),
    );
    sendJson(res, 200, endpointView(updated));
  }

  /** Idempotent: deleting an endpoint that is not there (any more) answers deleted: false. */
  async function remove(_req: IncomingMessage, res: ServerResponse, [id]: string[]): Promise<void> {
    sendJson(res, 200, { id, deleted: await endpoints.delete(id!) });
  }

  async function deliveriesOf(req: IncomingMessage, res: ServerResponse, [id]: string[]): Promise<void> {
    const params = queryParams(req);
    const problems = new Problems();
    const limit = Number(params.get('limit') ?? '50');
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) problems.add('limit', 'range', 'limit must be 1–500');
    const status = params.get('status') ?? undefined;
    if (status !== undefined && !(deliveryStatuses as readonly string[]).includes(status))
      problems.add('status', 'enum', `status must be one of ${deliveryStatuses.join(', ')}`);
    refuse(problems);
    if ((await endpoints.get(id!)) === undefined) throw new DrawdownError('not_found', `no webhook endpoint ${id}`);
    const records = await deps.deliveries.list(id!, limit, status as DeliveryStatus | undefined);
    sendJson(res, 200, { endpoint: id, deliveries: records.map(deliveryJson) });
  }

  async function redeliver(req: IncomingMessage, res: ServerResponse, [id, delivery]: string[]): Promise<void> {
    // No body is needed; one that is sent must be an empty object.
    const body = await readJsonBody(req, 1024);
    if (!isPlainObject(body) || Object.keys(body).length > 0)
      throw new DrawdownError('request_invalid', 'redeliver takes no body (or {})');
    const endpoint = await endpoints.get(id!);
    if (endpoint === undefined) throw new DrawdownError('not_found', `no webhook endpoint ${id}`);
    if (endpoint.disabled)
      throw new DrawdownError(
        'request_invalid',
        `webhook endpoint ${id} is disabled; enable it first (PATCH disabled: false)`,
      );
    const record = await deps.dispatcher.redeliver(id!, delivery!);
    if (record === undefined) throw new DrawdownError('not_found', `no delivery ${delivery} for endpoint ${id}`);
    sendJson(res, 202, deliveryJson(record));
  }

  async function settingsJson(customer: string): Promise<Record<string, unknown>> {
    const own = await deps.settings.read(customer);
    const units: Record<string, unknown> = {};
    for (const unit of [...catalog.creditUnits.keys()].sort()) {
      const rules = rulesFor(catalog, own, unit);
      const { state } = await deps.crossings.read(CrossingStore.key(customer, unit));
      const ownUnit = own?.units[unit];
      const lead = expiringWithinFor(catalog, own, unit);
      units[unit] = {
        low: rules.low.map((t) => formatAmount(t)),
        low_source: ownUnit?.low !== undefined ? 'customer' : 'catalog',
        expiring_within: lead?.text ?? null,
        expiring_within_source: ownUnit?.expiring_within !== undefined ? 'customer' : 'catalog',
        // grant.expiring decided for this account (kept until a day after each expiry), soonest first.
        expiring: Object.entries(state.expiring ?? {})
          .sort(([, a], [, b]) => a.expiresAtMs - b.expiresAtMs)
          .map(([notice, mark]) => ({
            block: mark.block,
            expires_at: new Date(mark.expiresAtMs).toISOString(),
            notice,
            decided_at: new Date(mark.decidedMs).toISOString(),
          })),
        auto_top_up: ownUnit?.auto_top_up ?? null,
        below: Object.entries(state.conditions)
          .filter(([, c]) => c.below)
          .map(([condition, c]) => ({ condition, since: new Date(c.sinceMs).toISOString(), episode: c.episode })),
        top_up: {
          day: state.topUp.day === '' ? null : state.topUp.day,
          requested_today: state.topUp.requested,
          capped_today: state.topUp.capped,
          requests: state.topUp.requests.map((r) => ({
            id: r.id,
            package: r.package,
            mode: r.mode,
            status: r.status,
            requested_at: new Date(r.requestedMs).toISOString(),
          })),
        },
        unpublished: state.outbox.length,
      };
    }
    return { customer, units };
  }

  async function getSettings(_req: IncomingMessage, res: ServerResponse, [customer]: string[]): Promise<void> {
    sendJson(res, 200, await settingsJson(checkCustomer(customer!)));
  }

  async function putSettings(req: IncomingMessage, res: ServerResponse, [customerParam]: string[]): Promise<void> {
    const customer = checkCustomer(customerParam!);
    const body = await readJsonBody(req, 64 * 1024);
    const problems = new Problems();
    const parsed = parseCustomerSettings(problems, body, catalog);
    refuse(problems);
    await deps.settings.write(customer, parsed);
    deps.touch(customer);
    sendJson(res, 200, await settingsJson(customer));
  }

  const c = customerPath;
  return [
    { method: 'POST', path: /^\/v1\/webhooks$/, scope: 'admin', handler: create },
    { method: 'GET', path: /^\/v1\/webhooks$/, scope: 'admin', handler: list },
    { method: 'GET', path: new RegExp(`^/v1/webhooks/${endpointPath}$`), scope: 'admin', handler: get },
    { method: 'PATCH', path: new RegExp(`^/v1/webhooks/${endpointPath}$`), scope: 'admin', handler: patch },
    { method: 'DELETE', path: new RegExp(`^/v1/webhooks/${endpointPath}$`), scope: 'admin', handler: remove },
    {
      method: 'GET',
      path: new RegExp(`^/v1/webhooks/${endpointPath}/deliveries$`),
      scope: 'admin',
      handler: deliveriesOf,
    },
    {
      method: 'POST',
      path: new RegExp(`^/v1/webhooks/${endpointPath}/deliveries/${deliveryPath}/redeliver$`),
      scope: 'admin',
      handler: redeliver,
    },
    { method: 'GET', path: new RegExp(`^/v1/customers/${c}/notice-settings$`), scope: 'admin', handler: getSettings },
    { method: 'PUT', path: new RegExp(`^/v1/customers/${c}/notice-settings$`), scope: 'admin', handler: putSettings },
  ];
}
