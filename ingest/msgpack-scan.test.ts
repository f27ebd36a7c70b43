import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeBatch, validateEvents } from '../shared/events/batch.js';
import { DrawdownError } from '../shared/errors.js';
import type { MeterDefinitions } from '../catalog/model.js';
import { arrayElementOffsets, scanValidBatch } from './msgpack-split.js';
import { partitionOfCustomer } from '../shared/events/partition.js';
import { routeBatch, routeScanned } from './route.js';

const standard = new Packr({ useRecords: false });
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'bigint' });
const meters: MeterDefinitions = Object.assign(Object.create(null), {
  tokens: { aggregation: 'sum', dimensions: [] },
  images: { aggregation: 'sum', dimensions: ['model'] },
});
const receivedMs = 1_700_000_000_000;
const window = { receivedMs, lateMs: 86_400_000, skewMs: 300_000 };

function fullPathAccepts(events: unknown[]): boolean {
  try {
    validateEvents(events, meters, window);
    return true;
  } catch {
    return false;
  }
}

// Values near every rule's edge, valid and not.
const text = fc.oneof(
  fc.string({ maxLength: 140 }),
  fc.string({ unit: 'grapheme', maxLength: 10 }),
  fc.constantFrom('', 'cust-1', 'a b', '__proto__', 'constructor', 'x'.repeat(128), 'x'.repeat(129)),
);
const quantity = fc.oneof(
  fc.constantFrom(
    '1',
    '0',
    '12.5',
    '1.500',
    '007',
    '1.',
    '.5',
    '-1',
    '1e3',
    ' 1',
    '123456789012345678',
    '1234567890123456789',
    '0.123456789',
    '0.1234567891',
    '0.1234567890',
    '00000000000000000001',
  ),
  fc.integer({ min: -(2 ** 31), max: 2 ** 32 }),
  fc.double(),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
  fc.constant(null),
  fc.boolean(),
);
const timestamp = fc.oneof(
  fc.integer({ min: receivedMs - 90_000_000, max: receivedMs + 400_000 }),
  fc.double({ min: receivedMs - 1000, max: receivedMs + 1000 }),
  fc.bigInt({ min: BigInt(receivedMs - 1000), max: BigInt(receivedMs + 1000) }),
  fc.constant(new Date(receivedMs)),
  fc.constant(new Date(receivedMs).toISOString()),
  fc.integer({ min: -5, max: 5 }),
);
const dimensions = fc.oneof(
  fc.dictionary(
    fc.oneof(text, fc.constantFrom('model', 'k'.repeat(64), 'k'.repeat(65))),
    fc.oneof(text, fc.integer()),
    { maxKeys: 18 },
  ),
  fc.constant(null),
  fc.constant('x'),
);
const event = fc.record(
  {
    id: fc.oneof(text, fc.integer()),
    customer: fc.oneof(text, fc.constantFrom('cust-1', 'cust-2', 'a.b:c@d-e_F9')),
    meter: fc.oneof(fc.constantFrom('tokens', 'images', 'tokenz', 'constructor', '__proto__'), text),
    quantity,
    timestamp,
    dimensions,
    extra: fc.integer(),
  },
  { requiredKeys: [] },
);
const validEvent = fc.record(
  {
    id: fc.stringMatching(/^[ -~]{1,128}$/),
    customer: fc.stringMatching(/^[A-Za-z0-9._:@-]{1,128}$/),
    meter: fc.constantFrom('tokens', 'images'),
    quantity: fc.oneof(
      fc.nat(),
      fc.stringMatching(/^\d{1,18}(\.\d{1,9})?$/),
      fc.double({ min: 0, max: 1e9, noNaN: true }),
    ),
    timestamp: fc.integer({ min: receivedMs - 86_400_000, max: receivedMs + 300_000 }),
    dimensions: fc.dictionary(
      fc.stringMatching(/^[a-z]{1,64}$/).filter((k) => !['constructor', 'prototype'].includes(k)),
      fc.stringMatching(/^[ -~]{0,128}$/),
      { maxKeys: 16 },
    ),
  },
  { requiredKeys: ['id', 'customer', 'meter', 'timestamp'] },
);

