/**
 * The two byte scanners (the gateway's scanValidBatch, the rater's scanBatch)
 * against the full decoder and validator, on near-valid events: a valid event
 * with exactly one field nudged to just inside or just outside one rule's
 * edge. Whatever a scanner accepts, the full path must accept too (the
 * gateway's with the lateness/skew window, the rater's without one: it only
 * needs a timestamp ≥ 0). So dropping any single check from either scanner
 * makes one nudge below pass a scanner and fail the full path.
 *
 * The rules that differ on purpose are named here: the gateway checks the
 * time window, the rater only that a timestamp is a non-negative safe
 * integer; `max` meters and integer quantities from 10^15 go to the rater's
 * full path (its fast aggregator sums, and stays exact below 10^15).
 */
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { scanValidBatch } from '../../ingest/msgpack-split.js';
import { ScannedEvents, scanBatch } from '../../rater/aggregate.js';
import { validateEvents } from './batch.js';
import { eventLimits, type TimestampWindow } from './event.js';
import type { MeterDefinitions } from './meters.js';

const packr = new Packr({ useRecords: false });
const meters: MeterDefinitions = Object.assign(Object.create(null), {
  tokens: { aggregation: 'sum', dimensions: [] },
  images: { aggregation: 'sum', dimensions: ['model', 'size'] },
  peak: { aggregation: 'max', dimensions: [] },
});
const receivedMs = 1_700_000_000_000;
const window: TimestampWindow = { receivedMs, lateMs: 86_400_000, skewMs: 300_000 };

type Event = Record<string, unknown>;
const base = (): Event => ({
  id: 'e-1',
  customer: 'cust-1',
  meter: 'images',
  quantity: '2.5',
  timestamp: receivedMs - 60_000,
  dimensions: { model: 'm' },
});

/**
 * [what it nudges, the change, whether the result is valid for the gateway (window), and for the rater (no window)].
 */
