/**
 * Credit holds from the SDK (docs/holds.md): hold() reserves credits before
 * expensive work, the usage names the hold (TrackEvent.hold), release()
 * gives back what is left; entitlement() asks without reserving.
 *
 *   hold(customer, {unit, amount, ttlMs?, metadata?, idempotencyKey?})   POST {holdsUrl}/v1/customers/{id}/holds
 *   release(holdId)                                                       POST {holdsUrl}/v1/holds/{id}/release
 *   entitlement(customer, unit, amount)                                   GET  {holdsUrl}/v1/customers/{id}/entitlement
 *
 * Arguments are checked before anything is sent (`argument_invalid`), as the
 * API checks them, restated here so the SDK carries no server code. A hold's
 * Idempotency-Key is chosen once per call (the caller's, or a random one) and
 * sent on every attempt, so a retried reserve whose answer was lost finds
 * the hold it made instead of reserving twice.
 */
import { randomUUID } from 'node:crypto';
import { callWithRetries, type Call, type CallAnswer } from './call.js';
import { DrawdownSdkError, type EventProblem, type InsufficientCredits } from './errors.js';
import { isHoldId } from './event.js';
import type { ResolvedOptions } from './options.js';
import type { RetryInfo } from './retry.js';

/** A hold as the API serves it (snake_case, like every API body; docs/openapi.yaml `Hold`). */
export interface Hold {
  /** Name it in usage events (`hold`) and in release(). */
  id: string;
  customer: string;
  unit: string;
  /** `open` until released or expired (`closed` is unused today). */
  status: 'open' | 'releasing' | 'released' | 'expired' | 'closed';
  /** Decimal strings, exact. */
  amount: string;
  remaining: string;
  consumed: string;
  created_at: string;
  expires_at: string | null;
  closed_at: string | null;
  metadata: Record<string, string> | null;
  /** Live cost of the rated usage naming this hold. */
  spent: string;
  /** What it still subtracts from available: max(0, remaining − spent) while open, 0 once closed. */
  reserved: string;
}

/** hold()'s answer: the hold, and what the reserve said of it. */
export interface ReservedHold extends Hold {
  /** false: this idempotency key had reserved the hold before (check `status`: it may since have closed). */
  created: boolean;
  /** The customer's available credits in this unit after the reserve, as of the decision. */
  available: string;
}

export interface HoldRequest {
  /** A credit unit of the catalog, e.g. `credits`. */
  unit: string;
  /** Credits to reserve: above 0, below 10^18, at most 9 fraction digits. A decimal string keeps every digit. */
  amount: string | number;
  /** Time to live in ms; the server's default (5 min) when omitted, at most its maximum (1 h). */
  ttlMs?: number;
  /** Up to 16 string labels (keys of [A-Za-z0-9_.:-]), e.g. your request id. */
  metadata?: Record<string, string>;
  /**
   * Names the hold: the same key (for the same customer and unit) is the same hold, however often it is sent.
   * Pass your request id; when omitted a random key is made for this call (still reused by its retries).
   */
  idempotencyKey?: string;
}

export interface ReleasedHold {
  hold: Hold;
  /** false: it was already released or expired; nothing changed. */
  released: boolean;
}

export interface Entitlement {
  customer: string;
  unit: string;
  amount: string;
  /** available + allowance ≥ amount. An answer, not a promise: only a hold reserves. */
  allowed: boolean;
  available: string;
  allowance: string;
  held: string;
  /** When the live figures were read (ISO-8601). */
  as_of: string;
}

const customerPattern = /^[A-Za-z0-9._:@-]{1,128}$/;
const unitPattern = /^[A-Za-z0-9._:@-]{1,64}$/;
const idempotencyKeyPattern = /^[\x21-\x7e]{1,128}$/;
const metadataKeyPattern = /^[A-Za-z0-9_.:-]{1,64}$/;
const metadataEntriesMax = 16;
const hostileKeys: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * An amount as the API reads it exactly: a plain decimal with at most 18
 * integer and 9 fraction digits, canonical ("0.50" → "0.5"). A number is
 * taken as its shortest round-trip text (0.1 is "0.1"), with an exponent
 * written out (1e-7 is "0.0000001"). undefined when it is not one.
 */
export function canonicalAmount(value: unknown): string | undefined {
  let text: string;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return undefined;
    text = String(value);
    const exponent = /^(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
    if (exponent !== null) {
      const power = Number(exponent[3]);
      if (power >= 0) return undefined; // ≥ 1e21: more than 18 integer digits
      text = `0.${'0'.repeat(-power - 1)}${exponent[1]}${exponent[2] ?? ''}`;
    }
  } else if (typeof value === 'string') {
    text = value;
  } else {
    return undefined;
  }
  const match = /^(\d+)(?:\.(\d+))?$/.exec(text);
  if (match === null) return undefined;
  const integer = match[1]!.replace(/^0+(?=\d)/, '');
  const fraction = (match[2] ?? '').replace(/0+$/, '');
  if (integer.length > 18 || fraction.length > 9) return undefined;
  return fraction === '' ? integer : `${integer}.${fraction}`;
}

