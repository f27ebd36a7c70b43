/**
 * Read and settlement routes: balances, ledger, usage, purchases and
 * on-demand settlement runs. Request bodies are validated here, once.
 */
import { usageMinutePartitioned } from '../shared/clickhouse/usage-minute.js';
import type { PostedPurchase } from './notices/evaluator.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { DrawdownError } from '../shared/errors.js';
import { queryParams, readJsonBody, sendJson, type Route } from '../shared/http.js';
import { formatAmount, money, parseStoredDecimal } from '../shared/money.js';
import { sqlDateTime, sqlString } from '../shared/sql.js';
import {
  Problems,
  isPlainObject,
  refuseUnknownFields,
  readStorableTime,
  storableInstantMaxSec,
  storableInstantMinSec,
} from '../shared/validate.js';
import { balanceOf, unitNamesJson } from './balance.js';
import { readLedger, type LedgerEntry } from './ledger.js';
import { purchasePackage } from './purchases.js';
import { adjustmentReasonLengthMax, postAdjustment } from './adjustments.js';
import type { SettlementRunner } from './runner.js';
import { reportJson } from './report.js';
import { getRun, isRunId, listRuns, runsLimitDefault, runsLimitMax } from './run-history.js';
import { settledUntil } from '../shared/clickhouse/settlement-runs.js';
import { customerStatements, statementJson, statementsLimitMax } from './statement.js';
import { isCustomerId } from '../shared/events/customer.js';
import type { Logger } from '../shared/log.js';

/** A customer id in a route's path (percent-encoded characters allowed; checkCustomer decides). */
export const customerPath = '([A-Za-z0-9._:@%-]{1,384})';

/** `names`: the unit's names as the customer sees them (balance.ts unitNamesJson). */
export function entryJson(
  e: LedgerEntry,
  names: { name: string | null; internal_name: string | null },
): Record<string, unknown> {
  return {
    id: e.entryId,
    kind: e.kind,
    unit: e.unit,
    unit_name: names.name,
    unit_internal_name: names.internal_name,
    amount: formatAmount(e.amount),
    effective_at: new Date(e.effectiveAtSec * 1000).toISOString(),
    posted_at: new Date(e.postedAtSec * 1000).toISOString(),
    run_id: e.runId || null,
    meter: e.meter || null,
    dimensions: e.dimensions ? JSON.parse(e.dimensions) : null,
    // Adjustments for usage (late, or priced after being outstanding) name their line as usage entries do.
    quantity: e.kind === 'usage' || (e.kind === 'adjustment' && e.meter !== '') ? formatAmount(e.quantity) : null,
    rate_version: e.rateVersion || null,
    block: e.blockId || null,
    // When the block this entry opened or drew from expires (null: it never does, or the entry predates this field).
    block_expires_at: e.blockId && e.expiresAtSec > 0 ? new Date(e.expiresAtSec * 1000).toISOString() : null,
    source: e.source,
    // Who granted the block this entry opened or moved: null for purchases, adjustments and the negative balance.
    grant_source: e.grantSource ?? null,
    grant_origin: e.grantOrigin || null,
  };
}

export function checkCustomer(customer: string): string {
  if (!isCustomerId(customer))
    throw new DrawdownError('request_invalid', 'customer id must be 1–128 characters of [A-Za-z0-9._:@-]', {
      problems: [{ field: 'customer', code: 'format', message: 'must be 1–128 characters of [A-Za-z0-9._:@-]' }],
    });
  return customer;
}

export interface SettlementApiDeps {
  store: Store;
  catalog: Catalog;
  runner: SettlementRunner;
  now?: () => number;
  /** The balance to serve instead of the ledger-and-usage one (with credit holds: holds-service.ts). */
  balance?: (customer: string) => Promise<unknown>;
  /** A purchase was answered (201 or 200): notices publish purchase.posted (settlement/notices). */
  onPurchase?: (purchase: PostedPurchase) => Promise<void>;
  /** An adjustment was posted: the customer's balance moved. */
  onBalanceChange?: (customer: string) => void;
  log?: Logger;
}

