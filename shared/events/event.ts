/**
 * The usage event schema (SPEC §2), enforced identically by the gateway
 * (which rejects a batch with any bad event) and by the rater's workers
 * (which normalise what the gateway accepted).
 */
import type { MeterDefinitions } from './meters.js';
import { parseQuantity } from '../quantity.js';
import { Problems, hostileKeys, isPlainObject, parseIsoInstant } from '../validate.js';
import { customerIdLengthMax, isCustomerId } from './customer.js';

export interface UsageEvent {
  id: string;
  customer: string;
  meter: string;
  /** Quantity × 10^9. */
  scaled: bigint;
  timestampMs: number;
  /** Canonical JSON of the declared dimensions present, keys sorted; "{}" when none. */
  dimensions: string;
  /**
   * The credit hold this usage spends (settlement/holds), '' when none. Only its form is checked here: an id
   * that names no open hold is ordinary usage (docs/holds.md).
   */
  hold: string;
}

export const eventLimits = {
  idLengthMax: 128,
  customerLengthMax: customerIdLengthMax,
  dimensionKeysMax: 16,
  dimensionValueLengthMax: 128,
  dimensionKeyLengthMax: 64,
  holdLengthMax: 400,
} as const;

/** A hold id's characters: base64url tokens joined by dots (settlement/holds/hold-ids.ts makes them). */
const holdIdPattern = /^[A-Za-z0-9_.-]+$/;

/** Time bounds an event's timestamp must fall in, relative to when the batch was received. */
export interface TimestampWindow {
  receivedMs: number;
  lateMs: number;
  skewMs: number;
}

const knownFields: ReadonlySet<string> = new Set([
  'id',
  'customer',
  'meter',
  'quantity',
  'timestamp',
  'dimensions',
  'hold',
]);

function parseTimestamp(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (value instanceof Date) {
    const ms = value.getTime();
    return Number.isFinite(ms) && ms >= 0 ? Math.floor(ms) : undefined;
  }
  if (typeof value === 'bigint')
    return value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : undefined;
  if (typeof value === 'string') {
    const ms = parseIsoInstant(value);
    return ms !== undefined && ms >= 0 ? ms : undefined;
  }
  return undefined;
}

/**
 * Validates one decoded event. Problems are added with the event's index;
 * the return value is undefined exactly when a problem was added.
 * The gateway's `window` is around its clock at receipt; the rater's is
 * around the moment JetStream stored the message (rater/window.ts), never
 * its own clock, so a batch rated late is not refused for being late.
 * `undefined` checks no window.
 */
