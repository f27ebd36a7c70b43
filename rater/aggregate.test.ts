import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MeterDefinitions } from '../catalog/model.js';
import type { UsageEvent } from '../shared/events/event.js';
import { Aggregator, type AggregateRow } from './aggregate.js';
import { packMessages } from './task.js';

const meters: MeterDefinitions = {
  tokens: { aggregation: 'sum', dimensions: [] },
  images: { aggregation: 'sum', dimensions: ['model'] },
  calls: { aggregation: 'count', dimensions: [] },
  'peak.gb': { aggregation: 'max', dimensions: [] },
};

const noonMs = Date.parse('2026-03-01T12:00:00Z');
const noonSec = noonMs / 1000;
const one = 1_000_000_000n;

let nextId = 0;
function usage(overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    id: `e${nextId++}`,
    customer: 'acme',
    meter: 'tokens',
    scaled: one,
    timestampMs: noonMs,
    dimensions: '{}',
    hold: '',
    ...overrides,
  };
}

function aggregate(events: readonly UsageEvent[]): AggregateRow[] {
  const aggregator = new Aggregator(meters);
  for (const event of events) aggregator.addEvent(event);
  return aggregator.drain();
}

/** Rows in a fixed order, so two aggregations can be compared whatever their insertion order. */
function sorted(rows: readonly AggregateRow[]): AggregateRow[] {
  const key = (r: AggregateRow) => JSON.stringify([r[0], r[1], r[2], r[3], r[6] ?? '']);
  return [...rows].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

describe('Aggregator.addEvent', () => {
  it('given events in the same (customer, meter, dimensions, minute), then they sum into one row', () => {
    const rows = aggregate([usage({ scaled: 1_500_000_000n }), usage({ scaled: 2n, timestampMs: noonMs + 59_999 })]);
    expect(rows).toEqual([['acme', 'tokens', '{}', noonSec, 1_500_000_002n, 2]]);
  });

  it('given timestamps either side of a minute boundary, then minute = floor(ts / 60000) × 60 seconds', () => {
    const rows = aggregate([
      usage({ timestampMs: noonMs - 1 }),
      usage({ timestampMs: noonMs }),
      usage({ timestampMs: noonMs + 60_000 }),
    ]);
    expect(sorted(rows).map((r) => r[3])).toEqual([noonSec - 60, noonSec, noonSec + 60]);
  });

  it('given a timestamp of 0, then its minute is 0', () => {
    expect(aggregate([usage({ timestampMs: 0 })])[0]![3]).toBe(0);
  });

  it('given different customers, meters or dimensions, then rows stay apart', () => {
    const rows = aggregate([
      usage(),
      usage({ customer: 'globex' }),
      usage({ meter: 'images', dimensions: '{"model":"a"}' }),
      usage({ meter: 'images', dimensions: '{"model":"b"}' }),
      usage({ meter: 'images', dimensions: '{"model":"b"}' }),
    ]);
    expect(sorted(rows)).toEqual([
      ['acme', 'images', '{"model":"a"}', noonSec, one, 1],
      ['acme', 'images', '{"model":"b"}', noonSec, 2n * one, 2],
      ['acme', 'tokens', '{}', noonSec, one, 1],
      ['globex', 'tokens', '{}', noonSec, one, 1],
    ]);
  });

  it('given usage naming holds, then each hold gets rows of its own and usage naming none keeps the plain row', () => {
    const rows = aggregate([
      usage(),
      usage({ hold: 'h.a.one' }),
      usage({ hold: 'h.a.one', scaled: 2n * one }),
      usage({ hold: 'h.a.two' }),
    ]);
    expect(sorted(rows)).toEqual([
      ['acme', 'tokens', '{}', noonSec, one, 1],
      ['acme', 'tokens', '{}', noonSec, 3n * one, 2, 'h.a.one'],
      ['acme', 'tokens', '{}', noonSec, one, 1, 'h.a.two'],
    ]);
  });

  it('given a count meter, then each event counts 1 whatever its quantity', () => {
    const rows = aggregate([
      usage({ meter: 'calls', scaled: 5n * one }),
      usage({ meter: 'calls', scaled: 0n }),
      usage({ meter: 'calls', scaled: 7n }),
    ]);
    expect(rows).toEqual([['acme', 'calls', '{}', noonSec, 3n * one, 3]]);
  });

  it('given a max meter, then the row keeps the largest quantity and counts every event', () => {
    const rows = aggregate([
      usage({ meter: 'peak.gb', scaled: 3n * one }),
      usage({ meter: 'peak.gb', scaled: 7n * one }),
      usage({ meter: 'peak.gb', scaled: 5n * one }),
    ]);
    expect(rows).toEqual([['acme', 'peak.gb', '{}', noonSec, 7n * one, 3]]);
  });

  it('given sums beyond 2^64, then they stay exact', () => {
    const big = 10n ** 27n - 1n;
    expect(aggregate([usage({ scaled: big }), usage({ scaled: big }), usage({ scaled: 1n })])[0]![4]).toBe(
      2n * big + 1n,
    );
  });
});

describe('Aggregator.addRow', () => {
  it('given rows from two tasks, then sum, count and max merge as if the events had been added directly', () => {
    const first = [
      usage({ scaled: 2n }),
      usage({ meter: 'calls', scaled: 9n * one }),
      usage({ meter: 'peak.gb', scaled: 4n }),
    ];
    const second = [
      usage({ scaled: 3n }),
      usage({ meter: 'calls', scaled: 0n }),
      usage({ meter: 'peak.gb', scaled: 9n }),
      usage({ meter: 'peak.gb', scaled: 1n }),
    ];
    const merged = new Aggregator(meters);
    for (const row of [...aggregate(first), ...aggregate(second)]) merged.addRow(row);
    expect(sorted(merged.drain())).toEqual([
      ['acme', 'calls', '{}', noonSec, 2n * one, 2],
      ['acme', 'peak.gb', '{}', noonSec, 9n, 3],
      ['acme', 'tokens', '{}', noonSec, 5n, 2],
    ]);
  });

  it('given a row, then merging more into it does not change the caller’s array', () => {
    const row: AggregateRow = ['acme', 'tokens', '{}', noonSec, 5n, 1];
    const merged = new Aggregator(meters);
    merged.addRow(row);
    merged.addRow(['acme', 'tokens', '{}', noonSec, 6n, 2]);
    expect(row).toEqual(['acme', 'tokens', '{}', noonSec, 5n, 1]);
    expect(merged.drain()).toEqual([['acme', 'tokens', '{}', noonSec, 11n, 3]]);
  });

  it('given random events split into random groups, then aggregating per group and merging equals aggregating all at once (property)', () => {
    const eventArbitrary = fc.record({
      customer: fc.constantFrom('acme', 'globex', 'initech'),
      meter: fc.constantFrom('tokens', 'images', 'calls', 'peak.gb'),
      dimensions: fc.constantFrom('{}', '{"model":"a"}', '{"model":"b"}'),
      timestampMs: fc.integer({ min: noonMs - 180_000, max: noonMs + 180_000 }),
      scaled: fc.bigInt({ min: 0n, max: 10n ** 27n - 1n }),
      hold: fc.constantFrom('', 'aG9sZA.Y3JlZGl0cw.AAAAAAAAAAAAAAAA', 'aG9sZA.Y3JlZGl0cw.BBBBBBBBBBBBBBBB'),
    });
    const grouped = fc.array(fc.tuple(eventArbitrary, fc.nat({ max: 4 })), { maxLength: 60 });
    fc.assert(
      fc.property(grouped, (pairs) => {
        const events = pairs.map(([e], i) => ({ id: `p${i}`, ...e }));
        const groups: UsageEvent[][] = [[], [], [], [], []];
        pairs.forEach(([, group], i) => groups[group]!.push(events[i]!));
        const merged = new Aggregator(meters);
        for (const group of groups) for (const row of aggregate(group)) merged.addRow(row);
        expect(sorted(merged.drain())).toEqual(sorted(aggregate(events)));
      }),
    );
  });
});

describe('Aggregator.drain', () => {
  it('returns every row once and leaves the aggregator empty', () => {
    const aggregator = new Aggregator(meters);
    aggregator.addEvent(usage());
    aggregator.addEvent(usage({ customer: 'globex' }));
    expect(aggregator.size).toBe(2);
    expect(aggregator.drain()).toHaveLength(2);
    expect(aggregator.size).toBe(0);
    expect(aggregator.drain()).toEqual([]);
  });

  it('given events after a drain, then they start new rows instead of adding to drained ones', () => {
    const aggregator = new Aggregator(meters);
    aggregator.addEvent(usage({ scaled: 4n }));
    const drained = aggregator.drain();
    aggregator.addEvent(usage({ scaled: 6n }));
    expect(aggregator.drain()).toEqual([['acme', 'tokens', '{}', noonSec, 6n, 1]]);
    expect(drained).toEqual([['acme', 'tokens', '{}', noonSec, 4n, 1]]);
  });
});

describe('packMessages', () => {
  const meters = { revision: 3, json: '{}' };
  const bytes = (...values: number[]) => Uint8Array.from(values);

  it('given payloads, then data holds them back to back, offsets has n + 1 entries and formats one code each', () => {
    const payloads = [bytes(1, 2, 3), bytes(), bytes(4, 5, 6, 7, 8)];
    const task = packMessages(payloads, ['msgpack', 'json', 'json'], meters);
    expect([...task.data]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(task.offsets).toBeInstanceOf(Uint32Array);
    expect([...task.offsets]).toEqual([0, 3, 3, 8]);
    expect([...task.formats]).toEqual([0, 1, 1]);
    payloads.forEach((payload, i) => {
      expect(task.data.subarray(task.offsets[i]!, task.offsets[i + 1]!)).toEqual(payload);
    });
  });

  it('given payloads that are views into a shared read buffer, then data.buffer is a fresh ArrayBuffer of exactly the total length', () => {
    const shared = new Uint8Array(64).map((_, i) => i);
    const payloads = [shared.subarray(10, 14), shared.subarray(40, 42)];
    const task = packMessages(payloads, ['json', 'msgpack'], meters);
    expect(task.data.buffer).toBeInstanceOf(ArrayBuffer);
    expect(task.data.buffer).not.toBe(shared.buffer);
    expect(task.data.byteOffset).toBe(0);
    expect(task.data.buffer.byteLength).toBe(6);
    expect([...task.data]).toEqual([10, 11, 12, 13, 40, 41]);
    expect([...task.formats]).toEqual([1, 0]);
  });

  it('given the task buffer is transferred, then the clone has the bytes and the source payloads are untouched', () => {
    const shared = new Uint8Array(16).fill(7);
    const payloads = [shared.subarray(0, 4), shared.subarray(8, 16)];
    const task = packMessages(payloads, ['msgpack', 'msgpack'], meters);
    const buffer = task.data.buffer;
    expect(buffer).toBeInstanceOf(ArrayBuffer);
    const moved = structuredClone(task, { transfer: [buffer as ArrayBuffer] });
    expect(task.data.byteLength).toBe(0); // detached: it really moved
    expect(moved.data.byteLength).toBe(12);
    expect([...moved.offsets]).toEqual([0, 4, 12]);
    expect(shared.buffer.byteLength).toBe(16);
    expect([...shared]).toEqual(new Array(16).fill(7));
  });

  it('given a payload changed after packing, then the task keeps the packed bytes (copied, not shared)', () => {
    const payload = bytes(1, 2);
    const task = packMessages([payload], ['json'], meters);
    payload[0] = 99;
    expect([...task.data]).toEqual([1, 2]);
  });

  it('given no payloads, then data is empty and offsets is [0]', () => {
    const task = packMessages([], [], meters);
    expect(task.data.byteLength).toBe(0);
    expect(task.data.buffer.byteLength).toBe(0);
    expect([...task.offsets]).toEqual([0]);
    expect(task.formats).toHaveLength(0);
  });

  it('given meter definitions, then the task carries them with their revision', () => {
    expect(packMessages([bytes(1)], ['json'], meters).meters).toBe(meters);
  });
});
