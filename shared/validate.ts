/**
 * Small helpers for validating untrusted JSON-like input at a boundary while
 * collecting every problem (not just the first), each named by its path.
 */
import type { FieldProblem } from './errors.js';

export class Problems {
  readonly list: FieldProblem[] = [];

  add(field: string, code: string, message: string, index?: number): void {
    this.list.push(index === undefined ? { field, code, message } : { index, field, code, message });
  }

  get empty(): boolean {
    return this.list.length === 0;
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Keys that reach a prototype when assigned; msgpackr rewrites `__proto__` to `__proto_`. */
export const hostileKeys: ReadonlySet<string> = new Set(['__proto__', '__proto_', 'constructor', 'prototype']);

/**
 * Edit distance counting a swap of neighbours as one edit (optimal string alignment), for naming the field a typo
 * most likely meant; inputs are field names, a few dozen characters.
 */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * Refuses every member of `value` not in `known`, naming it and the field it
 * most likely meant: a misspelt optional field would otherwise be ignored and
 * its default silently used (`agregation` → a sum meter).
 */
export function refuseUnknownFields(
  problems: Problems,
  value: Record<string, unknown>,
  at: string,
  known: readonly string[],
): void {
  for (const key of Object.keys(value)) {
    if (known.includes(key) || hostileKeys.has(key)) continue;
    const near = known
      .map((k) => ({ k, d: distance(key.toLowerCase(), k.toLowerCase()) }))
      .filter((x) => x.d <= Math.max(2, Math.floor(x.k.length / 3)))
      .sort((x, y) => x.d - y.d)[0];
    const field = at === '' ? key : `${at}.${key}`;
    problems.add(
      field,
      'unknown_field',
      `${field} is not a known field${near ? ` (did you mean ${near.k}?)` : ''}; known: ${known.join(', ')}`,
    );
  }
}

export function readString(
  problems: Problems,
  value: unknown,
  field: string,
  rules: { min?: number; max?: number; pattern?: RegExp; optional?: boolean } = {},
): string | undefined {
  if (value === undefined && rules.optional) return undefined;
  if (typeof value !== 'string') {
    problems.add(field, 'type', `${field} must be a string`);
    return undefined;
  }
  const min = rules.min ?? 1;
  if (value.length < min || (rules.max !== undefined && value.length > rules.max)) {
    problems.add(field, 'length', `${field} must be ${min}–${rules.max ?? '∞'} characters`);
    return undefined;
  }
  if (rules.pattern && !rules.pattern.test(value)) {
    problems.add(field, 'format', `${field} does not match ${rules.pattern}`);
    return undefined;
  }
  return value;
}

export function readDecimalText(
  problems: Problems,
  value: unknown,
  field: string,
  rules: { optional?: boolean; positive?: boolean } = {},
): string | undefined {
  if (value === undefined && rules.optional) return undefined;
  const text = typeof value === 'number' && Number.isFinite(value) ? String(value) : value;
  if (typeof text !== 'string' || !/^-?\d+(\.\d+)?$/.test(text)) {
    problems.add(field, 'type', `${field} must be a decimal number or string such as "5.00"`);
    return undefined;
  }
  if (text.startsWith('-') || (rules.positive && /^0+(\.0+)?$/.test(text))) {
    problems.add(field, 'range', `${field} must be ${rules.positive ? '> 0' : '≥ 0'}`);
    return undefined;
  }
  return text;
}

export function readInstant(problems: Problems, value: unknown, field: string): number | undefined {
  const ms = typeof value === 'string' ? parseIsoInstant(value) : undefined;
  if (ms !== undefined) return ms;
  problems.add(field, 'format', `${field} must be an ISO-8601 instant with a zone, e.g. 2026-01-01T00:00:00Z`);
  return undefined;
}

/** ISO-8601 date-time with an explicit zone: local times would depend on the machine. */
const isoInstant = /^(\d{4})-(\d{2})-(\d{2})T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * ms since epoch for an ISO-8601 instant with a zone, or undefined. Refuses
 * calendar dates that do not exist (2026-02-30), which Date.parse would
 * silently roll over into the next month.
 */
export function parseIsoInstant(text: string): number | undefined {
  const match = isoInstant.exec(text);
  if (match === null) return undefined;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  if (month < 1 || month > 12 || day < 1 || day > new Date(Date.UTC(year, month, 0)).getUTCDate()) return undefined;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * The instants every time parameter may name: what ClickHouse's
 * DateTime('UTC') stores on both engines we run. 18.16 keeps UInt32 seconds
 * (up to 2106-02-07T06:28:15Z); current ClickHouse documents DateTime up to
 * 2105-12-31T23:59:59Z. Outside that, an inserted or compared value wraps
 * silently (a purchase dated 1970, a usage query that answers nothing), so
 * values are refused before they reach SQL.
 */
export const storableInstantMinSec = 0;
export const storableInstantMaxSec = 4_291_747_199;
const storableRange = '1970-01-01T00:00:00Z to 2105-12-31T23:59:59Z';

/**
 * A time parameter (query string or JSON body) as whole seconds since the
 * epoch: an ISO-8601 instant with a zone, or ms since the epoch (a number or a
 * string of digits). Adds a `format` or `range` problem naming `field` and
 * returns undefined when it is neither, or outside what ClickHouse stores.
 */
export function readStorableTime(problems: Problems, value: unknown, field: string): number | undefined {
  let ms: number | undefined;
  if (typeof value === 'number') ms = Number.isSafeInteger(value) ? value : undefined;
  else if (typeof value === 'string') ms = /^\d{1,20}$/.test(value) ? Number(value) : parseIsoInstant(value);
  if (ms === undefined) {
    problems.add(
      field,
      'format',
      `${field} must be an ISO-8601 instant with a zone (e.g. 2026-01-01T00:00:00Z) or ms since the epoch`,
    );
    return undefined;
  }
  const sec = Math.floor(ms / 1000);
  if (!(sec >= storableInstantMinSec && sec <= storableInstantMaxSec)) {
    problems.add(field, 'range', `${field} must lie from ${storableRange}`);
    return undefined;
  }
  return sec;
}
