/**
 * The pure rules of outstanding unpriced usage: which run's line is which
 * (ids a resumed run finds again), and how an outstanding line is priced once
 * a rate card version prices it.
 */
import { describe, expect, it } from 'vitest';
import { parseCatalog } from '../catalog/model.js';
import { formatAmount, money } from '../shared/money.js';
import { priceOutstanding } from './price-usage.js';
import { unpricedWarnings, type SettlementReport } from './report.js';
import { foundLines, type OutstandingLine } from './unpriced.js';
import type { SelectedLine } from './usage-reader.js';

const sec = (iso: string): number => Date.parse(iso) / 1000;

const catalog = parseCatalog({
  credit_units: [{ id: 'credits', name: 'Credits' }],
  meters: [
    { key: 'images', aggregation: 'sum', dimensions: ['size'] },
    { key: 'tokens', aggregation: 'sum' },
  ],
  rate_card: {
    versions: [
      { version: 'v1', effective_from: '2026-01-01T00:00:00Z', rows: [] },
      {
        version: 'v2',
        effective_from: '2026-02-01T00:00:00Z',
        rows: [
          { meter: 'images', match: { size: 'large' }, unit: 'credits', price: { model: 'unit', amount: '0.3' } },
          {
            meter: 'tokens',
            unit: 'credits',
            price: {
              model: 'graduated',
              tiers: [
                { up_to: '100', amount: '1' },
                { up_to: null, amount: '0.5' },
              ],
            },
          },
        ],
      },
    ],
  },
  packages: [],
  plans: [],
  subscriptions: [],
});

function selected(meter: string, dimensions: string, quantity: string, late = false): SelectedLine {
  return {
    customer: 'acme',
    meter,
    dimensions,
    fromSec: sec('2026-01-10T00:00:00Z'),
    quantity: money(quantity),
    events: 1,
    firstMinuteSec: sec('2026-01-10T00:07:00Z'),
    late,
  };
}

function outstanding(meter: string, dimensions: string, quantity: string): OutstandingLine {
  return foundLines('run:1:2', [{ line: selected(meter, dimensions, quantity), reason: 'no row' }])[0]!;
}

describe('outstanding unpriced lines', () => {
  it('given the same line found by the same run twice (a resumed run), then its id is the same; another run or line differs', () => {
    const line = selected('images', '{"size":"large"}', '3');
    const [a] = foundLines('run:60:120', [{ line, reason: 'r' }]);
    const [b] = foundLines('run:60:120', [{ line: { ...line }, reason: 'r' }]);
    const [otherRun] = foundLines('run:120:180', [{ line, reason: 'r' }]);
    const [late] = foundLines('run:60:120', [{ line: { ...line, late: true }, reason: 'r' }]);
    expect(a!.lineId).toBe(b!.lineId);
    expect(new Set([a!.lineId, otherRun!.lineId, late!.lineId]).size).toBe(3);
    expect(a).toMatchObject({ sinceSec: sec('2026-01-10T00:07:00Z'), foundBy: 'run:60:120', reason: 'r' });
  });

  it('given a window ending before the version with a row, then the line stays outstanding with the reason as of now', () => {
    const { billed, still } = priceOutstanding(
      catalog,
      [outstanding('images', '{"size":"large"}', '3')],
      sec('2026-02-01T00:00:00Z'),
    );
    expect(billed).toEqual([]);
    expect(still.map((l) => l.reason)).toEqual(['rate card v1 has no row for this meter and dimensions']);
  });

  it('given a window whose last minute the new version prices, then the line is billed at that version, on its own quantity', () => {
    const lines = [
      outstanding('images', '{"size":"large"}', '3'),
      outstanding('images', '{"size":"small"}', '1'),
      // Graduated: counted from the first tier, apart from the month's other usage.
      outstanding('tokens', '{}', '150'),
    ];
    const { billed, still } = priceOutstanding(catalog, lines, sec('2026-02-01T00:01:00Z'));
    expect(billed.map((p) => [p.line.meter, p.rateVersion, p.unit, formatAmount(p.cost), p.outstanding])).toEqual([
      ['images', 'v2', 'credits', '0.9', lines[0]],
      ['tokens', 'v2', 'credits', '125', lines[2]],
    ]);
    expect(billed[0]!.line).toMatchObject({ fromSec: lines[0]!.sinceSec, firstMinuteSec: lines[0]!.sinceSec });
    expect(still).toEqual([{ ...lines[1], reason: 'rate card v2 has no row for this meter and dimensions' }]);
  });

  it('given no rate card version before the window end, then nothing is billed', () => {
    const { billed, still } = priceOutstanding(
      catalog,
      [outstanding('images', '{"size":"large"}', '3')],
      sec('2025-12-01T00:00:00Z'),
    );
    expect(billed).toEqual([]);
    expect(still[0]!.reason).toBe('no rate card version in force');
  });
});

describe('the warning a run logs about outstanding unpriced usage', () => {
  it('given 120 outstanding lines over two customers, then three log lines name every line once, each with the total', () => {
    const report: SettlementReport = {
      runId: 'run:0:60',
      fromSec: 0,
      untilSec: 60,
      entriesPosted: 0,
      entriesAlreadyPosted: 0,
      customers: {},
    };
    for (const customer of ['acme', 'beta']) {
      report.customers[customer] = {
        rated: [],
        deducted: {},
        unrated: [],
        overLimit: {},
        unpricedOutstanding: Array.from({ length: 60 }, (_, i) => ({
          ...outstanding('images', `{"size":"s${i}"}`, String(i + 1)),
          customer,
        })),
      };
    }
    const warnings = unpricedWarnings(report);
    expect(warnings.map((w) => [w.runId, w.total, w.first, w.lines.length])).toEqual([
      ['run:0:60', 120, 1, 50],
      ['run:0:60', 120, 51, 50],
      ['run:0:60', 120, 101, 20],
    ]);
    const named = warnings.flatMap((w) => w.lines.map((l) => `${l.customer} ${l.dimensions.size} ${l.quantity}`));
    expect(new Set(named).size).toBe(120);
    expect(warnings[0]!.lines[0]).toEqual({
      customer: 'acme',
      meter: 'images',
      dimensions: { size: 's0' },
      quantity: '1',
      since: '2026-01-10T00:07:00.000Z',
      found_by: 'run:1:2',
      reason: 'no row',
    });
  });

  it('given nothing outstanding, then nothing is logged', () => {
    expect(
      unpricedWarnings({
        runId: 'run:0:60',
        fromSec: 0,
        untilSec: 60,
        entriesPosted: 0,
        entriesAlreadyPosted: 0,
        customers: { acme: { rated: [], deducted: {}, unrated: [], overLimit: {} } },
      }),
    ).toEqual([]);
  });
});
