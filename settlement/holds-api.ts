/**
 * Credit holds and entitlement over HTTP (docs/holds.md): reserve before
 * expensive work, send usage naming the hold, release when done. Bodies are
 * validated here once; every decision is the hold store's compare-and-set
 * (settlement/holds/), against live figures (live-balance.ts).
 *
 *   POST /v1/customers/{id}/holds          ingest  reserve {unit, amount, ttl_ms?, metadata?}
 *   POST /v1/holds/{hold}/release          ingest  give the hold up {wait_for_usage?}
 *   GET  /v1/holds/{hold}                  read    one hold, open or recently closed
 *   GET  /v1/customers/{id}/holds?unit=    read    open holds
 *   GET  /v1/customers/{id}/entitlement    read    ?unit=&amount= → {allowed, available, …}, reserves nothing
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../catalog/model.js';
import { DrawdownError, type ErrorCode } from '../shared/errors.js';
import { queryParams, readJsonBody, sendJson, type Route } from '../shared/http.js';
import { formatAmount, formatAtPrecision, money } from '../shared/money.js';
import { Problems, isPlainObject } from '../shared/validate.js';
import { checkCustomer, customerPath } from './api.js';
import { unitNamesJson, type Balance } from './balance.js';
import { LiveBalances, type LiveFigures } from './live-balance.js';
import { HoldStore, type HoldView, type BalanceFigures } from './holds/hold-store.js';
import { HoldError, HoldRequestInvalidError, InsufficientCreditsError } from './holds/hold-errors.js';
import { parseHoldId, unitPattern } from './holds/hold-ids.js';
import type { HoldMetrics } from './metrics.js';

const holdPath = '([A-Za-z0-9_.-]{1,400})';

/** A hold as served: the store's view plus what its usage has spent and what it still reserves. */
export interface HoldJson extends HoldView {
  /** Live cost of the usage naming this hold so far. */
  spent: string;
  /** What the hold still subtracts from available: remaining − spent, never below zero (0 once closed). */
  reserved: string;
}

function holdJson(view: HoldView, figures: LiveFigures | undefined): HoldJson {
  const suffix = view.id.slice(view.id.lastIndexOf('.') + 1);
  const spent = figures?.coverage.get(view.unit)?.get(suffix) ?? money(0);
  const remaining = money(view.remaining);
  const counting = view.status === 'open' || view.status === 'releasing';
  const reserved = !counting ? money(0) : spent.greaterThanOrEqualTo(remaining) ? money(0) : remaining.minus(spent);
  return { ...view, spent: formatAmount(spent), reserved: formatAmount(reserved) };
}

/** The API's error for a hold store error: same code, the figures a client acts on as members of the body. */
function apiError(error: unknown): unknown {
  if (!(error instanceof HoldError)) return error;
  const options: ConstructorParameters<typeof DrawdownError>[2] = { cause: error };
  if (error instanceof InsufficientCreditsError)
    options.extensions = {
      customer: error.customer,
      unit: error.unit,
      amount: error.amount,
      available: error.available,
      allowance: error.allowance,
    };
  if (error instanceof HoldRequestInvalidError)
    options.problems = [{ field: error.field, code: 'invalid', message: error.message }];
  return new DrawdownError(error.code as ErrorCode, error.message, options);
}

async function answered<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    throw apiError(error);
  }
}

export interface HoldApiDeps {
  holds: HoldStore;
  /** How long a release waits for usage already sent (DRAWDOWN_HOLD_RELEASE_GRACE_MS). */
  releaseGraceMs: number;
  live: LiveBalances;
  catalog: Catalog;
  metrics?: HoldMetrics;
  /** A hold was reserved or released: the customer's available moved (balance notices). */
  onChange?: (customer: string) => void;
}

/** What the hold store decides a (customer, unit) account by, from one live read. */
export function figuresFor(figures: LiveFigures, catalog: Catalog, unit: string): BalanceFigures {
  const covered = figures.coverage.get(unit);
  return {
    base: LiveBalances.baseOf(figures, unit),
    allowance: catalog.creditUnits.get(unit)?.allowedNegativeBalance ?? money(0),
    ...(covered === undefined ? {} : { covered }),
  };
}

function knownUnit(catalog: Catalog, unit: unknown, problems: Problems, field = 'unit'): string | undefined {
  if (typeof unit !== 'string' || !unitPattern.test(unit)) {
    problems.add(field, unit === undefined ? 'required' : 'type', `${field} must be a credit unit id`);
    return undefined;
  }
  if (!catalog.creditUnits.has(unit)) {
    problems.add(field, 'unknown_unit', `${field} ${JSON.stringify(unit)} is not a credit unit of the catalog`);
    return undefined;
  }
  return unit;
}

