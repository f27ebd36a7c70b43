import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeBatch } from '../shared/events/batch.js';
import { DrawdownError } from '../shared/errors.js';
import { arrayElementOffsets, arrayHeader } from './msgpack-split.js';
import { partitionOfCustomer } from '../shared/events/partition.js';
import { routeBatch } from './route.js';

const standard = new Packr({ useRecords: false });
const withRecords = new Packr({ useRecords: true });
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'bigint' });

// Every MessagePack type a client's encoder may produce inside an event.
const value = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.integer(),
    fc.integer({ min: -(2 ** 31), max: 2 ** 32 }),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
    fc.double({ noNaN: true }),
    fc.boolean(),
    fc.constant(null),
    fc.string({ maxLength: 300 }),
    fc.uint8Array({ maxLength: 300 }),
    fc.date({ min: new Date(0), max: new Date(8.64e15), noInvalidDate: true }),
  ),
  node: fc.oneof(
    { depthSize: 'small' },
    tie('leaf'),
    // Nested containers stay small (at most size each level grows combinatorially); the top-level array spreads to 40.
    fc.array(tie('node'), { maxLength: 20, size: 'small' }),
    fc.dictionary(fc.string({ maxLength: 10 }), tie('node'), { maxKeys: 20, size: 'small' }),
  ),
}));

describe('arrayElementOffsets', () => {
  it('finds each element of any array a standard encoder writes, so each slice decodes to that element', () => {
    fc.assert(
      fc.property(fc.array(value.node, { maxLength: 40 }), (elements) => {
        const body = standard.pack(elements);
        const { offsets, usesRecords } = arrayElementOffsets(body);
        expect(usesRecords).toBe(false);
        if (offsets === undefined) throw new Error('standard bodies are always scanned');
        expect(offsets.length).toBe(elements.length + 1);
        expect(offsets[elements.length]).toBe(body.length);
        for (let i = 0; i < elements.length; i++) {
          expect(unpackr.unpack(body.subarray(offsets[i]!, offsets[i + 1]!))).toEqual(
            unpackr.unpack(standard.pack(elements[i])),
          );
        }
      }),
      { numRuns: 300 },
    );
  });

  it('handles the 16- and 32-bit array headers', () => {
    for (const count of [15, 16, 65_535, 65_536]) {
      const elements = Array.from({ length: count }, (_, i) => i % 300);
      const body = standard.pack(elements);
      expect(arrayElementOffsets(body).offsets?.length).toBe(count + 1);
      expect(Buffer.from(arrayHeader(count))).toEqual(Buffer.from(body.subarray(0, arrayHeader(count).length)));
    }
  });

  it('notices msgpackr records, whose slices would lose their structure definitions', () => {
    const body = withRecords.pack([
      { customer: 'a', id: '1' },
      { customer: 'b', id: '2' },
    ]);
    expect(arrayElementOffsets(body).usesRecords).toBe(true);
  });

  it('refuses truncated bodies, trailing bytes, lying counts and non-arrays with body_malformed', () => {
    const body = standard.pack([{ a: 'x'.repeat(40) }, [1, 2, 3]]);
    const broken = [
      body.subarray(0, body.length - 1),
      Buffer.concat([body, Buffer.of(0x01)]),
      Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01),
      standard.pack({ a: 1 }),
      new Uint8Array(0),
      Uint8Array.of(0x91, 0xc1),
    ];
    for (const bytes of broken) {
      let error: unknown;
      try {
        arrayElementOffsets(bytes);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(DrawdownError);
      expect((error as DrawdownError).code).toBe('body_malformed');
    }
  });
});

describe('routeBatch', () => {
  const event = fc.record({
    id: fc.string({ minLength: 1, maxLength: 20 }),
    customer: fc.stringMatching(/^[a-z0-9]{1,12}$/),
    meter: fc.constantFrom('tokens', 'images'),
    quantity: fc.oneof(fc.nat(), fc.constant('1.5')),
    timestamp: fc.nat(),
    dimensions: fc.dictionary(fc.constantFrom('model', 'size'), fc.string({ maxLength: 8 }), { maxKeys: 2 }),
  });

  it('puts every event of a customer on one partition, keeps order, loses and adds nothing (MessagePack, records and JSON)', () => {
    fc.assert(
      fc.property(
        fc.array(event, { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 8 }),
        fc.constantFrom('msgpack', 'records', 'json'),
        fc.boolean(),
        (events, partitions, encoding, fromGateway) => {
          const body =
            encoding === 'json'
              ? Buffer.from(JSON.stringify(events))
              : (encoding === 'records' ? withRecords : standard).pack(events);
          const format = encoding === 'json' ? 'json' : 'msgpack';
          // As the gateway decodes it (decodeBatch notes where each event is, for routing) or as another decoder does.
          const raw =
            format === 'json'
              ? JSON.parse(body.toString())
              : fromGateway
                ? decodeBatch(body, format)
                : unpackr.unpack(body);
          const parts = routeBatch(body, format, raw, partitions);
          const decode = (bytes: Uint8Array): typeof events =>
            format === 'json' ? JSON.parse(Buffer.from(bytes).toString()) : unpackr.unpack(bytes);
          // Each part holds exactly its partition's events, in the batch's order.
          for (const part of parts) {
            const want = events.filter((e) => partitionOfCustomer(e.customer, partitions) === part.partition);
            expect(decode(part.body)).toEqual(want);
            expect(part.events).toBe(want.length);
          }
          expect(parts.reduce((n, p) => n + p.events, 0)).toBe(events.length);
          expect(new Set(parts.map((p) => p.partition)).size).toBe(parts.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('publishes a single-partition batch as the very bytes the client sent', () => {
    const events = [
      { id: '1', customer: 'acme', meter: 'tokens', timestamp: 1 },
      { id: '2', customer: 'acme', meter: 'tokens', timestamp: 2 },
    ];
    const body = standard.pack(events);
    const parts = routeBatch(body, 'msgpack', unpackr.unpack(body), 4);
    expect(parts).toHaveLength(1);
    expect(parts[0]!.body).toBe(body);
  });

  it('spreads customers over every partition, each customer always to the same one', () => {
    const counts = new Array(8).fill(0);
    for (let i = 0; i < 8_000; i++) counts[partitionOfCustomer(`customer-${i}`, 8)]++;
    for (const n of counts) expect(n).toBeGreaterThan(800);
    expect(partitionOfCustomer('acme', 8)).toBe(partitionOfCustomer('acme', 8));
    expect(partitionOfCustomer('acme', 1)).toBe(0);
  });
});