export function settlementRoutes(deps: SettlementApiDeps): Route[] {
  const now = deps.now ?? Date.now;
  const { store, catalog } = deps;

  async function balance(_req: IncomingMessage, res: ServerResponse, [customer]: string[]): Promise<void> {
    const id = checkCustomer(customer!);
    sendJson(res, 200, deps.balance ? await deps.balance(id) : await balanceOf(store, catalog, id, now()));
  }

  async function ledger(req: IncomingMessage, res: ServerResponse, [customer]: string[]): Promise<void> {
    const params = queryParams(req);
    const limit = Number(params.get('limit') ?? '100');
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new DrawdownError('request_invalid', 'limit must be 1–1000');
    const after = params.get('after') ?? undefined;
    // The token's instant goes into SQL: one past what ClickHouse stores is not a token we gave out.
    if (
      after !== undefined &&
      !(/^\d{1,10}\|.+$/.test(after) && Number(after.slice(0, after.indexOf('|'))) <= storableInstantMaxSec)
    ) {
      throw new DrawdownError('request_invalid', 'after must be the next token of a previous page', {
        problems: [{ field: 'after', code: 'format', message: 'after must be the next token of a previous page' }],
      });
    }
    const page = await readLedger(store, checkCustomer(customer!), limit, after);
    const nowMs = now();
    const names = (unit: string) => unitNamesJson(catalog, unit, customer!, nowMs);
    sendJson(res, 200, { entries: page.entries.map((e) => entryJson(e, names(e.unit))), next: page.next ?? null });
  }

  async function statements(req: IncomingMessage, res: ServerResponse, [customer]: string[]): Promise<void> {
    const params = queryParams(req);
    const limit = Number(params.get('limit') ?? '12');
    if (!Number.isInteger(limit) || limit < 1 || limit > statementsLimitMax)
      throw new DrawdownError('request_invalid', `limit must be 1–${statementsLimitMax}`, {
        problems: [{ field: 'limit', code: 'range', message: `limit must be 1–${statementsLimitMax}` }],
      });
    const id = checkCustomer(customer!);
    const cursor = await settledUntil(store);
    const list = await customerStatements(store, catalog, id, now(), limit, cursor);
    sendJson(res, 200, {
      customer: id,
      settled_until: cursor === 0 ? null : new Date(cursor * 1000).toISOString(),
      statements: list.map(statementJson),
    });
  }

  async function usage(req: IncomingMessage, res: ServerResponse, [customer]: string[]): Promise<void> {
    const params = queryParams(req);
    const problems = new Problems();
    const nowSec = Math.floor(now() / 1000);
    // The defaults stay inside what ClickHouse stores, for any clock drawdown can run under.
    const fromSec = params.has('from')
      ? readStorableTime(problems, params.get('from'), 'from')
      : Math.max(nowSec - 86_400, storableInstantMinSec);
    const untilSec = params.has('until')
      ? readStorableTime(problems, params.get('until'), 'until')
      : Math.min(nowSec + 60, storableInstantMaxSec);
    // An empty or inverted range is a client mistake, not "no usage".
    if (fromSec !== undefined && untilSec !== undefined && untilSec <= fromSec)
      problems.add('until', 'range', 'until must be after from');
    const granularity = params.get('granularity') ?? 'hour';
    if (granularity !== 'hour' && granularity !== 'day')
      problems.add('granularity', 'enum', 'granularity must be hour or day');
    if (!problems.empty)
      throw new DrawdownError('request_invalid', problems.list[0]!.message, { problems: problems.list });
    const bucket = granularity === 'day' ? 'toStartOfDay(minute)' : 'toStartOfHour(minute)';
    // No row was flushed before its own minute: months flushed before the range are skipped whole.
    const flushedFilter = (await usageMinutePartitioned(store)) ? ` AND flushed_at >= ${sqlDateTime(fromSec!)}` : '';
    const rows = await store.query(
      `SELECT meter, dimensions, toUnixTimestamp(${bucket}) AS bucket, sum(quantity), max(quantity), sum(events)
       FROM usage_minute WHERE customer = ${sqlString(checkCustomer(customer!))}
         AND minute >= ${sqlDateTime(fromSec!)} AND minute < ${sqlDateTime(untilSec!)}${flushedFilter}
       GROUP BY meter, dimensions, bucket ORDER BY bucket, meter, dimensions`,
    );
    sendJson(res, 200, {
      customer,
      granularity,
      usage: rows.map(([meter, dimensions, bucketSec, sum, max, events]) => ({
        meter,
        dimensions: JSON.parse(dimensions!),
        start: new Date(Number(bucketSec) * 1000).toISOString(),
        quantity: formatAmount(parseStoredDecimal(catalog.meters.get(meter!)?.aggregation === 'max' ? max! : sum!)),
        events: Number(events),
      })),
    });
  }

  async function purchase(req: IncomingMessage, res: ServerResponse, [customer]: string[]): Promise<void> {
    const body = await readJsonBody(req);
    const problems = new Problems();
    if (!isPlainObject(body)) throw new DrawdownError('request_invalid', 'body must be a JSON object');
    if (typeof body.package !== 'string')
      problems.add('package', 'required', 'package must be the id of a credit package');
    const header = req.headers['idempotency-key'];
    const key =
      (Array.isArray(header) ? header[0] : header) ??
      (typeof body.id === 'string' ? body.id : undefined) ??
      randomUUID();
    if (key.length < 1 || key.length > 128)
      problems.add('Idempotency-Key', 'length', 'Idempotency-Key must be 1–128 characters');
    const nowSec = Math.floor(now() / 1000);
    const effectiveAtSec =
      body.effective_at === undefined ? undefined : readStorableTime(problems, body.effective_at, 'effective_at');
    if (effectiveAtSec !== undefined && effectiveAtSec > nowSec)
      problems.add('effective_at', 'range', 'effective_at may not be in the future');
    if (!problems.empty)
      throw new DrawdownError('request_invalid', problems.list[0]!.message, { problems: problems.list });
    // effective_at is passed only when the client gave it: a retry that leaves it out is the same purchase.
    const result = await purchasePackage(store, catalog, {
      customer: checkCustomer(customer!),
      packageId: body.package as string,
      idempotencyKey: key,
      nowSec,
      ...(effectiveAtSec === undefined ? {} : { effectiveAtSec }),
    });
    // Every answer publishes purchase.posted (one stream message per entry id), so a client that retries after
    // a failure here also gets the notice out. A failure to publish does not undo or hide the purchase.
    await deps
      .onPurchase?.({
        customer: result.entry.customer,
        unit: result.entry.unit,
        entryId: result.entry.entryId,
        packageId: body.package as string,
        amount: formatAmount(result.entry.amount),
        key,
        postedAtMs: result.entry.postedAtSec * 1000,
      })
      .catch((error: unknown) =>
        deps.log?.warn({ err: error, customer: result.entry.customer }, 'purchase.posted notice not published'),
      );
    sendJson(res, result.created ? 201 : 200, {
      entry: entryJson(result.entry, unitNamesJson(catalog, result.entry.unit, result.entry.customer, now())),
      created: result.created,
    });
  }

  async function adjustment(req: IncomingMessage, res: ServerResponse, [customer]: string[]): Promise<void> {
    const id = checkCustomer(customer!);
    const header = req.headers['idempotency-key'];
    const key = Array.isArray(header) ? header[0] : header;
    const body = await readJsonBody(req);
    if (!isPlainObject(body)) throw new DrawdownError('request_invalid', 'body must be a JSON object');
    const problems = new Problems();
    if (key === undefined || key.length < 1 || key.length > 128)
      problems.add('Idempotency-Key', 'required', 'an adjustment needs an Idempotency-Key of 1–128 characters');
    refuseUnknownFields(problems, body, '', ['unit', 'amount', 'reason', 'effective_at', 'expires_at']);
    const unit = typeof body.unit === 'string' ? body.unit : undefined;
    if (unit === undefined) problems.add('unit', 'required', 'unit must be a credit unit of the catalog');
    else if (!catalog.creditUnits.has(unit)) problems.add('unit', 'unknown', `credit unit ${unit} is not defined`);
    const amountText =
      typeof body.amount === 'string' && /^-?\d{1,18}(\.\d{1,9})?$/.test(body.amount) ? body.amount : undefined;
    const amount = amountText === undefined ? undefined : money(amountText);
    if (amount === undefined)
      problems.add('amount', 'format', 'amount must be a decimal string such as "25" or "-4.50" (≤ 9 fraction digits)');
    else if (amount.isZero()) problems.add('amount', 'range', 'amount must not be zero');
    const reason = typeof body.reason === 'string' ? body.reason.trim() : '';
    if (reason.length < 1 || reason.length > adjustmentReasonLengthMax)
      problems.add(
        'reason',
        'required',
        `reason must be 1–${adjustmentReasonLengthMax} characters: what an auditor reads`,
      );
    const nowSec = Math.floor(now() / 1000);
    const effectiveAtSec =
      body.effective_at === undefined ? nowSec : readStorableTime(problems, body.effective_at, 'effective_at');
    if (effectiveAtSec !== undefined && effectiveAtSec > nowSec)
      problems.add('effective_at', 'range', 'effective_at may not be in the future');
    const expiresAtSec =
      body.expires_at === undefined ? undefined : readStorableTime(problems, body.expires_at, 'expires_at');
    if (body.expires_at !== undefined && amount?.isNegative())
      problems.add('expires_at', 'not_allowed', 'only a credit (amount > 0) has a block that can expire');
    if (expiresAtSec !== undefined && effectiveAtSec !== undefined && expiresAtSec <= effectiveAtSec)
      problems.add('expires_at', 'range', 'expires_at must be after effective_at');
    if (!problems.empty)
      throw new DrawdownError('request_invalid', problems.list[0]!.message, { problems: problems.list });
    const result = await postAdjustment(store, {
      customer: id,
      unit: unit!,
      amount: amount!,
      reason,
      idempotencyKey: key!,
      nowSec,
      // Only when given: a retry that leaves it out (a second later) is the same adjustment.
      effectiveAtSec: body.effective_at === undefined ? undefined : effectiveAtSec!,
      expiresAtSec,
    });
    sendJson(res, result.created ? 201 : 200, {
      entry: entryJson(result.entry, unitNamesJson(catalog, result.entry.unit, result.entry.customer, now())),
      created: result.created,
    });
    // After the answer, as for holds: notices never hold it up.
    deps.onBalanceChange?.(id);
  }

  async function settlements(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonBody(req);
    if (!isPlainObject(body)) throw new DrawdownError('request_invalid', 'body must be a JSON object');
    const problems = new Problems();
    const untilSec =
      body.until === undefined ? Math.floor(now() / 60_000) * 60 : readStorableTime(problems, body.until, 'until');
    const fromSec = body.from === undefined ? undefined : readStorableTime(problems, body.from, 'from');
    if (!problems.empty)
      throw new DrawdownError('request_invalid', problems.list[0]!.message, { problems: problems.list });
    const report = await deps.runner.run({ untilSec: untilSec!, ...(fromSec === undefined ? {} : { fromSec }) });
    sendJson(res, 200, reportJson(report));
  }

  async function runs(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const params = queryParams(req);
    const problems = new Problems();
    const limit = Number(params.get('limit') ?? String(runsLimitDefault));
    if (!Number.isInteger(limit) || limit < 1 || limit > runsLimitMax)
      problems.add('limit', 'range', `limit must be 1–${runsLimitMax}`);
    const after = params.get('after') ?? undefined;
    if (after !== undefined && !isRunId(after))
      problems.add('after', 'format', 'after must be the next token of a previous page');
    if (!problems.empty)
      throw new DrawdownError('request_invalid', problems.list[0]!.message, { problems: problems.list });
    sendJson(res, 200, await listRuns(store, limit, after));
  }

  async function run(_req: IncomingMessage, res: ServerResponse, [encoded]: string[]): Promise<void> {
    const runId = decodeURIComponent(encoded!);
    const found = isRunId(runId) ? await getRun(store, runId) : undefined;
    if (found === undefined) throw new DrawdownError('not_found', `no settlement run ${JSON.stringify(runId)}`);
    sendJson(res, 200, found);
  }

  return [
    { method: 'GET', path: new RegExp(`^/v1/customers/${customerPath}/balance$`), scope: 'read', handler: balance },
    { method: 'GET', path: new RegExp(`^/v1/customers/${customerPath}/ledger$`), scope: 'read', handler: ledger },
    { method: 'GET', path: new RegExp(`^/v1/customers/${customerPath}/usage$`), scope: 'read', handler: usage },
    {
      method: 'GET',
      path: new RegExp(`^/v1/customers/${customerPath}/statements$`),
      scope: 'read',
      handler: statements,
    },
    {
      method: 'POST',
      path: new RegExp(`^/v1/customers/${customerPath}/purchases$`),
      scope: 'admin',
      handler: purchase,
    },
    {
      method: 'POST',
      path: new RegExp(`^/v1/customers/${customerPath}/adjustments$`),
      scope: 'admin',
      handler: adjustment,
    },
    { method: 'POST', path: /^\/v1\/settlements$/, scope: 'admin', handler: settlements },
    { method: 'GET', path: /^\/v1\/settlements$/, scope: 'admin', handler: runs },
    { method: 'GET', path: /^\/v1\/settlements\/([A-Za-z0-9:%]{1,64})$/, scope: 'admin', handler: run },
  ];
}
