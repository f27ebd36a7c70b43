import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeBatch, expectEventArray, validateEvents } from '../shared/events/batch.js';
import type { MeterDefinitions } from '../catalog/model.js';
import { Aggregator, ScannedAggregator, ScannedEvents, scanBatch, type AggregateRow } from './aggregate.js';
import { hashEventId } from './dedupe/id-hash.js';

const standard = new Packr({ useRecords: false });
const meters: MeterDefinitions = JSON.parse(
  JSON.stringify({
    tokens: { aggregation: 'sum', dimensions: [] },
    images: { aggregation: 'sum', dimensions: ['model', 'size'] },
    calls: { aggregation: 'count', dimensions: [] },
    'peak.gb': { aggregation: 'max', dimensions: [] },
  }),
) as MeterDefinitions;
const baseMs = 1_700_000_000_000;

const text = fc.oneof(
  fc.string({ maxLength: 140 }),
  fc.constantFrom('', 'a"b', 'a\\b', 'tab\there', 'é', 'x'.repeat(128), 'x'.repeat(129), 'constructor'),
);
const quantity = fc.oneof(
  fc.constantFrom(
    '1',
    '0',
    '12.5',
    '1.500',
    '007',
    '0.000000001',
    '999999999999999.999999999',
    '1000000000000000',
    '123456789012345678',
    '1.',
    '-1',
    '1e3',
  ),
  fc.stringMatching(/^\d{1,16}(\.\d{1,10})?$/),
  fc.integer({ min: -10, max: 2 ** 32 }),
  fc.double({ min: 0, max: 1e16, noNaN: true }),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  fc.constantFrom(1e15 - 1, 1e15, 2 ** 53 - 1, null),
);
const event = fc.record(
  {
    id: fc.oneof(fc.stringMatching(/^[ -~]{1,12}$/), text, fc.integer()),
    customer: fc.oneof(fc.constantFrom('acme', 'globex', 'a.b:c@d-e_F9'), text),
    meter: fc.oneof(fc.constantFrom('tokens', 'images', 'calls', 'peak.gb'), text),
    quantity,
    timestamp: fc.oneof(
      fc.integer({ min: baseMs, max: baseMs + 600_000 }),
      fc.double({ min: baseMs, max: baseMs + 1000 }),
      fc.constant(new Date(baseMs)),
      fc.constant('2026-01-01T00:00:00Z'),
      fc.constant(-1),
    ),
    dimensions: fc.oneof(
      fc.dictionary(
        fc.constantFrom('model', 'size', 'other', '__proto__'),
        fc.oneof(fc.constantFrom('a', 'b', '1K'), text, fc.integer()),
        { maxKeys: 4 },
      ),
      fc.constant(null),
    ),
  },
  { requiredKeys: ['id', 'customer', 'meter', 'timestamp'] },
);

const validEvent = fc.record(
  {
    id: fc.stringMatching(/^[ -~]{1,12}$/),
    customer: fc.constantFrom('acme', 'globex', 'a.b:c@d-e_F9'),
    meter: fc.constantFrom('tokens', 'images', 'calls'),
    quantity: fc.oneof(
      fc.stringMatching(/^\d{1,15}(\.\d{1,9})?$/),
      fc.nat(),
      fc.double({ min: 0, max: 1e6, noNaN: true }),
    ),
    timestamp: fc.integer({ min: baseMs, max: baseMs + 600_000 }),
    dimensions: fc.dictionary(fc.constantFrom('model', 'size', 'other'), fc.stringMatching(/^[ -~]{0,8}$/), {
      maxKeys: 3,
    }),
  },
  { requiredKeys: ['id', 'customer', 'meter', 'timestamp'] },
);

