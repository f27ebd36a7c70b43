import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeBatch, expectEventArray, problemsListedMax, validateEvents } from './batch.js';
import type { MeterDefinitions } from '../../catalog/model.js';
import { DrawdownError, type FieldProblem } from '../errors.js';
import { eventLimits, parseEvent, type TimestampWindow, type UsageEvent } from './event.js';
import { Problems } from '../validate.js';

const meters: MeterDefinitions = {
  'gpt-4o.input_tokens': { aggregation: 'sum', dimensions: [] },
  images: { aggregation: 'sum', dimensions: ['input', 'model', 'resolution'] },
};

// A fixed clock: the batch arrives at noon, accepts 24 h of lateness and 5 min of skew.
const receivedMs = Date.parse('2026-03-01T12:00:00Z');
const window: TimestampWindow = { receivedMs, lateMs: 24 * 3_600_000, skewMs: 5 * 60_000 };
const minuteAgoMs = receivedMs - 60_000;

const packr = new Packr({ useRecords: false });
const encoder = new TextEncoder();

function event(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { id: 'evt-1', customer: 'acme', meter: 'gpt-4o.input_tokens', timestamp: minuteAgoMs, ...overrides };
}

function without(field: string): Record<string, unknown> {
  const raw = event();
  delete raw[field];
  return raw;
}

/** `null` stands for "no window", as the rater calls parseEvent. */
function parse(
  raw: unknown,
  timeWindow: TimestampWindow | null = window,
): { event: UsageEvent | undefined; problems: FieldProblem[] } {
  const problems = new Problems();
  const parsed = parseEvent(raw, 7, meters, timeWindow ?? undefined, problems);
  return { event: parsed, problems: problems.list };
}

function accepted(raw: unknown, timeWindow?: TimestampWindow | null): UsageEvent {
  const { event: parsed, problems } = parse(raw, timeWindow);
  expect(problems).toEqual([]);
  expect(parsed).toBeDefined();
  return parsed!;
}

/** The single problem an event has, as (field, code); the index is the one passed to parseEvent. */
function onlyProblem(raw: unknown, timeWindow?: TimestampWindow | null): { field: string; code: string } {
  const { event: parsed, problems } = parse(raw, timeWindow);
  expect(parsed).toBeUndefined();
  expect(problems).toHaveLength(1);
  expect(problems[0]!.index).toBe(7);
  expect(problems[0]!.message.length).toBeGreaterThan(0);
  return { field: problems[0]!.field, code: problems[0]!.code };
}

function thrown(fn: () => unknown): DrawdownError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(DrawdownError);
    return error as DrawdownError;
  }
  throw new Error('expected a DrawdownError; nothing was thrown');
}