const nudges: [string, (e: Event) => void, boolean, boolean][] = [
  ['timestamp at the skew edge', (e) => (e.timestamp = receivedMs + window.skewMs), true, true],
  ['timestamp 1 ms past the skew edge', (e) => (e.timestamp = receivedMs + window.skewMs + 1), false, true],
  ['timestamp at the lateness edge', (e) => (e.timestamp = receivedMs - window.lateMs), true, true],
  ['timestamp 1 ms before the lateness edge', (e) => (e.timestamp = receivedMs - window.lateMs - 1), false, true],
  ['timestamp -1', (e) => (e.timestamp = -1), false, false],
  ['timestamp a fraction', (e) => (e.timestamp = receivedMs - 0.5), false, false],
  ['id of 128', (e) => (e.id = 'i'.repeat(eventLimits.idLengthMax)), true, true],
  ['id of 129', (e) => (e.id = 'i'.repeat(eventLimits.idLengthMax + 1)), false, false],
  ['id empty', (e) => (e.id = ''), false, false],
  ['customer of 128', (e) => (e.customer = 'c'.repeat(eventLimits.customerLengthMax)), true, true],
  ['customer of 129', (e) => (e.customer = 'c'.repeat(eventLimits.customerLengthMax + 1)), false, false],
  ['customer with a space', (e) => (e.customer = 'cust 1'), false, false],
  ['customer with a slash', (e) => (e.customer = 'cust/1'), false, false],
  ['quantity with 18 integer digits', (e) => (e.quantity = '9'.repeat(18)), true, true],
  ['quantity with 19 integer digits', (e) => (e.quantity = '9'.repeat(19)), false, false],
  ['quantity with 9 fraction digits', (e) => (e.quantity = '0.123456789'), true, true],
  ['quantity with 10 fraction digits', (e) => (e.quantity = '0.1234567891'), false, false],
  ['quantity negative', (e) => (e.quantity = -1), false, false],
  ['quantity an integer of 10^15', (e) => (e.quantity = 1e15), true, true],
  ['quantity an integer just under 10^15', (e) => (e.quantity = 1e15 - 1), true, true],
  ['quantity 0', (e) => (e.quantity = 0), true, true],
  ['a max meter', (e) => ((e.meter = 'peak'), delete e.dimensions), true, true],
  ['an unknown meter', (e) => (e.meter = 'imagez'), false, false],
  [
    '16 dimensions',
    (e) => (e.dimensions = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v']))),
    true,
    true,
  ],
  [
    '17 dimensions',
    (e) => (e.dimensions = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']))),
    false,
    false,
  ],
  ['a dimension key of 64', (e) => (e.dimensions = { ['k'.repeat(64)]: 'v' }), true, true],
  ['a dimension key of 65', (e) => (e.dimensions = { ['k'.repeat(65)]: 'v' }), false, false],
  ['a dimension value of 128', (e) => (e.dimensions = { model: 'v'.repeat(128) }), true, true],
  ['a dimension value of 129', (e) => (e.dimensions = { model: 'v'.repeat(129) }), false, false],
  ['a dimension value not a string', (e) => (e.dimensions = { model: 7 }), false, false],
  ['an unknown field', (e) => (e.extra = 1), false, false],
  ['no timestamp', (e) => delete e.timestamp, false, false],
  ['no customer', (e) => delete e.customer, false, false],
  ['a __proto__ dimension key', (e) => (e.dimensions = JSON.parse('{"__proto__": "x"}')), false, false],
];

function fullAccepts(events: Event[], withWindow: boolean): boolean {
  try {
    validateEvents(events, meters, withWindow ? window : undefined);
    return true;
  } catch {
    return false;
  }
}

describe('the byte scanners against the full validator, on near-valid events', () => {
  it.each(nudges)('%s: what a scanner accepts, the full path accepts', (_name, nudge, gatewayValid, raterValid) => {
    const event = base();
    nudge(event);
    const events = [base(), event];
    expect(fullAccepts(events, true)).toBe(gatewayValid);
    expect(fullAccepts(events, false)).toBe(raterValid);
    const body = packr.pack(events);
    const gateway = scanValidBatch(body, meters, window, 10_000, 4);
    if (!gatewayValid) expect(gateway).toBeUndefined();
    const rater = scanBatch(body, meters, new ScannedEvents(), true);
    if (!raterValid) expect(rater).toBe(false);
  });

  it("takes boundary-valid events on the fast paths (so the checks above are the scanners' own)", () => {
    const taken = nudges
      .filter(([, , gatewayValid]) => gatewayValid)
      .map(([name, nudge]) => {
        const event = base();
        nudge(event);
        return [name, scanValidBatch(packr.pack([base(), event]), meters, window, 10_000, 4) !== undefined];
      });
    // Every gateway-valid nudge is taken by the gateway's scanner.
    expect(taken.filter(([, ok]) => !ok)).toEqual([]);
    // The rater's fast aggregator sums in scaled numbers exact below 10^15, and does not compare (max): those go to
    // its full path.
    const raterFullPath = new Set(['a max meter', 'quantity an integer of 10^15', 'quantity with 18 integer digits']);
    const raterTaken = nudges
      .filter(([name, , , raterValid]) => raterValid && !raterFullPath.has(name))
      .map(([name, nudge]) => {
        const event = base();
        nudge(event);
        return [name, scanBatch(packr.pack([base(), event]), meters, new ScannedEvents(), true)];
      });
    expect(raterTaken.filter(([, ok]) => !ok)).toEqual([]);
  });

  it('for random mixes of nudged events, neither scanner ever accepts a batch the full path refuses', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: nudges.length - 1 }), { minLength: 1, maxLength: 6 }), (picks) => {
        const events = picks.map((p) => {
          const event = base();
          event.id = `e-${Math.random()}`;
          nudges[p]![1](event);
          return event;
        });
        const body = packr.pack(events);
        if (scanValidBatch(body, meters, window, 10_000, 4) !== undefined) expect(fullAccepts(events, true)).toBe(true);
        if (scanBatch(body, meters, new ScannedEvents(), true)) expect(fullAccepts(events, false)).toBe(true);
      }),
      { numRuns: 500, seed: 1130 },
    );
  });
});