function refuse(what: string, problems: EventProblem[]): void {
  if (problems.length === 0) return;
  throw new DrawdownSdkError(
    'argument_invalid',
    `${what}: ${problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`,
    { problems },
  );
}

function checkCustomer(customer: unknown, problems: EventProblem[]): void {
  if (typeof customer !== 'string' || !customerPattern.test(customer))
    problems.push({ field: 'customer', code: 'format', message: 'must be 1–128 characters of [A-Za-z0-9._:@-]' });
}

function checkUnit(unit: unknown, problems: EventProblem[]): void {
  if (typeof unit !== 'string' || !unitPattern.test(unit))
    problems.push({
      field: 'unit',
      code: 'format',
      message: 'must be a credit unit id, 1–64 characters of [A-Za-z0-9._:@-]',
    });
}

function checkMetadata(metadata: unknown, problems: EventProblem[]): void {
  if (!isPlainObject(metadata)) {
    problems.push({ field: 'metadata', code: 'type', message: 'must be an object of string to string' });
    return;
  }
  const keys = Object.keys(metadata);
  if (keys.length > metadataEntriesMax)
    problems.push({ field: 'metadata', code: 'too_many', message: `may have at most ${metadataEntriesMax} entries` });
  for (const key of keys) {
    if (hostileKeys.has(key) || !metadataKeyPattern.test(key))
      problems.push({
        field: `metadata.${key.slice(0, 64)}`,
        code: 'key',
        message: 'keys must be 1–64 characters of [A-Za-z0-9_.:-]',
      });
    else if (typeof metadata[key] !== 'string')
      problems.push({ field: `metadata.${key}`, code: 'type', message: 'must be a string' });
  }
}

function stringMember(json: Record<string, unknown> | undefined, name: string): string {
  const value = json?.[name];
  return typeof value === 'string' ? value : '';
}

function isHoldJson(value: unknown): value is Hold {
  return isPlainObject(value) && typeof value.id === 'string' && typeof value.status === 'string';
}

/** The calls; the client owns one and checks its own state (closed) before using it. */
export class HoldCalls {
  readonly #options: ResolvedOptions;
  readonly #onRetry: (info: RetryInfo) => void;

  constructor(options: ResolvedOptions, onRetry: (info: RetryInfo) => void) {
    this.#options = options;
    this.#onRetry = onRetry;
  }