describe('parseEvent, given a valid event', () => {
  it('when quantity is omitted, then it defaults to 1 (scaled 10^9) and dimensions to "{}"', () => {
    expect(accepted(event())).toEqual({
      id: 'evt-1',
      customer: 'acme',
      meter: 'gpt-4o.input_tokens',
      scaled: 1_000_000_000n,
      timestampMs: minuteAgoMs,
      dimensions: '{}',
      hold: '',
    });
  });

  it('when it names a hold, then the hold id is kept as given, whether or not such a hold exists', () => {
    expect(accepted(event({ hold: 'YWNtZQ.Y3JlZGl0cw.abcdefghijklmnop' })).hold).toBe(
      'YWNtZQ.Y3JlZGl0cw.abcdefghijklmnop',
    );
    expect(accepted(event({ hold: 'h'.repeat(400) })).hold).toBe('h'.repeat(400));
  });

  it('when quantity is a decimal string, then it is scaled exactly', () => {
    expect(accepted(event({ quantity: '2000000.5' })).scaled).toBe(2_000_000_500_000_000n);
    expect(accepted(event({ quantity: 0 })).scaled).toBe(0n);
  });

  it('when dimensions are given, then only declared keys are kept, sorted, as canonical JSON', () => {
    const parsed = accepted(
      event({ meter: 'images', dimensions: { resolution: '1K', model: 'Nano Banana', color: 'red', input: 'prompt' } }),
    );
    expect(parsed.dimensions).toBe('{"input":"prompt","model":"Nano Banana","resolution":"1K"}');
  });

  it('when the same dimensions arrive in another key order, then the canonical text is identical', () => {
    const a = accepted(event({ meter: 'images', dimensions: { model: 'm', input: 'i' } }));
    const b = accepted(event({ meter: 'images', dimensions: { input: 'i', model: 'm' } }));
    expect(a.dimensions).toBe(b.dimensions);
  });

  it('when only undeclared dimensions are given, then dimensions are "{}"', () => {
    expect(accepted(event({ dimensions: { region: 'eu' } })).dimensions).toBe('{}');
  });

  it('when the customer uses every allowed character class, then it is accepted', () => {
    expect(accepted(event({ customer: 'Org_1:acme@eu-west.2' })).customer).toBe('Org_1:acme@eu-west.2');
  });

  it('when id and customer are exactly 128 characters, then they are accepted', () => {
    const parsed = accepted(
      event({ id: 'i'.repeat(eventLimits.idLengthMax), customer: 'c'.repeat(eventLimits.customerLengthMax) }),
    );
    expect(parsed.id).toHaveLength(128);
  });

  it.each([
    ['an ISO instant in UTC', '2026-03-01T11:59:00Z', minuteAgoMs],
    ['an ISO instant with an offset', '2026-03-01T12:59:00+01:00', minuteAgoMs],
    ['an ISO instant with milliseconds', '2026-03-01T11:59:00.250Z', minuteAgoMs + 250],
    ['an ISO instant without seconds', '2026-03-01T11:59Z', minuteAgoMs],
    ['a Date (MessagePack timestamp)', new Date(minuteAgoMs + 123), minuteAgoMs + 123],
    ['ms since the epoch', minuteAgoMs + 1, minuteAgoMs + 1],
    ['ms since the epoch as a bigint', BigInt(minuteAgoMs), minuteAgoMs],
  ])('when the timestamp is %s, then timestampMs is exact', (_label, timestamp, expected) => {
    expect(accepted(event({ timestamp })).timestampMs).toBe(expected);
  });

  it('when the timestamp is exactly at the lateness or skew limit, then it is accepted', () => {
    accepted(event({ timestamp: receivedMs - window.lateMs }));
    accepted(event({ timestamp: receivedMs + window.skewMs }));
  });

  it('when no window is given (the rater), then an old timestamp is accepted', () => {
    expect(accepted(event({ timestamp: 0 }), null).timestampMs).toBe(0);
    expect(onlyProblem(event({ timestamp: 0 }))).toEqual({ field: 'timestamp', code: 'timestamp_too_old' });
  });
});