function refuse(problems: Problems): void {
  if (!problems.empty)
    throw new DrawdownError('request_invalid', problems.list[0]!.message, { problems: problems.list });
}

export function holdRoutes(deps: HoldApiDeps): Route[] {
  const { holds, live, catalog, metrics, releaseGraceMs, onChange } = deps;

  async function reserve(req: IncomingMessage, res: ServerResponse, [customerParam]: string[]): Promise<void> {
    const customer = checkCustomer(customerParam!);
    const body = await readJsonBody(req, 64 * 1024);
    if (!isPlainObject(body)) throw new DrawdownError('request_invalid', 'body must be a JSON object');
    const problems = new Problems();
    for (const key of Object.keys(body))
      if (!['unit', 'amount', 'ttl_ms', 'metadata'].includes(key))
        problems.add(key, 'unknown_field', `unknown field ${key} (unit, amount, ttl_ms, metadata)`);
    const unit = knownUnit(catalog, body.unit, problems);
    if (typeof body.amount !== 'string' && typeof body.amount !== 'number')
      problems.add('amount', body.amount === undefined ? 'required' : 'type', 'amount must be a decimal string');
    if (body.ttl_ms !== undefined && (typeof body.ttl_ms !== 'number' || !Number.isInteger(body.ttl_ms)))
      problems.add('ttl_ms', 'type', 'ttl_ms must be an integer number of milliseconds');
    const header = req.headers['idempotency-key'];
    const key = (Array.isArray(header) ? header[0] : header) ?? randomUUID();
    refuse(problems);
    // Numbers are taken as their shortest decimal text; strings keep every digit a client meant.
    const amount = typeof body.amount === 'number' ? String(body.amount) : (body.amount as string);
    try {
      const result = await answered(
        holds.reserve({
          customer,
          unit: unit!,
          amount,
          key,
          ...(body.ttl_ms === undefined ? {} : { ttlMs: body.ttl_ms as number }),
          ...(body.metadata === undefined ? {} : { metadata: body.metadata as Record<string, string> }),
        }),
      );
      if (result.created) metrics?.admitted.inc({ unit: unit! });
      const figures = await live.figures(customer);
      sendJson(
        res,
        201,
        { hold: holdJson(result.hold, figures), created: result.created, available: result.available },
        result.created ? {} : { 'idempotent-replayed': 'true' },
      );
      // After the answer: notices never hold it up, and a process dying while it evaluates them has answered.
      if (result.created) onChange?.(customer);
    } catch (error) {
      if (error instanceof DrawdownError && error.status < 500)
        metrics?.refused.inc({ unit: unit!, reason: error.code });
      throw error;
    }
  }

  async function release(req: IncomingMessage, res: ServerResponse, [holdId]: string[]): Promise<void> {
    const body = await readJsonBody(req, 4 * 1024);
    if (!isPlainObject(body)) throw new DrawdownError('request_invalid', 'body must be a JSON object');
    const problems = new Problems();
    for (const key of Object.keys(body))
      if (key !== 'wait_for_usage') problems.add(key, 'unknown_field', `unknown field ${key} (wait_for_usage)`);
    if (body.wait_for_usage !== undefined && typeof body.wait_for_usage !== 'boolean')
      problems.add('wait_for_usage', 'type', 'wait_for_usage must be true or false');
    refuse(problems);
    // By default usage sent before the release may still be on its way: the hold counts until it is in.
    const graceMs = body.wait_for_usage === false ? 0 : releaseGraceMs;
    const result = await answered(holds.release(holdId!, { graceMs }));
    if (result.changed) metrics?.released.inc({ unit: result.hold.unit });
    const figures = await live.figures(result.hold.customer);
    sendJson(res, 200, { hold: holdJson(result.hold, figures), released: result.changed });
    if (result.changed) {
      onChange?.(result.hold.customer);
      // A releasing hold keeps counting until its grace ends, when nothing writes: look again then.
      if (onChange !== undefined && graceMs > 0) setTimeout(() => onChange(result.hold.customer), graceMs + 50).unref();
    }
  }

  async function getHold(_req: IncomingMessage, res: ServerResponse, [holdId]: string[]): Promise<void> {
    const view = await answered(holds.get(holdId!));
    const parsed = parseHoldId(holdId!);
    const figures = parsed === undefined ? undefined : await live.figures(parsed.account.customer);
    sendJson(res, 200, holdJson(view, figures));
  }

  async function list(req: IncomingMessage, res: ServerResponse, [customerParam]: string[]): Promise<void> {
    const customer = checkCustomer(customerParam!);
    const params = queryParams(req);
    const problems = new Problems();
    const units = params.has('unit')
      ? [knownUnit(catalog, params.get('unit'), problems)!]
      : [...catalog.creditUnits.keys()].sort();
    refuse(problems);
    const [figures, ...accounts] = await Promise.all([
      live.figures(customer),
      ...units.map((unit) => answered(holds.list(customer, unit))),
    ]);
    const out: HoldJson[] = [];
    const held: Record<string, string> = {};
    for (const account of accounts) {
      let total = money(0);
      for (const view of account.holds) {
        const json = holdJson(view, figures);
        total = total.plus(json.reserved);
        out.push(json);
      }
      held[account.unit] = formatAmount(total);
    }
    sendJson(res, 200, { customer, held, holds: out });
  }

  async function entitlement(req: IncomingMessage, res: ServerResponse, [customerParam]: string[]): Promise<void> {
    const customer = checkCustomer(customerParam!);
    const params = queryParams(req);
    const problems = new Problems();
    const unit = knownUnit(catalog, params.get('unit') ?? undefined, problems);
    const amount = params.get('amount') ?? '0';
    if (!/^\d{1,18}(\.\d{1,9})?$/.test(amount))
      problems.add('amount', 'format', 'amount must be a decimal ≥ 0 with at most 9 fraction digits');
    refuse(problems);
    const figures = await live.figures(customer);
    const input = figuresFor(figures, catalog, unit!);
    // amount 0 asks "may this customer spend at all?": the store wants a positive amount, so ask for the least one.
    const asked = money(amount).isZero() ? '0.000000001' : amount;
    const result = await answered(
      holds.check({
        customer,
        unit: unit!,
        amount: asked,
        base: input.base,
        allowance: input.allowance,
        ...(input.covered === undefined ? {} : { covered: input.covered }),
      }),
    );
    const available = money(result.available);
    sendJson(res, 200, {
      customer,
      unit,
      amount: formatAmount(money(amount)),
      allowed: money(amount).isZero() ? !available.plus(result.allowance).isNegative() : result.allowed,
      available: result.available,
      allowance: result.allowance,
      held: result.held,
      as_of: new Date(figures.readAtMs).toISOString(),
    });
  }

  const handlers: Record<HoldRouteName, Route['handler']> = { reserve, list, entitlement, release, getHold };
  return holdRouteTable.map(({ name, ...route }) => ({ ...route, handler: handlers[name] }));
}