function sorted(rows: readonly AggregateRow[]): AggregateRow[] {
  const key = (r: AggregateRow) => JSON.stringify([r[0], r[1], r[2], r[3]]);
  return [...rows].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

describe('scanBatch + ScannedAggregator (the workers fast path)', () => {
  it('when it takes a batch, counts exactly the rows, sums and id fingerprints the full path does', () => {
    const scanned = new ScannedEvents();
    let taken = 0;
    fc.assert(
      fc.property(
        fc.oneof(
          fc.array(event, { minLength: 1, maxLength: 30 }),
          fc.array(fc.oneof({ arbitrary: validEvent, weight: 20 }, { arbitrary: event, weight: 1 }), {
            minLength: 1,
            maxLength: 30,
          }),
          // Long batches with one bad event are refused whole: some that are all valid, so long ones are taken too.
          fc.array(validEvent, { minLength: 1, maxLength: 30 }),
        ),
        (events) => {
          const body = standard.pack(events);
          if (!scanBatch(body, meters, scanned, true)) return;
          taken++;
          const full = validateEvents(expectEventArray(decodeBatch(body, 'msgpack'), 1e9), meters, undefined);
          expect(scanned.count).toBe(full.length);
          const aggregator = new Aggregator(meters);
          const sums = new ScannedAggregator();
          const want = new Uint32Array(3);
          for (let i = 0; i < full.length; i++) {
            aggregator.addEvent(full[i]!);
            sums.add(scanned, i);
            hashEventId(full[i]!.customer, full[i]!.id, want, 0);
            expect([...scanned.ids.subarray(3 * i, 3 * i + 3)]).toEqual([...want]);
          }
          expect(sorted(sums.drain())).toEqual(sorted(aggregator.drain()));
        },
      ),
      { numRuns: 3000 },
    );
    // Half the batches are mostly invalid on purpose; the valid share must still be exercised.
    expect(taken).toBeGreaterThan(100);
  });

  it('takes the everyday shapes: ASCII ids, decimal strings, integer quantities, declared dimensions', () => {
    const body = standard.pack([
      { id: 'e1', customer: 'acme', meter: 'tokens', quantity: '12.5', timestamp: baseMs },
      { id: 'e2', customer: 'acme', meter: 'tokens', quantity: 3, timestamp: baseMs + 1 },
      {
        id: 'e3',
        customer: 'acme',
        meter: 'images',
        timestamp: baseMs,
        dimensions: { size: '1K', model: 'm', other: 'x' },
      },
      { id: 'e4', customer: 'acme', meter: 'calls', quantity: 7, timestamp: baseMs },
    ]);
    const scanned = new ScannedEvents();
    expect(scanBatch(body, meters, scanned, true)).toBe(true);
    const sums = new ScannedAggregator();
    for (let i = 0; i < scanned.count; i++) sums.add(scanned, i);
    const minute = Math.floor(baseMs / 60_000) * 60;
    expect(sorted(sums.drain())).toEqual(
      sorted([
        ['acme', 'tokens', '{}', minute, 15_500_000_000n, 2],
        ['acme', 'images', '{"model":"m","size":"1K"}', minute, 1_000_000_000n, 1],
        ['acme', 'calls', '{}', minute, 1_000_000_000n, 1],
      ]),
    );
  });

  it('leaves meters whose declared dimensions have index-like names ("9", "10") to the full path, which orders them as JSON does', () => {
    const numeric = JSON.parse(
      JSON.stringify({ gpu: { aggregation: 'sum', dimensions: ['10', '9'] } }),
    ) as MeterDefinitions;
    const body = standard.pack([
      { id: 'e1', customer: 'acme', meter: 'gpu', timestamp: baseMs, dimensions: { '9': 'a', '10': 'b' } },
    ]);
    expect(scanBatch(body, numeric, new ScannedEvents(), false)).toBe(false);
    expect(validateEvents(expectEventArray(decodeBatch(body, 'msgpack'), 10), numeric, undefined)[0]!.dimensions).toBe(
      '{"9":"a","10":"b"}',
    );
  });

  it('sums beyond 2^53 nanos stay exact', () => {
    const scanned = new ScannedEvents();
    const events = Array.from({ length: 50 }, (_, i) => ({
      id: `e${i}`,
      customer: 'acme',
      meter: 'tokens',
      quantity: '999999999999999.999999999',
      timestamp: baseMs,
    }));
    expect(scanBatch(standard.pack(events), meters, scanned, false)).toBe(true);
    const sums = new ScannedAggregator();
    for (let i = 0; i < scanned.count; i++) sums.add(scanned, i);
    expect(sums.drain()[0]![4]).toBe(999_999_999_999_999_999_999_999n * 50n);
  });

  it('leaves a message with a repeated key, declared or not, to the full path, which rejects it whole', () => {
    const renamed = (events: unknown[], from: string, to: string): Buffer => {
      const body = standard.pack(events);
      const at = body.indexOf(Buffer.concat([Buffer.of(0xa0 | from.length), Buffer.from(from)]));
      body.write(to, at + 1, 'latin1');
      return body;
    };
    const event = (extra: object) => ({ id: 'e1', customer: 'acme', meter: 'images', timestamp: baseMs, ...extra });
    for (const body of [
      renamed([event({ dimensions: { other: 'x', otheR: 'y' } })], 'otheR', 'other'), // not declared: the fast path ignores its value
      renamed([event({ dimensions: { model: 'x', modeL: 'y' } })], 'modeL', 'model'),
      renamed([event({ quantity: 5, quantitY: 7 })], 'quantitY', 'quantity'),
    ]) {
      expect(scanBatch(body, meters, new ScannedEvents(), true)).toBe(false);
      expect(() => decodeBatch(body, 'msgpack')).toThrow(/appears more than once/);
    }
    expect(
      scanBatch(standard.pack([event({ dimensions: { other: 'x', otheR: 'y' } })]), meters, new ScannedEvents(), true),
    ).toBe(true);
  });
});