describe('parseEvent, given one invalid field', () => {
  it.each([
    ['id is missing', without('id'), 'id', 'type'],
    ['id is a number', event({ id: 1 }), 'id', 'type'],
    ['id is empty', event({ id: '' }), 'id', 'length'],
    ['id is 129 characters', event({ id: 'i'.repeat(129) }), 'id', 'length'],
    ['customer is missing', without('customer'), 'customer', 'type'],
    ['customer has a space', event({ customer: 'acme corp' }), 'customer', 'format'],
    ['customer has a slash', event({ customer: 'acme/eu' }), 'customer', 'format'],
    ['customer has a NUL', event({ customer: 'acme\0' }), 'customer', 'format'],
    ['customer is empty', event({ customer: '' }), 'customer', 'format'],
    ['customer is 129 characters', event({ customer: 'c'.repeat(129) }), 'customer', 'format'],
    ['meter is unknown', event({ meter: 'gpt-5.tokens' }), 'meter', 'unknown_meter'],
    ['meter names an Object.prototype member', event({ meter: 'constructor' }), 'meter', 'unknown_meter'],
    ['meter is a number', event({ meter: 42 }), 'meter', 'type'],
    ['quantity is negative', event({ quantity: -1 }), 'quantity', 'quantity_negative'],
    ['quantity is a negative string', event({ quantity: '-0.5' }), 'quantity', 'quantity_negative'],
    ['quantity is NaN', event({ quantity: Number.NaN }), 'quantity', 'quantity_not_finite'],
    ['quantity has 10 fraction digits', event({ quantity: '0.0000000001' }), 'quantity', 'quantity_too_precise'],
    ['quantity has 19 integer digits', event({ quantity: '1000000000000000000' }), 'quantity', 'quantity_too_large'],
    ['quantity is null', event({ quantity: null }), 'quantity', 'quantity_type'],
    ['timestamp is missing', without('timestamp'), 'timestamp', 'required'],
    ['timestamp is words', event({ timestamp: 'yesterday' }), 'timestamp', 'type'],
    ['timestamp is ISO without a zone', event({ timestamp: '2026-03-01T11:59:00' }), 'timestamp', 'type'],
    ['timestamp is a fraction of a ms', event({ timestamp: minuteAgoMs + 0.5 }), 'timestamp', 'type'],
    ['timestamp is negative', event({ timestamp: -1 }), 'timestamp', 'type'],
    ['timestamp is an invalid Date', event({ timestamp: new Date(Number.NaN) }), 'timestamp', 'type'],
    [
      'timestamp is older than the lateness',
      event({ timestamp: receivedMs - window.lateMs - 1 }),
      'timestamp',
      'timestamp_too_old',
    ],
    [
      'timestamp is beyond the skew',
      event({ timestamp: receivedMs + window.skewMs + 1 }),
      'timestamp',
      'timestamp_in_future',
    ],
    ['dimensions is a string', event({ dimensions: 'model=x' }), 'dimensions', 'type'],
    ['dimensions is an array', event({ dimensions: ['x'] }), 'dimensions', 'type'],
    ['dimensions is null', event({ dimensions: null }), 'dimensions', 'type'],
    ['a dimension value is a number', event({ meter: 'images', dimensions: { model: 1 } }), 'dimensions.model', 'type'],
    [
      'an undeclared dimension value is a number',
      event({ meter: 'images', dimensions: { seed: 42 } }),
      'dimensions.seed',
      'type',
    ],
    [
      'a dimension value is 129 characters',
      event({ meter: 'images', dimensions: { model: 'm'.repeat(129) } }),
      'dimensions.model',
      'length',
    ],
    ['a dimension key is 65 characters', event({ dimensions: { ['k'.repeat(65)]: 'v' } }), 'dimensions', 'key_length'],
    ['there is an unknown top-level field', event({ qty: 3 }), 'qty', 'unknown_field'],
    ['hold is a number', event({ hold: 7 }), 'hold', 'type'],
    ['hold is empty', event({ hold: '' }), 'hold', 'format'],
    ['hold has a space', event({ hold: 'a b' }), 'hold', 'format'],
    ['hold is 401 characters', event({ hold: 'h'.repeat(401) }), 'hold', 'format'],
  ])('when %s, then the problem names that field and code', (_label, raw, field, code) => {
    expect(onlyProblem(raw)).toEqual({ field, code });
  });

  it('when there are 17 dimension keys, then the problem is too_many; 16 are accepted', () => {
    const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
    expect(onlyProblem(event({ dimensions: keys(17) }))).toEqual({ field: 'dimensions', code: 'too_many' });
    accepted(event({ dimensions: keys(eventLimits.dimensionKeysMax) }));
  });

  it.each([
    ['null', null],
    ['a string', 'event'],
    ['an array', [event()]],
    ['a number', 5],
  ])('when the event itself is %s, then the problem is event_type', (_label, raw) => {
    expect(onlyProblem(raw)).toEqual({ field: '', code: 'event_type' });
  });
});

describe('parseEvent, given hostile keys (own properties, as JSON.parse makes them)', () => {
  it.each(['__proto__', 'constructor', 'prototype'])(
    'when %s is a top-level key, then it is a hostile_key problem',
    (key) => {
      const raw = JSON.parse(
        `{"id":"e","customer":"acme","meter":"images","timestamp":${minuteAgoMs},${JSON.stringify(key)}:{"polluted":"yes"}}`,
      );
      expect(Object.keys(raw)).toContain(key);
      expect(onlyProblem(raw)).toEqual({ field: key, code: 'hostile_key' });
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    },
  );

  it.each(['__proto__', 'constructor'])(
    'when %s is a dimension key, then it is a hostile_key problem on dimensions.%s',
    (key) => {
      const raw = JSON.parse(
        `{"id":"e","customer":"acme","meter":"images","timestamp":${minuteAgoMs},"dimensions":{${JSON.stringify(key)}:"x","model":"m"}}`,
      );
      expect(onlyProblem(raw)).toEqual({ field: `dimensions.${key}`, code: 'hostile_key' });
    },
  );

  it('when MessagePack carries __proto__ (msgpackr renames it __proto_), then it is still rejected', () => {
    const bytes = packr.pack([
      JSON.parse(`{"id":"e","customer":"acme","meter":"images","timestamp":${minuteAgoMs},"__proto__":{"x":1}}`),
    ]);
    const error = thrown(() => validateEvents(expectEventArray(decodeBatch(bytes, 'msgpack'), 10), meters, window));
    expect(error.code).toBe('event_invalid');
    expect(error.problems.map((p) => p.code)).toEqual(['hostile_key']);
  });
});