export function parseEvent(
  raw: unknown,
  index: number,
  meters: MeterDefinitions,
  window: TimestampWindow | undefined,
  problems: Problems,
): UsageEvent | undefined {
  if (!isPlainObject(raw)) {
    problems.add('', 'event_type', 'event must be a map/object', index);
    return undefined;
  }
  const before = problems.list.length;
  for (const key of Object.keys(raw)) {
    if (hostileKeys.has(key)) problems.add(key, 'hostile_key', `key ${key} is not allowed`, index);
    else if (!knownFields.has(key)) problems.add(key, 'unknown_field', `unknown field ${key} (typo?)`, index);
  }

  const { id, customer, meter, quantity, timestamp, dimensions, hold } = raw;
  if (typeof id !== 'string' || id.length < 1 || id.length > eventLimits.idLengthMax) {
    problems.add(
      'id',
      typeof id === 'string' ? 'length' : 'type',
      `id must be a string of 1–${eventLimits.idLengthMax} characters`,
      index,
    );
  }
  if (
    typeof customer !== 'string' ||
    customer.length < 1 ||
    customer.length > eventLimits.customerLengthMax ||
    !isCustomerId(customer)
  ) {
    problems.add(
      'customer',
      typeof customer === 'string' ? 'format' : 'type',
      `customer must be 1–${eventLimits.customerLengthMax} characters of [A-Za-z0-9._:@-]`,
      index,
    );
  }
  const definition = typeof meter === 'string' && Object.hasOwn(meters, meter) ? meters[meter] : undefined;
  if (typeof meter !== 'string') problems.add('meter', 'type', 'meter must be a string', index);
  else if (definition === undefined)
    problems.add('meter', 'unknown_meter', `meter ${JSON.stringify(meter.slice(0, 128))} is not defined`, index);

  let scaled = 1_000_000_000n;
  if (quantity !== undefined) {
    const parsed = parseQuantity(quantity);
    if (parsed.ok) scaled = parsed.scaled;
    else problems.add('quantity', parsed.problem, parsed.message, index);
  }

  const timestampMs = parseTimestamp(timestamp);
  if (timestampMs === undefined) {
    problems.add(
      'timestamp',
      timestamp === undefined ? 'required' : 'type',
      'timestamp must be ms since epoch, a MessagePack timestamp or an ISO-8601 instant with a zone',
      index,
    );
  } else if (window !== undefined) {
    if (timestampMs < window.receivedMs - window.lateMs)
      problems.add(
        'timestamp',
        'timestamp_too_old',
        `timestamp is older than the accepted lateness (${window.lateMs} ms)`,
        index,
      );
    else if (timestampMs > window.receivedMs + window.skewMs)
      problems.add(
        'timestamp',
        'timestamp_in_future',
        `timestamp is further in the future than the accepted skew (${window.skewMs} ms)`,
        index,
      );
  }

  let canonicalDimensions = '{}';
  if (dimensions !== undefined) {
    if (!isPlainObject(dimensions)) {
      problems.add('dimensions', 'type', 'dimensions must be a map of string to string', index);
    } else {
      const keys = Object.keys(dimensions);
      if (keys.length > eventLimits.dimensionKeysMax)
        problems.add('dimensions', 'too_many', `at most ${eventLimits.dimensionKeysMax} dimensions`, index);
      const kept: [string, string][] = [];
      for (const key of keys) {
        const value = dimensions[key];
        if (hostileKeys.has(key)) problems.add(`dimensions.${key}`, 'hostile_key', `key ${key} is not allowed`, index);
        else if (key.length > eventLimits.dimensionKeyLengthMax)
          problems.add(
            'dimensions',
            'key_length',
            `dimension keys are at most ${eventLimits.dimensionKeyLengthMax} characters`,
            index,
          );
        else if (typeof value !== 'string')
          problems.add(`dimensions.${key}`, 'type', 'dimension values must be strings', index);
        else if (value.length > eventLimits.dimensionValueLengthMax)
          problems.add(
            `dimensions.${key}`,
            'length',
            `dimension values are at most ${eventLimits.dimensionValueLengthMax} characters`,
            index,
          );
        else if (definition?.dimensions.includes(key)) kept.push([key, value]);
      }
      if (kept.length > 0) {
        kept.sort((a, b) => (a[0] < b[0] ? -1 : 1));
        canonicalDimensions = JSON.stringify(Object.fromEntries(kept));
      }
    }
  }

  if (
    hold !== undefined &&
    (typeof hold !== 'string' ||
      hold.length < 1 ||
      hold.length > eventLimits.holdLengthMax ||
      !holdIdPattern.test(hold))
  ) {
    problems.add(
      'hold',
      typeof hold === 'string' ? 'format' : 'type',
      `hold must be a hold id (1–${eventLimits.holdLengthMax} characters of [A-Za-z0-9_.-]) as POST /v1/customers/{id}/holds returned it`,
      index,
    );
  }

  if (problems.list.length > before) return undefined;
  return {
    id: id as string,
    customer: customer as string,
    meter: meter as string,
    scaled,
    timestampMs: timestampMs!,
    dimensions: canonicalDimensions,
    hold: (hold as string | undefined) ?? '',
  };
}
