/**
 * track()'s event: checked for the mistakes the gateway would refuse, with
 * `id` and `timestamp` filled in when missing. The gateway accepts or refuses
 * a batch whole, and a batch mixes events from many track() calls, so one
 * malformed event caught here is a whole batch of good events not refused
 * there. What only the gateway knows (which meters exist, its clock window)
 * is left to it.
 *
 * The rules mirror SPEC §2 and shared/events/event.ts; they are restated here so the
 * SDK carries no server code.
 */
import { randomUUID } from 'node:crypto';
import { DrawdownSdkError, type EventProblem } from './errors.js';

export interface TrackEvent {
  /** Idempotency key of the event, unique per customer; a random UUID when omitted. */
  id?: string;
  customer: string;
  /** A meter key defined in the gateway's catalog, e.g. `gpt-4o.input_tokens`. */
  meter: string;
  /** A number or a decimal string (exact: "0.000000001"); 1 when omitted. */
  quantity?: number | string;
  /** ms since epoch, a Date, or an ISO-8601 instant; now when omitted. */
  timestamp?: number | Date | string;
  dimensions?: Record<string, string>;
  /**
   * The credit hold this usage spends: the `id` hold() returned (docs/holds.md). Once the usage is rated the hold
   * stops reserving its cost. Usage naming a released, expired or unknown hold is counted as ordinary usage.
   */
  hold?: string;
}

/** What is sent: id and timestamp always present. */
export interface WireEvent {
  id: string;
  customer: string;
  meter: string;
  quantity?: number | string;
  timestamp: number | Date | string;
  dimensions?: Record<string, string>;
  hold?: string;
}

const limits = {
  idLengthMax: 128,
  customerLengthMax: 128,
  meterLengthMax: 256,
  dimensionKeysMax: 16,
  dimensionKeyLengthMax: 64,
  dimensionValueLengthMax: 128,
  holdLengthMax: 400,
} as const;
const customerPattern = /^[A-Za-z0-9._:@-]+$/;
const decimalPattern = /^(\d+)(?:\.(\d+))?$/;
/** A hold id's characters: base64url tokens joined by dots (as the server makes them). */
export const holdIdPattern = /^[A-Za-z0-9_.-]+$/;
const knownFields: ReadonlySet<string> = new Set([
  'id',
  'customer',
  'meter',
  'quantity',
  'timestamp',
  'dimensions',
  'hold',
]);
const hostileKeys: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