describe('parseEvent, given several invalid fields in one event', () => {
  it('then every problem is reported with the same index', () => {
    const { event: parsed, problems } = parse({ id: '', customer: 'a b', meter: 'nope', quantity: -1, extra: true });
    expect(parsed).toBeUndefined();
    expect(problems.map((p) => [p.index, p.field, p.code])).toEqual([
      [7, 'extra', 'unknown_field'],
      [7, 'id', 'length'],
      [7, 'customer', 'format'],
      [7, 'meter', 'unknown_meter'],
      [7, 'quantity', 'quantity_negative'],
      [7, 'timestamp', 'required'],
    ]);
  });
});

describe('validateEvents', () => {
  it('given only valid events, then all are returned in order', () => {
    const raw = [
      event({ id: 'a' }),
      event({ id: 'b', meter: 'images', dimensions: { model: 'm' } }),
      event({ id: 'c', quantity: 3 }),
    ];
    const events = validateEvents(raw, meters, window);
    expect(events.map((e) => [e.id, e.scaled, e.dimensions])).toEqual([
      ['a', 1_000_000_000n, '{}'],
      ['b', 1_000_000_000n, '{"model":"m"}'],
      ['c', 3_000_000_000n, '{}'],
    ]);
  });

  it('given an empty batch, then nothing is returned and nothing thrown', () => {
    expect(validateEvents([], meters, window)).toEqual([]);
  });

  it('given bad events among good ones, then it throws event_invalid (422) listing every bad event, not just the first', () => {
    const raw = [event(), event({ id: '' }), event(), event({ meter: 'nope' }), event({ quantity: 'x' })];
    const error = thrown(() => validateEvents(raw, meters, window));
    expect(error.code).toBe('event_invalid');
    expect(error.status).toBe(422);
    expect(error.problems.map((p) => [p.index, p.field, p.code])).toEqual([
      [1, 'id', 'length'],
      [3, 'meter', 'unknown_meter'],
      [4, 'quantity', 'quantity_malformed'],
    ]);
    expect(error.message).toContain('event 1');
    expect(error.toProblem().errors).toEqual(error.problems);
  });

  it('given 1,000 bad events, then exactly problemsListedMax problems are listed, from the first events', () => {
    expect(problemsListedMax).toBeLessThan(1_000);
    const raw = Array.from({ length: 1_000 }, (_, i) => event({ id: `e${i}`, meter: 'nope' }));
    const error = thrown(() => validateEvents(raw, meters, window));
    expect(error.problems).toHaveLength(problemsListedMax);
    expect(error.problems.map((p) => p.index)).toEqual(Array.from({ length: problemsListedMax }, (_, i) => i));
  });

  it('given 1,000 events with several problems each, then the list is still capped at problemsListedMax', () => {
    const raw = Array.from({ length: 1_000 }, () => ({ id: '', customer: '', meter: 'nope' }));
    const error = thrown(() => validateEvents(raw, meters, window));
    expect(error.problems).toHaveLength(problemsListedMax);
  });
});