  async hold(customer: string, request: HoldRequest): Promise<ReservedHold> {
    const problems: EventProblem[] = [];
    checkCustomer(customer, problems);
    if (!isPlainObject(request)) {
      problems.push({ field: '(request)', code: 'type', message: 'must be an object {unit, amount, …}' });
      refuse('hold()', problems);
    }
    checkUnit(request.unit, problems);
    const amount = canonicalAmount(request.amount);
    if (amount === undefined || /^0$/.test(amount))
      problems.push({
        field: 'amount',
        code: 'format',
        message: 'must be a decimal above 0 and below 10^18 with at most 9 fraction digits',
      });
    if (request.ttlMs !== undefined && (!Number.isSafeInteger(request.ttlMs) || request.ttlMs < 1))
      problems.push({ field: 'ttlMs', code: 'type', message: 'must be a whole number of ms, at least 1' });
    if (request.metadata !== undefined) checkMetadata(request.metadata, problems);
    if (
      request.idempotencyKey !== undefined &&
      (typeof request.idempotencyKey !== 'string' || !idempotencyKeyPattern.test(request.idempotencyKey))
    )
      problems.push({ field: 'idempotencyKey', code: 'format', message: 'must be 1–128 printable ASCII characters' });
    refuse('hold()', problems);

    const idempotencyKey = request.idempotencyKey ?? `sdk-hold-${randomUUID()}`;
    const body: Record<string, unknown> = { unit: request.unit, amount };
    if (request.ttlMs !== undefined) body.ttl_ms = request.ttlMs;
    if (request.metadata !== undefined) body.metadata = request.metadata;
    const what = `hold of ${amount} ${request.unit} for ${customer} (Idempotency-Key ${idempotencyKey})`;
    const answer = await this.#call({
      operation: 'hold',
      what,
      method: 'POST',
      url: `${this.#options.holdsUrl}/v1/customers/${encodeURIComponent(customer)}/holds`,
      idempotencyKey,
      body,
    });
    if (answer.status === 402 && answer.json?.code === 'insufficient_credits') {
      const credits: InsufficientCredits = {
        customer: stringMember(answer.json, 'customer') || customer,
        unit: stringMember(answer.json, 'unit') || request.unit,
        amount: stringMember(answer.json, 'amount') || amount!,
        available: stringMember(answer.json, 'available'),
        allowance: stringMember(answer.json, 'allowance'),
      };
      throw new DrawdownSdkError(
        'insufficient_credits',
        `${what} refused: ${credits.available} available, allowed negative balance ${credits.allowance}`,
        { status: 402, problem: answer.json, credits, idempotencyKey },
      );
    }
    const json = this.#expect(answer, what, idempotencyKey);
    if (!isHoldJson(json.hold) || typeof json.created !== 'boolean' || typeof json.available !== 'string')
      throw this.#invalid(answer, what, idempotencyKey);
    return { ...json.hold, created: json.created, available: json.available };
  }

  /**
   * Releases a hold. By default it keeps counting for the server's release grace so usage sent just before is
   * counted first (call flush() before, so it has left this process); `waitForUsage: false` ends it now, for work
   * that never ran.
   */
  async release(holdId: string, options: { waitForUsage?: boolean } = {}): Promise<ReleasedHold> {
    if (!isHoldId(holdId))
      refuse('release()', [
        { field: 'holdId', code: 'format', message: 'must be a hold id (1–400 characters of [A-Za-z0-9_.-])' },
      ]);
    const what = `release of hold ${holdId}`;
    const answer = await this.#call({
      operation: 'release',
      what,
      method: 'POST',
      url: `${this.#options.holdsUrl}/v1/holds/${encodeURIComponent(holdId)}/release`,
      ...(options.waitForUsage === false ? { body: { wait_for_usage: false } } : {}),
    });
    const json = this.#expect(answer, what, undefined);
    if (!isHoldJson(json.hold) || typeof json.released !== 'boolean') throw this.#invalid(answer, what, undefined);
    return { hold: json.hold, released: json.released };
  }

  async entitlement(customer: string, unit: string, amount: string | number): Promise<Entitlement> {
    const problems: EventProblem[] = [];
    checkCustomer(customer, problems);
    checkUnit(unit, problems);
    const canonical = canonicalAmount(amount);
    if (canonical === undefined)
      problems.push({
        field: 'amount',
        code: 'format',
        message: 'must be a decimal ≥ 0 with at most 18 integer and 9 fraction digits',
      });
    refuse('entitlement()', problems);
    const what = `entitlement to ${canonical} ${unit} for ${customer}`;
    const query = `unit=${encodeURIComponent(unit)}&amount=${canonical}`;
    const answer = await this.#call({
      operation: 'entitlement',
      what,
      method: 'GET',
      url: `${this.#options.holdsUrl}/v1/customers/${encodeURIComponent(customer)}/entitlement?${query}`,
    });
    const json = this.#expect(answer, what, undefined);
    if (typeof json.allowed !== 'boolean' || typeof json.available !== 'string')
      throw this.#invalid(answer, what, undefined);
    return json as unknown as Entitlement;
  }

  #call(call: Call): Promise<CallAnswer> {
    return callWithRetries(this.#options, call, this.#onRetry);
  }

  /** The 2xx body, or the refusal as a DrawdownSdkError. */
  #expect(answer: CallAnswer, what: string, idempotencyKey: string | undefined): Record<string, unknown> {
    if (answer.status >= 200 && answer.status < 300) {
      if (answer.json === undefined) throw this.#invalid(answer, what, idempotencyKey);
      return answer.json;
    }
    const code = typeof answer.json?.code === 'string' ? answer.json.code : undefined;
    const detail = typeof answer.json?.detail === 'string' ? `: ${answer.json.detail}` : '';
    // No such route: the process at holdsUrl serves no holds (a gateway, or settlement without NATS).
    const hint = code === 'not_found' ? ` (is holdsUrl ${this.#options.holdsUrl} a settlement service with NATS?)` : '';
    throw new DrawdownSdkError(
      'request_rejected',
      `${what} refused with ${answer.status}${code === undefined ? '' : ` ${code}`}${detail}${hint}`,
      {
        status: answer.status,
        ...(answer.json === undefined ? {} : { problem: answer.json }),
        problems: Array.isArray(answer.json?.errors) ? (answer.json.errors as EventProblem[]) : [],
        ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
      },
    );
  }

  #invalid(answer: CallAnswer, what: string, idempotencyKey: string | undefined): DrawdownSdkError {
    return new DrawdownSdkError(
      'response_invalid',
      `${what}: answered ${answer.status} without the JSON body the API documents`,
      { status: answer.status, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) },
    );
  }
}