describe('scanValidBatch (the gateway fast path)', () => {
  it('never accepts a batch the full decoder and validator reject, and routes exactly as they do', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(event, validEvent), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 8 }),
        (events, partitions) => {
          const body = standard.pack(events);
          const scanned = scanValidBatch(body, meters, window, 10_000, partitions);
          if (scanned === undefined) return;
          const decoded = unpackr.unpack(body) as { customer: string }[];
          expect(fullPathAccepts(decoded)).toBe(true);
          expect(scanned.count).toBe(decoded.length);
          expect([...scanned.offsets]).toEqual([...arrayElementOffsets(body).offsets!]);
          expect([...scanned.partitionOf]).toEqual(decoded.map((e) => partitionOfCustomer(e.customer, partitions)));
          expect(routeScanned(body, scanned)).toEqual(routeBatch(body, 'msgpack', decoded, partitions));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('takes ordinary ASCII batches (so the fast path is the one used)', () => {
    fc.assert(
      fc.property(fc.array(validEvent, { minLength: 1, maxLength: 20 }), (events) => {
        const body = standard.pack(events);
        const exact = events.every(
          (e) => typeof e.quantity !== 'number' || Number.isInteger(e.quantity) || e.quantity === 0,
        );
        if (exact) expect(scanValidBatch(body, meters, window, 10_000, 4)).toBeDefined();
      }),
      { numRuns: 500 },
    );
  });

  it('leaves a batch over the event limit, an empty one and trailing bytes to the full path', () => {
    const one = { id: 'a', customer: 'c', meter: 'tokens', timestamp: receivedMs };
    expect(scanValidBatch(standard.pack([one, one]), meters, window, 1, 4)).toBeUndefined();
    expect(scanValidBatch(standard.pack([]), meters, window, 10, 4)).toBeUndefined();
    expect(
      scanValidBatch(Buffer.concat([standard.pack([one]), Buffer.of(0xc0)]), meters, window, 10, 4),
    ).toBeUndefined();
    expect(scanValidBatch(standard.pack([one]), meters, window, 10, 4)).toBeDefined();
  });

  it('leaves a repeated key to the full path, which refuses the batch naming it, wherever the key is', () => {
    // Packed with distinct keys, then one renamed in the bytes to repeat another (no encoder writes a repeat).
    const renamed = (events: unknown[], from: string, to: string): Buffer => {
      const body = standard.pack(events);
      const at = body.indexOf(Buffer.concat([Buffer.of(0xa0 | from.length), Buffer.from(from)]));
      body.write(to, at + 1, 'latin1');
      return body;
    };
    const one = (i: number, extra: object = {}) => ({
      id: `e${i}`,
      customer: 'cust-1',
      meter: 'images',
      timestamp: receivedMs,
      ...extra,
    });
    const cases: [Buffer, number, string][] = [
      [renamed([one(0), one(1, { dimensions: { model: 'a', modeX: 'b' } })], 'modeX', 'model'), 1, 'dimensions.model'],
      [renamed([one(0, { dimensions: { aa: 'x', ab: 'y', model: 'a' } })], 'ab', 'aa'), 0, 'dimensions.aa'],
      [renamed([one(0), one(1), one(2, { quantity: 5, quantitX: 7 })], 'quantitX', 'quantity'), 2, 'quantity'],
      [
        renamed(
          [{ id: 'a', customer: 'not valid!', customex: 'cust-1', meter: 'images', timestamp: receivedMs }],
          'customex',
          'customer',
        ),
        0,
        'customer',
      ],
    ];
    for (const [body, index, field] of cases) {
      expect(scanValidBatch(body, meters, window, 10_000, 4), field).toBeUndefined();
      let error: unknown;
      try {
        decodeBatch(body, 'msgpack');
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(DrawdownError);
      expect((error as DrawdownError).code).toBe('body_malformed');
      expect((error as DrawdownError).problems).toEqual([
        expect.objectContaining({ index, field, code: 'duplicate_key' }),
      ]);
    }
    // The same bodies before the rename are taken by the fast path.
    expect(
      scanValidBatch(
        standard.pack([one(0), one(1, { dimensions: { model: 'a', modeX: 'b' } })]),
        meters,
        window,
        10_000,
        4,
      ),
    ).toBeDefined();
  });
});