function quantityProblem(quantity: unknown): string | undefined {
  if (typeof quantity === 'number') {
    if (!Number.isFinite(quantity)) return 'quantity must be finite';
    if (quantity < 0) return 'quantity must be ≥ 0';
    // The gateway reads a number as its shortest round-trip text (0.1 is "0.1"), so its digits are counted here the
    // same way.
    const text = String(quantity);
    const exponent = /^(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
    if (exponent === null) return digitsProblem(text);
    const power = Number(exponent[3]);
    return power < 0
      ? digitsProblem(`0.${'0'.repeat(-power - 1)}${exponent[1]}${exponent[2] ?? ''}`)
      : 'quantity has more than 18 integer digits';
  }
  if (typeof quantity !== 'string') return 'quantity must be a number or a decimal string';
  return digitsProblem(quantity);
}

function digitsProblem(text: string): string | undefined {
  const match = decimalPattern.exec(text);
  if (match === null) return 'quantity must be a plain decimal ≥ 0 such as "12.5"';
  if (match[1]!.replace(/^0+(?=\d)/, '').length > 18) return 'quantity has more than 18 integer digits';
  if ((match[2] ?? '').replace(/0+$/, '').length > 9) return 'quantity has more than 9 fraction digits';
  return undefined;
}

function timestampProblem(timestamp: unknown): string | undefined {
  if (typeof timestamp === 'number')
    return Number.isSafeInteger(timestamp) && timestamp >= 0
      ? undefined
      : 'timestamp must be whole ms since epoch, ≥ 0';
  if (timestamp instanceof Date)
    return Number.isFinite(timestamp.getTime()) && timestamp.getTime() >= 0
      ? undefined
      : 'timestamp is an invalid Date';
  if (typeof timestamp === 'string')
    return Number.isNaN(Date.parse(timestamp)) ? 'timestamp must be an ISO-8601 instant' : undefined;
  return 'timestamp must be ms since epoch, a Date or an ISO-8601 string';
}

/** Every problem with one event, not just the first. */
export function eventProblems(event: unknown): EventProblem[] {
  const problems: EventProblem[] = [];
  const add = (field: string, code: string, message: string) => problems.push({ field, code, message });
  if (!isPlainObject(event)) {
    add('', 'event_type', 'event must be a plain object');
    return problems;
  }
  for (const key of Object.keys(event)) {
    if (hostileKeys.has(key)) add(key, 'hostile_key', `key ${key} is not allowed`);
    else if (!knownFields.has(key)) add(key, 'unknown_field', `unknown field ${key} (typo?)`);
  }
  const { id, customer, meter, quantity, timestamp, dimensions, hold } = event;
  if (id !== undefined && (typeof id !== 'string' || id.length < 1 || id.length > limits.idLengthMax)) {
    add('id', 'type', `id must be a string of 1–${limits.idLengthMax} characters`);
  }
  if (
    typeof customer !== 'string' ||
    customer.length < 1 ||
    customer.length > limits.customerLengthMax ||
    !customerPattern.test(customer)
  ) {
    add(
      'customer',
      customer === undefined ? 'required' : 'format',
      `customer must be 1–${limits.customerLengthMax} characters of [A-Za-z0-9._:@-]`,
    );
  }
  if (typeof meter !== 'string' || meter.length < 1 || meter.length > limits.meterLengthMax) {
    add('meter', meter === undefined ? 'required' : 'type', 'meter must be a non-empty string naming a meter');
  }
  if (quantity !== undefined) {
    const problem = quantityProblem(quantity);
    if (problem !== undefined) add('quantity', 'quantity', problem);
  }
  if (timestamp !== undefined) {
    const problem = timestampProblem(timestamp);
    if (problem !== undefined) add('timestamp', 'type', problem);
  }
  if (dimensions !== undefined) {
    if (!isPlainObject(dimensions)) {
      add('dimensions', 'type', 'dimensions must be an object of string to string');
    } else {
      const keys = Object.keys(dimensions);
      if (keys.length > limits.dimensionKeysMax)
        add('dimensions', 'too_many', `at most ${limits.dimensionKeysMax} dimensions`);
      for (const key of keys) {
        const value = dimensions[key];
        if (hostileKeys.has(key)) add(`dimensions.${key}`, 'hostile_key', `key ${key} is not allowed`);
        else if (key.length > limits.dimensionKeyLengthMax)
          add('dimensions', 'key_length', `dimension keys are at most ${limits.dimensionKeyLengthMax} characters`);
        else if (typeof value !== 'string') add(`dimensions.${key}`, 'type', 'dimension values must be strings');
        else if (value.length > limits.dimensionValueLengthMax)
          add(
            `dimensions.${key}`,
            'length',
            `dimension values are at most ${limits.dimensionValueLengthMax} characters`,
          );
      }
    }
  }
  if (hold !== undefined && !isHoldId(hold))
    add(
      'hold',
      typeof hold === 'string' ? 'format' : 'type',
      `hold must be a hold id (1–${limits.holdLengthMax} characters of [A-Za-z0-9_.-]) as hold() returned it`,
    );
  return problems;
}

export function isHoldId(value: unknown): value is string {
  return (
    typeof value === 'string' && value.length >= 1 && value.length <= limits.holdLengthMax && holdIdPattern.test(value)
  );
}

/**
 * Checks an event and returns what goes on the wire: a new object (the
 * caller's is never mutated) with `id` and `timestamp` filled in. The id is
 * generated here, once, so every retry of its batch carries the same id.
 */
export function prepareEvent(event: TrackEvent, nowMs: number): WireEvent {
  const problems = eventProblems(event);
  if (problems.length > 0) {
    throw new DrawdownSdkError(
      'event_invalid',
      `event is invalid: ${problems.map((p) => `${p.field || '(event)'}: ${p.message}`).join('; ')}`,
      { problems },
    );
  }
  const wire: WireEvent = {
    id: event.id ?? randomUUID(),
    customer: event.customer,
    meter: event.meter,
    timestamp: event.timestamp ?? nowMs,
  };
  if (event.quantity !== undefined) wire.quantity = event.quantity;
  if (event.dimensions !== undefined) wire.dimensions = event.dimensions;
  if (event.hold !== undefined) wire.hold = event.hold;
  return wire;
}