describe('decodeBatch', () => {
  const batch = [event({ id: 'a', quantity: 2.5 }), event({ id: 'b', meter: 'images', dimensions: { model: 'm' } })];

  it('given standard MessagePack, then it decodes to plain objects', () => {
    const decoded = decodeBatch(packr.pack(batch), 'msgpack');
    expect(decoded).toEqual(batch);
    expect(validateEvents(expectEventArray(decoded, 10), meters, window).map((e) => e.scaled)).toEqual([
      2_500_000_000n,
      1_000_000_000n,
    ]);
  });

  it('given JSON bytes, then it decodes the same batch', () => {
    expect(decodeBatch(encoder.encode(JSON.stringify(batch)), 'json')).toEqual(batch);
  });

  it('given a MessagePack timestamp, then the event time is exact to the ms', () => {
    const decoded = decodeBatch(packr.pack([event({ timestamp: new Date(minuteAgoMs + 7) })]), 'msgpack');
    expect(validateEvents(expectEventArray(decoded, 10), meters, window)[0]!.timestampMs).toBe(minuteAgoMs + 7);
  });

  describe('given an integer quantity above 2^53 (18 digits)', () => {
    const quantity = 123_456_789_012_345_678n;
    const bigPackr = new Packr({ useRecords: false, largeBigIntToFloat: false });

    /** Where the quantity's 64-bit integer marker is: right after the "quantity" key. */
    function quantityMarkerAt(bytes: Uint8Array): number {
      const key = bigPackr.pack('quantity');
      for (let i = 0; i + key.length < bytes.length; i++) {
        if (key.every((b, j) => bytes[i + j] === b)) return i + key.length;
      }
      throw new Error('quantity key not found');
    }

    function scaledOf(bytes: Uint8Array): bigint {
      return validateEvents(expectEventArray(decodeBatch(bytes, 'msgpack'), 10), meters, window)[0]!.scaled;
    }

    it('when encoded from a BigInt by msgpackr (int64), then the scaled quantity is exact', () => {
      expect(quantity > 2n ** 53n).toBe(true);
      const bytes = bigPackr.pack([event({ quantity })]);
      expect(bytes[quantityMarkerAt(bytes)]).toBe(0xd3); // int 64
      expect(scaledOf(bytes)).toBe(123_456_789_012_345_678_000_000_000n);
    });

    it('when encoded as uint64 (as other encoders do), then the scaled quantity is exact', () => {
      const bytes = bigPackr.pack([event({ quantity })]);
      bytes[quantityMarkerAt(bytes)] = 0xcf; // uint 64: same big-endian payload for a positive value
      expect(scaledOf(bytes)).toBe(123_456_789_012_345_678_000_000_000n);
    });

    it('when it has 19 digits, then it is too large rather than rounded', () => {
      const bytes = bigPackr.pack([event({ quantity: 2n ** 63n - 1n })]);
      const error = thrown(() => validateEvents(expectEventArray(decodeBatch(bytes, 'msgpack'), 10), meters, window));
      expect(error.problems.map((p) => p.code)).toEqual(['quantity_too_large']);
    });
  });

  it.each([
    ['truncated MessagePack', packr.pack(batch).subarray(0, 20), 'msgpack'],
    ['garbage bytes', Uint8Array.of(0xc1, 0xff, 0x00, 0xde, 0xad), 'msgpack'],
    ['an empty MessagePack body', new Uint8Array(0), 'msgpack'],
    ['trailing garbage after valid MessagePack', Uint8Array.from([...packr.pack(batch), 0x01, 0x02]), 'msgpack'],
    ['truncated JSON', encoder.encode('[{"id":"a"'), 'json'],
    ['trailing garbage after valid JSON', encoder.encode('[] []'), 'json'],
    ['an empty JSON body', new Uint8Array(0), 'json'],
    ['invalid UTF-8 in JSON', Uint8Array.of(0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d), 'json'],
    ['MessagePack sent as JSON', packr.pack(batch), 'json'],
  ] as const)('given %s, then it throws body_malformed (400)', (_label, bytes, format) => {
    const error = thrown(() => decodeBatch(bytes, format));
    expect(error.code).toBe('body_malformed');
    expect(error.status).toBe(400);
  });

  describe('given 100,000 levels of nested arrays', () => {
    const depth = 100_000;

    it('as MessagePack, then it throws body_malformed and the decoder still works afterwards', () => {
      const bytes = new Uint8Array(depth + 1).fill(0x91); // fixarray of one element, nested
      bytes[depth] = 0x90; // innermost: empty array
      expect(thrown(() => decodeBatch(bytes, 'msgpack')).code).toBe('body_malformed');
      expect(decodeBatch(packr.pack(batch), 'msgpack')).toEqual(batch);
    });

    it('as JSON, then it throws body_malformed like MessagePack does', () => {
      const bytes = encoder.encode('['.repeat(depth) + ']'.repeat(depth));
      expect(thrown(() => decodeBatch(bytes, 'json')).code).toBe('body_malformed');
      expect(decodeBatch(encoder.encode(JSON.stringify(batch)), 'json')).toEqual(batch);
    });
  });
});

describe('expectEventArray', () => {
  it.each([
    ['an object', { events: [] }],
    ['a string', 'events'],
    ['null', null],
    ['a number', 1],
  ])('given %s, then it throws body_not_array (400)', (_label, decoded) => {
    const error = thrown(() => expectEventArray(decoded, 10));
    expect(error.code).toBe('body_not_array');
    expect(error.status).toBe(400);
  });

  it('given more events than the limit, then it throws batch_too_many_events (413)', () => {
    const error = thrown(() => expectEventArray(new Array(11).fill(event()), 10));
    expect(error.code).toBe('batch_too_many_events');
    expect(error.status).toBe(413);
  });

  it('given exactly the limit, then the same array is returned', () => {
    const decoded = new Array(10).fill(event());
    expect(expectEventArray(decoded, 10)).toBe(decoded);
  });
});