type HoldRouteName = 'reserve' | 'list' | 'entitlement' | 'release' | 'getHold';

/** The hold routes without their handlers: what holdRoutes serves, and what a process with holds off refuses. */
export const holdRouteTable: readonly (Omit<Route, 'handler'> & { name: HoldRouteName })[] = [
  { name: 'reserve', method: 'POST', path: new RegExp(`^/v1/customers/${customerPath}/holds$`), scope: 'ingest' },
  { name: 'list', method: 'GET', path: new RegExp(`^/v1/customers/${customerPath}/holds$`), scope: 'read' },
  {
    name: 'entitlement',
    method: 'GET',
    path: new RegExp(`^/v1/customers/${customerPath}/entitlement$`),
    scope: 'read',
  },
  { name: 'release', method: 'POST', path: new RegExp(`^/v1/holds/${holdPath}/release$`), scope: 'ingest' },
  { name: 'getHold', method: 'GET', path: new RegExp(`^/v1/holds/${holdPath}$`), scope: 'read' },
];

/** The balance with open holds subtracted: per unit, `held` (what they still reserve) and `available` after them. */
export async function balanceWithHolds(
  holds: HoldStore,
  catalog: Catalog,
  figures: LiveFigures,
): Promise<Balance & { units: (Balance['units'][number] & { held: string })[] }> {
  const balance = figures.balance;
  const units = new Set([...balance.units.map((u) => u.unit)]);
  const accounts = await Promise.all(
    [...catalog.creditUnits.keys()].map((unit) => answered(holds.list(balance.customer, unit))),
  );
  const heldByUnit = new Map<string, Decimal>();
  for (const account of accounts) {
    let total = money(0);
    for (const view of account.holds) total = total.plus(holdJson(view, figures).reserved);
    if (!total.isZero()) {
      heldByUnit.set(account.unit, total);
      units.add(account.unit);
    }
  }
  return {
    ...balance,
    units: [...units].sort().map((unit) => {
      const line = balance.units.find((u) => u.unit === unit);
      const held = heldByUnit.get(unit) ?? money(0);
      const before = line === undefined ? money(0) : money(line.available);
      const available = before.minus(held);
      const allowance = catalog.creditUnits.get(unit)?.allowedNegativeBalance ?? money(0);
      return {
        unit,
        ...unitNamesJson(catalog, unit, balance.customer, figures.readAtMs),
        settled: line?.settled ?? '0',
        pending: line?.pending ?? '0',
        held: formatAmount(held),
        available: formatAmount(available),
        display: formatAtPrecision(available, catalog.creditUnits.get(unit)?.precision ?? 2),
        over_limit: available.lessThan(allowance.negated()),
      };
    }),
  };
}
