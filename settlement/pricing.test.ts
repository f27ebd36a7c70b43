import { readFileSync } from 'node:fs';
import { Decimal } from 'decimal.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseCatalog, type Catalog, type Price } from '../catalog/model.js';
import { DrawdownError } from '../shared/errors.js';
import { formatAmount, money, parseStoredDecimal, sumMoney } from '../shared/money.js';
import { costDependsOnPeriod, costOf, matchRow, versionAt } from './pricing.js';
import { priceUsage, type PricingOutcome } from './price-usage.js';
import { priorUsageKey, type PriorQuantity, type PriorUsage } from './usage-reader.js';
import type { UsageLine } from './usage-reader.js';

const demoCatalog = parseCatalog(
  JSON.parse(readFileSync(new URL('../deploy/demo-catalog.json', import.meta.url), 'utf8')),
);

const januarySec = Date.parse('2026-01-15T00:00:00Z') / 1000;
const februarySec = Date.parse('2026-02-15T00:00:00Z') / 1000;

/** A usage line as the reader returns it: quantity parsed from stored decimal text. */
function line(meter: string, dimensions: Record<string, string>, quantity: string, fromSec = januarySec): UsageLine {
  const sorted = Object.fromEntries(Object.entries(dimensions).sort(([a], [b]) => (a < b ? -1 : 1)));
  return {
    customer: 'acme',
    meter,
    dimensions: JSON.stringify(sorted),
    fromSec,
    quantity: parseStoredDecimal(quantity),
    events: 1,
    firstMinuteSec: fromSec,
  };
}

function costs(catalog: Catalog, lines: UsageLine[]): string[] {
  const outcome = priceUsage(catalog, lines);
  expect(outcome.unrated).toEqual([]);
  return outcome.priced.map((p) => formatAmount(p.cost));
}

function baseCatalogJson(): Record<string, any> {
  return {
    credit_units: [{ id: 'credits', name: 'Credits', fiat: { currency: 'USD', value: '1.00' }, precision: 2 }],
    meters: [
      { key: 'tokens', aggregation: 'sum' },
      { key: 'images', aggregation: 'sum', dimensions: ['resolution', 'model'] },
      { key: 'calls', aggregation: 'count' },
    ],
    rate_card: {
      versions: [
        // Listed out of order on purpose: the catalog sorts by effective_from.
        {
          version: 'v2',
          effective_from: '2026-02-01T00:00:00Z',
          rows: [
            {
              meter: 'tokens',
              unit: 'credits',
              price: { model: 'package', amount: '5.00', size: '1000000', rounding: 'up' },
            },
          ],
        },
        {
          version: 'v1',
          effective_from: '2026-01-01T00:00:00Z',
          rows: [
            { meter: 'tokens', unit: 'credits', price: { model: 'package', amount: '5.00', size: '1000000' } },
            { meter: 'images', match: { model: 'm1' }, unit: 'credits', price: { model: 'unit', amount: '2' } },
            {
              meter: 'images',
              match: { model: 'm1', resolution: '4K' },
              unit: 'credits',
              price: { model: 'unit', amount: '7' },
            },
          ],
        },
      ],
    },
    packages: [{ id: 'credits-100', price: { currency: 'USD', amount: '100.00' }, credits: '100', unit: 'credits' }],
  };
}

const catalog = parseCatalog(baseCatalogJson());

function catalogWithRows(rows: unknown[]): Catalog {
  const raw = baseCatalogJson();
  raw.rate_card.versions = [{ version: 'only', effective_from: '2026-01-01T00:00:00Z', rows }];
  return parseCatalog(raw);
}

describe('SPEC §7 example 1: unified credits', () => {
  it('given 2,000,000 GPT-4o input tokens at 5.00 per 1,000,000, then the cost is 10.00', () => {
    expect(costs(demoCatalog, [line('gpt-4o.input_tokens', {}, '2000000')])).toEqual(['10']);
  });

  it('given 50 standard DALL-E 3 images at 0.04, then the cost is 2.00', () => {
    expect(costs(demoCatalog, [line('dall-e-3.images', { quality: 'standard', size: '1024x1024' }, '50')])).toEqual([
      '2',
    ]);
  });

  it('given both, then settlement deducts 12.00 from the 100-credit package, leaving 88', () => {
    const outcome = priceUsage(demoCatalog, [
      line('gpt-4o.input_tokens', {}, '2000000'),
      line('dall-e-3.images', { quality: 'standard' }, '50'),
    ]);
    const total = sumMoney(outcome.priced.map((p) => p.cost));
    expect(formatAmount(total)).toBe('12');
    expect(outcome.priced.every((p) => p.unit === 'credits' && p.rateVersion === '2026-01')).toBe(true);
    expect(formatAmount(demoCatalog.packages.get('credits-100')!.credits.minus(total))).toBe('88');
  });
});

describe('SPEC §7 example 2: dimensional prices', () => {
  it('given 10 + 4 + 2 + 5 images of the four rows, then they cost 30 + 20 + 20 + 30 = 100', () => {
    const lines = [
      line('images', { model: 'Nano Banana', resolution: '1K', input: 'prompt' }, '10'),
      line('images', { model: 'Nano Banana', resolution: '1K', input: 'prompt+image' }, '4'),
      line('images', { model: 'Nano Banana Pro', resolution: '4K', input: 'prompt+multi-image' }, '2'),
      line('images', { model: 'GPT Image 1.5', resolution: '2K', input: 'prompt' }, '5'),
    ];
    const outcome = priceUsage(demoCatalog, lines);
    expect(outcome.unrated).toEqual([]);
    expect(outcome.priced.map((p) => formatAmount(p.cost))).toEqual(['30', '20', '20', '30']);
    expect(formatAmount(sumMoney(outcome.priced.map((p) => p.cost)))).toBe('100');
  });
});

describe('package prices', () => {
  it('given 1,500,000 tokens at 5.00 per 1,000,000 prorated, then the cost is 7.50', () => {
    expect(costs(catalog, [line('tokens', {}, '1500000', januarySec)])).toEqual(['7.5']);
  });

  it('given 1,500,000 tokens at 5.00 per 1,000,000 rounded up to whole packages, then the cost is 10.00', () => {
    expect(costs(catalog, [line('tokens', {}, '1500000', februarySec)])).toEqual(['10']);
  });

  it('given exactly whole packages with rounding up, then no extra package is billed', () => {
    expect(costs(catalog, [line('tokens', {}, '2000000', februarySec)])).toEqual(['10']);
    expect(costs(catalog, [line('tokens', {}, '0', februarySec)])).toEqual(['0']);
  });

  it('given one token more than a package with rounding up, then a second package is billed', () => {
    expect(costs(catalog, [line('tokens', {}, '1000000.000000001', februarySec)])).toEqual(['10']);
  });

  it('given 3 tokens at 5.00 per 1,000,000, then the cost is exactly 0.000015', () => {
    expect(costs(catalog, [line('tokens', {}, '3')])).toEqual(['0.000015']);
  });

  it('given a package size that does not divide evenly (3.50 per 7), then the cost is still rounded half-up from the exact value', () => {
    const price: Price = { model: 'package', amount: money('3.50'), size: money('7'), rounding: 'prorate' };
    // 10.000000001 × 3.5 / 7 = 5.0000000005 exactly, which rounds half-up to 5.000000001.
    expect(formatAmount(costOf(price, money('10.000000001')))).toBe('5.000000001');
    // 0.000000009 × 3.5 / 7 = 0.0000000045 exactly → 0.000000005.
    expect(formatAmount(costOf(price, money('0.000000009')))).toBe('0.000000005');
  });
});

describe('unit prices', () => {
  it('given a price of 0.0000000004 for 1 unit, then the cost rounds to 0', () => {
    const priced = catalogWithRows([
      { meter: 'tokens', unit: 'credits', price: { model: 'unit', amount: '0.0000000004' } },
    ]);
    expect(costs(priced, [line('tokens', {}, '1')])).toEqual(['0']);
  });

  it('given a price of 0.0000000005 for 1 unit, then the cost rounds half-up to 0.000000001', () => {
    const priced = catalogWithRows([
      { meter: 'tokens', unit: 'credits', price: { model: 'unit', amount: '0.0000000005' } },
    ]);
    expect(costs(priced, [line('tokens', {}, '1')])).toEqual(['0.000000001']);
  });

  it('given a fractional quantity, then the product is exact (no float error)', () => {
    const priced = catalogWithRows([{ meter: 'tokens', unit: 'credits', price: { model: 'unit', amount: '0.1' } }]);
    expect(costs(priced, [line('tokens', {}, '0.2')])).toEqual(['0.02']);
    expect(costs(priced, [line('tokens', {}, '999999999999999999.999999999')])).toEqual(['100000000000000000']);
  });
});

describe('row matching', () => {
  const version = catalog.rateCard.find((v) => v.version === 'v1')!;

  it('given a line matching both {model} and {model, resolution}, then the more specific row wins', () => {
    expect(costs(catalog, [line('images', { model: 'm1', resolution: '4K' }, '1')])).toEqual(['7']);
    const price = matchRow(version, 'images', { model: 'm1', resolution: '4K' })!.price;
    expect(price.model === 'unit' && price.amount.toFixed()).toBe('7');
  });

  it('given a line matching only {model}, then the less specific row prices it', () => {
    expect(costs(catalog, [line('images', { model: 'm1', resolution: '1K' }, '3')])).toEqual(['6']);
    expect(costs(catalog, [line('images', { model: 'm1' }, '3')])).toEqual(['6']);
  });

  it('given two equally specific rows that both match, then the choice does not depend on row order', () => {
    const rows = [
      { meter: 'images', match: { resolution: '4K' }, unit: 'credits', price: { model: 'unit', amount: '1' } },
      { meter: 'images', match: { model: 'm1' }, unit: 'credits', price: { model: 'unit', amount: '2' } },
    ];
    const forward = catalogWithRows(rows);
    const backward = catalogWithRows([...rows].reverse());
    const usage = [line('images', { model: 'm1', resolution: '4K' }, '1')];
    expect(costs(forward, usage)).toEqual(costs(backward, usage));
  });
});

describe('unrated usage is reported, never priced at zero', () => {
  it('given dimensions that match no row, then the line is unrated', () => {
    const usage = line('images', { model: 'm2', resolution: '4K' }, '5');
    const outcome = priceUsage(catalog, [usage]);
    expect(outcome.priced).toEqual([]);
    expect(outcome.unrated).toHaveLength(1);
    expect(outcome.unrated[0]!.line).toBe(usage);
    expect(outcome.unrated[0]!.reason).toContain('v1');
  });

  it('given a meter that no row prices, then the line is unrated', () => {
    const outcome = priceUsage(catalog, [line('calls', {}, '12')]);
    expect(outcome.priced).toEqual([]);
    expect(outcome.unrated.map((u) => u.line.meter)).toEqual(['calls']);
  });

  it('given usage before the first rate card version, then the line is unrated', () => {
    const before = Date.parse('2025-12-31T23:59:00Z') / 1000;
    const outcome = priceUsage(catalog, [line('tokens', {}, '1000000', before)]);
    expect(outcome.priced).toEqual([]);
    expect(outcome.unrated).toHaveLength(1);
    expect(outcome.unrated[0]!.reason).toMatch(/no rate card version/);
  });

  it('given a mix, then priced and unrated lines are split without losing any', () => {
    const lines = [line('tokens', {}, '1000000'), line('calls', {}, '1'), line('images', { model: 'm1' }, '1')];
    const outcome = priceUsage(catalog, lines);
    expect(outcome.priced.map((p) => p.line)).toEqual([lines[0], lines[2]]);
    expect(outcome.unrated.map((u) => u.line)).toEqual([lines[1]]);
  });
});

describe('versionAt', () => {
  const at = (iso: string) => versionAt(catalog.rateCard, Date.parse(iso))?.version;

  it('sorts versions by effective_from whatever their order in the file', () => {
    expect(catalog.rateCard.map((v) => v.version)).toEqual(['v1', 'v2']);
  });

  it('given a time before the first version, then there is none', () => {
    expect(at('2025-12-31T23:59:59.999Z')).toBeUndefined();
  });

  it('given a time at or after a version start, then that version is in force until the next one', () => {
    expect(at('2026-01-01T00:00:00Z')).toBe('v1');
    expect(at('2026-01-31T23:59:59.999Z')).toBe('v1');
    expect(at('2026-02-01T00:00:00Z')).toBe('v2');
    expect(at('2030-01-01T00:00:00Z')).toBe('v2');
  });

  it('given usage lines in each version, then each is priced by its own version', () => {
    const outcome = priceUsage(catalog, [line('tokens', {}, '1', januarySec), line('tokens', {}, '1', februarySec)]);
    expect(outcome.priced.map((p) => [p.rateVersion, formatAmount(p.cost)])).toEqual([
      ['v1', '0.000005'],
      ['v2', '5'],
    ]);
  });
});

describe('parseCatalog', () => {
  function problemsOf(raw: unknown): [string, string][] {
    try {
      parseCatalog(raw);
    } catch (error) {
      expect(error).toBeInstanceOf(DrawdownError);
      expect((error as DrawdownError).code).toBe('catalog_invalid');
      return (error as DrawdownError).problems.map((p) => [p.field, p.code]);
    }
    throw new Error('expected catalog_invalid; the catalog was accepted');
  }

  function withRow(row: Record<string, unknown>): Record<string, any> {
    const raw = baseCatalogJson();
    raw.rate_card.versions[1].rows.push(row);
    return raw;
  }

  const row3 = 'rate_card.versions[1].rows[3]';

  it('given the demo catalog, then meters, units, versions and packages are read', () => {
    expect([...demoCatalog.meters.keys()]).toEqual(['gpt-4o.input_tokens', 'dall-e-3.images', 'images']);
    expect(demoCatalog.meters.get('images')!.dimensions).toEqual(['input', 'model', 'resolution']);
    expect(demoCatalog.creditUnits.get('credits')!.precision).toBe(2);
    expect(demoCatalog.rateCard).toHaveLength(1);
    expect(demoCatalog.packages.get('credits-100')!.price.amount.toFixed()).toBe('100');
  });

  it.each([
    [
      'a row for an unknown meter',
      { meter: 'nope', unit: 'credits', price: { model: 'unit', amount: '1' } },
      `${row3}.meter`,
      'unknown',
    ],
    [
      'a row in an unknown unit',
      { meter: 'calls', unit: 'euros', price: { model: 'unit', amount: '1' } },
      `${row3}.unit`,
      'unknown',
    ],
    [
      'a match on an undeclared dimension',
      { meter: 'images', match: { color: 'red' }, unit: 'credits', price: { model: 'unit', amount: '1' } },
      `${row3}.match.color`,
      'unknown',
    ],
    [
      'an unknown price model',
      { meter: 'calls', unit: 'credits', price: { model: 'tiered', amount: '1' } },
      `${row3}.price.model`,
      'enum',
    ],
    [
      'a negative price',
      { meter: 'calls', unit: 'credits', price: { model: 'unit', amount: '-1' } },
      `${row3}.price.amount`,
      'range',
    ],
    [
      'a price that is not a decimal',
      { meter: 'calls', unit: 'credits', price: { model: 'unit', amount: '1e3' } },
      `${row3}.price.amount`,
      'type',
    ],
    [
      'a package of size 0',
      { meter: 'calls', unit: 'credits', price: { model: 'package', amount: '1', size: '0' } },
      `${row3}.price.size`,
      'range',
    ],
    [
      'an unknown package rounding',
      { meter: 'calls', unit: 'credits', price: { model: 'package', amount: '1', size: '10', rounding: 'down' } },
      `${row3}.price.rounding`,
      'enum',
    ],
  ])('given %s, then the problem names its path', (_label, row, field, code) => {
    expect(problemsOf(withRow(row))).toEqual([[field, code]]);
  });

  it('given two rows with the same meter and match (in any key order), then the second is a duplicate', () => {
    const raw = baseCatalogJson();
    raw.rate_card.versions[1].rows.push({
      meter: 'images',
      match: { resolution: '4K', model: 'm1' },
      unit: 'credits',
      price: { model: 'unit', amount: '9' },
    });
    expect(problemsOf(raw)).toEqual([[row3, 'duplicate']]);
  });

  it('given two versions taking effect at the same instant written differently, then it is a duplicate', () => {
    const raw = baseCatalogJson();
    raw.rate_card.versions[0].effective_from = '2026-01-01T01:00:00+01:00';
    expect(problemsOf(raw)).toEqual([['rate_card.versions', 'duplicate']]);
  });

  it.each(['2026-01-01', '2026-01-01T00:00:00', 'January 1, 2026', 1767225600000])(
    'given effective_from %j, then it must be an ISO instant with a zone',
    (effectiveFrom) => {
      const raw = baseCatalogJson();
      raw.rate_card.versions[0].effective_from = effectiveFrom;
      expect(problemsOf(raw)).toEqual([['rate_card.versions[0].effective_from', 'format']]);
    },
  );

  it('given a package in an unknown unit, then the problem names the package', () => {
    const raw = baseCatalogJson();
    raw.packages[0].unit = 'euros';
    expect(problemsOf(raw)).toEqual([['packages[0].unit', 'unknown']]);
  });

  it('given several problems, then all are reported together', () => {
    const raw = baseCatalogJson();
    raw.rate_card.versions[1].rows.push(
      { meter: 'nope', unit: 'credits', price: { model: 'unit', amount: '1' } },
      { meter: 'calls', unit: 'euros', price: { model: 'unit', amount: '-2' } },
    );
    raw.rate_card.versions[0].effective_from = 'soon';
    raw.packages[0].unit = 'euros';
    expect(problemsOf(raw)).toEqual([
      ['rate_card.versions[0].effective_from', 'format'],
      ['rate_card.versions[1].rows[3].meter', 'unknown'],
      ['rate_card.versions[1].rows[4].unit', 'unknown'],
      ['rate_card.versions[1].rows[4].price.amount', 'range'],
      ['packages[0].unit', 'unknown'],
    ]);
  });

  it('given a hostile key in a match (own property via JSON.parse), then it is refused', () => {
    const raw = baseCatalogJson();
    raw.rate_card.versions[1].rows.push(
      JSON.parse('{"meter":"images","match":{"__proto__":"x"},"unit":"credits","price":{"model":"unit","amount":"1"}}'),
    );
    expect(problemsOf(raw)).toEqual([[`${row3}.match.__proto__`, 'hostile_key']]);
  });

  it('given a catalog that is not an object, then it is invalid', () => {
    expect(problemsOf([])).toEqual([['catalog', 'type']]);
  });
});

describe('graduated tiers', () => {
  // 5 per million up to 1M, 4 per million up to 3M, 2 per million above.
  const tiers = [
    { up_to: '1000000', amount: '5', per: '1000000' },
    { up_to: '3000000', amount: '4', per: '1000000' },
    { up_to: null, amount: '2', per: '1000000' },
  ];
  const graduated = catalogWithRows([
    { meter: 'tokens', unit: 'credits', price: { model: 'graduated', tiers } },
    {
      meter: 'images',
      unit: 'credits',
      price: {
        model: 'graduated',
        tiers: [
          { up_to: '3', amount: '1' },
          { up_to: null, amount: '0.5' },
        ],
      },
    },
  ]);
  const price = (quantity: string, before = '0'): string => {
    const row = graduated.rateCard[0]!.rows[0]!;
    return formatAmount(costOf(row.price, money(quantity), money(before)));
  };

  it('given usage exactly at a tier bound, then all of it is priced by that tier', () => {
    expect(price('1000000')).toBe('5');
    expect(price('1000001')).toBe('5.000004');
  });

  it('given one line crossing several tiers, then each part is priced by its own tier', () => {
    // 1M × 5 + 2M × 4 + 1.5M × 2 per million = 5 + 8 + 3.
    expect(price('4500000')).toBe('16');
  });

  it('given usage already in the month, then a line starts where it left off', () => {
    expect(price('1000000', '2500000')).toBe('3'); // 0.5M × 4 + 0.5M × 2
    expect(price('1000000', '3000000')).toBe('2');
  });

  it('given zero usage, then the cost is zero at any point of the tiers', () => {
    expect(price('0')).toBe('0');
    expect(price('0', '1234567')).toBe('0');
  });

  it('given usage taken by earlier runs this month, then this run prices from that point', () => {
    const prior: PriorUsage = new Map([
      [
        priorUsageKey('acme', 'tokens', Date.parse('2026-01-01T00:00:00Z') / 1000),
        [{ dimensions: '{}', quantity: money('900000'), max: money('900000') }],
      ],
    ]);
    expect(formatAmount(priceUsage(graduated, [line('tokens', {}, '200000')], prior).priced[0]!.cost)).toBe('0.9'); // 0.1M × 5 + 0.1M × 4
    // A different month starts again at the first tier.
    expect(
      formatAmount(priceUsage(graduated, [line('tokens', {}, '200000', februarySec)], prior).priced[0]!.cost),
    ).toBe('1');
  });

  it('given several dimension sets priced by one graduated row, then they share the tiers', () => {
    const outcome = priceUsage(graduated, [line('images', { model: 'a' }, '2'), line('images', { model: 'b' }, '2')]);
    expect(outcome.priced.map((p) => formatAmount(p.cost)).sort()).toEqual(['1.5', '2']);
  });

  it.each([
    [
      'tiers out of order',
      [
        { up_to: '10', amount: '1' },
        { up_to: '5', amount: '1' },
        { up_to: null, amount: '1' },
      ],
      'tiers[1].up_to',
      'order',
    ],
    ['a closed last tier', [{ up_to: '10', amount: '1' }], 'tiers[0].up_to', 'range'],
    [
      'an open tier before the last',
      [
        { up_to: null, amount: '1' },
        { up_to: null, amount: '1' },
      ],
      'tiers[0].up_to',
      'required',
    ],
    [
      'a bound that is not an exact decimal',
      [
        { up_to: '1e6', amount: '1' },
        { up_to: null, amount: '1' },
      ],
      'tiers[0].up_to',
      'type',
    ],
    ['no tiers', [], 'tiers', 'required'],
  ])('given %s, then the catalog is refused naming the tier', (_name, badTiers, field, code) => {
    try {
      catalogWithRows([{ meter: 'tokens', unit: 'credits', price: { model: 'graduated', tiers: badTiers } }]);
      expect.unreachable('the catalog should be refused');
    } catch (error) {
      expect(error).toBeInstanceOf(DrawdownError);
      expect((error as DrawdownError).problems).toContainEqual(
        expect.objectContaining({ field: `rate_card.versions[0].rows[0].price.${field}`, code }),
      );
    }
  });

  it('given a month cut into any number of runs, then the costs add up to exactly the cost of one run', () => {
    // Usage per minute for two dimension sets, priced by one graduated row with awkward per-values.
    const awkward = catalogWithRows([
      {
        meter: 'images',
        unit: 'credits',
        price: {
          model: 'graduated',
          tiers: [
            { up_to: '7', amount: '1', per: '3' },
            { up_to: '20.5', amount: '0.7', per: '7' },
            { up_to: null, amount: '0.013' },
          ],
        },
      },
    ]);
    const minute = fc.record({
      at: fc.integer({ min: 0, max: 59 }),
      model: fc.constantFrom('a', 'b'),
      quantity: fc.integer({ min: 0, max: 4_000 }).map((n) => (n / 1000).toString()),
    });
    fc.assert(
      fc.property(
        fc.array(minute, { maxLength: 40 }),
        fc.uniqueArray(fc.integer({ min: 1, max: 59 }), { maxLength: 10 }),
        (usage, cuts) => {
          const bounds = [0, ...cuts.sort((a, b) => a - b), 60];
          const run = (from: number, until: number): UsageLine[] => {
            const byModel = new Map<string, { quantity: ReturnType<typeof money>; first: number }>();
            for (const u of usage.filter((x) => x.at >= from && x.at < until)) {
              const entry = byModel.get(u.model) ?? { quantity: money(0), first: u.at };
              byModel.set(u.model, { quantity: entry.quantity.plus(u.quantity), first: Math.min(entry.first, u.at) });
            }
            return [...byModel].map(([model, e]) => ({
              ...line('images', { model }, e.quantity.toFixed(), januarySec + from * 60),
              firstMinuteSec: januarySec + e.first * 60,
            }));
          };
          const priorOf = (until: number): PriorUsage => {
            const lines = run(0, until);
            return new Map([
              [
                priorUsageKey('acme', 'images', Date.parse('2026-01-01T00:00:00Z') / 1000),
                lines.map((l) => ({ dimensions: l.dimensions, quantity: l.quantity, max: l.quantity })),
              ],
            ]);
          };
          const total = (outcomes: ReturnType<typeof priceUsage>[]) =>
            formatAmount(sumMoney(outcomes.flatMap((o) => o.priced.map((p) => p.cost))));
          const whole = total([priceUsage(awkward, run(0, 60))]);
          const parts = total(
            bounds.slice(1).map((until, i) => priceUsage(awkward, run(bounds[i]!, until), priorOf(bounds[i]!))),
          );
          expect(parts).toBe(whole);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('independent of the schedule: every aggregation and price model counts over the calendar month', () => {
  type Aggregation = 'sum' | 'count' | 'max';
  // Awkward on purpose: per-line roundings, whole packages and tier bounds all fall inside lines.
  const prices: Record<string, unknown> = {
    unit: { model: 'unit', amount: '0.0000000007' },
    'unit-thirds': { model: 'unit', amount: '1.333333333333' },
    prorate: { model: 'package', amount: '3.5', size: '7.7' },
    up: { model: 'package', amount: '2', size: '0.75', rounding: 'up' },
    graduated: {
      model: 'graduated',
      tiers: [
        { up_to: '7', amount: '1', per: '3' },
        { up_to: '20.5', amount: '0.7', per: '7' },
        { up_to: null, amount: '0.013' },
      ],
    },
  };
  const laterPrices: Record<string, unknown> = {
    unit: { model: 'unit', amount: '0.0000000011' },
    'unit-thirds': { model: 'unit', amount: '0.666666666667' },
    prorate: { model: 'package', amount: '1', size: '3' },
    up: { model: 'package', amount: '5', size: '1.1', rounding: 'up' },
    graduated: {
      model: 'graduated',
      tiers: [
        { up_to: '2', amount: '3' },
        { up_to: null, amount: '0.1' },
      ],
    },
  };
  const monthSec = Date.parse('2026-01-01T00:00:00Z') / 1000;
  const versionAtMinute = 30;

  function catalogFor(aggregation: Aggregation, model: string): Catalog {
    const raw = baseCatalogJson();
    raw.meters = [{ key: 'm', aggregation, dimensions: ['model'] }];
    // One row for every model in v1; in v2 model "b" gets its own row, so rows differ between versions.
    raw.rate_card.versions = [
      {
        version: 'v1',
        effective_from: '2026-01-01T00:00:00Z',
        rows: [{ meter: 'm', unit: 'credits', price: prices[model] }],
      },
      {
        version: 'v2',
        effective_from: new Date((monthSec + versionAtMinute * 60) * 1000).toISOString(),
        rows: [
          { meter: 'm', unit: 'credits', price: laterPrices[model] },
          { meter: 'm', match: { model: 'b' }, unit: 'credits', price: prices[model] },
        ],
      },
    ];
    return parseCatalog(raw);
  }

  interface Reading {
    at: number;
    model: string;
    quantity: string;
  }

  /** The lines a run over minutes [from, until) reads: per dimension set and rate-card part, as usage-reader.ts. */
  function linesOf(usage: readonly Reading[], aggregation: Aggregation, from: number, until: number): UsageLine[] {
    const groups = new Map<string, { model: string; part: number; quantity: Decimal; first: number }>();
    for (const u of usage) {
      if (u.at < from || u.at >= until) continue;
      const part = u.at < versionAtMinute ? 0 : 1;
      const key = `${u.model}/${part}`;
      const q = money(u.quantity);
      const g = groups.get(key);
      if (g === undefined) groups.set(key, { model: u.model, part, quantity: q, first: u.at });
      else {
        g.quantity = aggregation === 'max' ? Decimal.max(g.quantity, q) : g.quantity.plus(q);
        g.first = Math.min(g.first, u.at);
      }
    }
    return [...groups.values()].map((g) => ({
      ...line(
        'm',
        { model: g.model },
        g.quantity.toFixed(),
        monthSec + Math.max(from, g.part === 0 ? 0 : versionAtMinute) * 60,
      ),
      firstMinuteSec: monthSec + g.first * 60,
    }));
  }

  /** What runs before minute `from` took: per dimension set, total and peak, as readPriorUsage returns it. */
  function priorOf(usage: readonly Reading[], from: number): PriorUsage {
    const byModel = new Map<string, PriorQuantity>();
    for (const u of usage) {
      if (u.at >= from) continue;
      const dimensions = JSON.stringify({ model: u.model });
      const q = money(u.quantity);
      const p = byModel.get(dimensions);
      if (p === undefined) byModel.set(dimensions, { dimensions, quantity: q, max: q });
      else byModel.set(dimensions, { dimensions, quantity: p.quantity.plus(q), max: Decimal.max(p.max, q) });
    }
    return new Map([[priorUsageKey('acme', 'm', monthSec), [...byModel.values()]]]);
  }

  const cases: [Aggregation, string][] = [
    ...(['sum', 'count'] as const).flatMap((a) => Object.keys(prices).map((m) => [a, m] as [Aggregation, string])),
    ...Object.keys(prices)
      .filter((m) => m !== 'graduated')
      .map((m) => ['max', m] as [Aggregation, string]),
  ];

  it.each(cases)(
    'given a %s meter priced %s, then any cut of the month into runs costs what one run costs',
    (aggregation, model) => {
      const catalog = catalogFor(aggregation, model);
      const quantity =
        aggregation === 'count'
          ? fc.integer({ min: 0, max: 9 }).map(String)
          : fc.integer({ min: 0, max: 9_000_000 }).map((n) => money(n).dividedBy(1_000_000).toFixed());
      const reading = fc.record({
        at: fc.integer({ min: 0, max: 59 }),
        model: fc.constantFrom('a', 'b', 'c'),
        quantity,
      });
      fc.assert(
        fc.property(
          fc.array(reading, { maxLength: 30 }),
          fc.uniqueArray(fc.integer({ min: 1, max: 59 }), { maxLength: 8 }),
          (usage, cuts) => {
            const bounds = [0, ...cuts.sort((a, b) => a - b), 60];
            const total = (outcomes: PricingOutcome[]): string => {
              for (const o of outcomes) expect(o.unrated).toEqual([]);
              return formatAmount(sumMoney(outcomes.flatMap((o) => o.priced.map((p) => p.cost))));
            };
            const whole = total([priceUsage(catalog, linesOf(usage, aggregation, 0, 60))]);
            const runs = bounds
              .slice(1)
              .map((until, i) =>
                priceUsage(catalog, linesOf(usage, aggregation, bounds[i]!, until), priorOf(usage, bounds[i]!)),
              );
            expect(total(runs)).toBe(whole);
          },
        ),
        { numRuns: 150 },
      );
    },
  );

  it("given a max meter, then the month is charged on each dimension set's peak, whatever the runs saw", () => {
    const catalog = catalogFor('max', 'up'); // 2 per started 0.75 in v1
    const usage: Reading[] = [
      { at: 1, model: 'a', quantity: '1' },
      { at: 5, model: 'a', quantity: '0.5' },
      { at: 9, model: 'a', quantity: '1.4' },
      { at: 12, model: 'c', quantity: '0.1' },
    ];
    // Peaks 1.4 (a) + 0.1 (c) = 1.5 = 2 whole packages of 0.75 → 4, in one run or three.
    expect(formatAmount(sumMoney(priceUsage(catalog, linesOf(usage, 'max', 0, 60)).priced.map((p) => p.cost)))).toBe(
      '4',
    );
    const cut = [0, 3, 10, 60];
    const runs = cut
      .slice(1)
      .flatMap((until, i) =>
        priceUsage(catalog, linesOf(usage, 'max', cut[i]!, until), priorOf(usage, cut[i]!)).priced.map((p) => p.cost),
      );
    // The first peak (1) already takes 2 packages (1.5); 0.5 raises nothing; 1.4 and 0.1 fill the same 1.5.
    expect(runs.map(formatAmount)).toEqual(['4', '0', '0']);
  });

  it('given a package with rounding up, then packages are whole per row and month, not per line or run', () => {
    const catalog = catalogFor('sum', 'up');
    const usage: Reading[] = [
      { at: 1, model: 'a', quantity: '0.25' },
      { at: 2, model: 'c', quantity: '0.25' },
      { at: 20, model: 'a', quantity: '0.25' },
    ];
    // 0.75 over the month under one row: one package of 2, however it is cut.
    for (const cut of [
      [0, 60],
      [0, 2, 60],
      [0, 2, 20, 60],
    ]) {
      const runs = cut
        .slice(1)
        .flatMap((until, i) =>
          priceUsage(catalog, linesOf(usage, 'sum', cut[i]!, until), priorOf(usage, cut[i]!)).priced.map((p) => p.cost),
        );
      expect(formatAmount(sumMoney(runs))).toBe('2');
    }
  });
});

describe('costDependsOnPeriod: which lines need what earlier runs took', () => {
  const price = (raw: unknown): Price =>
    catalogWithRows([{ meter: 'tokens', unit: 'credits', price: raw }]).rateCard[0]!.rows[0]!.price;

  it.each([
    ['an integer unit price, any quantity', { model: 'unit', amount: '3' }, 'sum', '1.000000001', false],
    [
      'a unit price whose line cost has 9 fraction digits',
      { model: 'unit', amount: '0.5' },
      'sum',
      '0.00000001',
      false,
    ],
    ['a unit price whose line cost has 10', { model: 'unit', amount: '0.5' }, 'sum', '0.000000001', true],
    ['a count meter at a price finer than the ledger', { model: 'unit', amount: '0.0000000005' }, 'count', '3', true],
    ['a count meter whose line cost is exact', { model: 'unit', amount: '0.0000000005' }, 'count', '4', false],
    ['a prorated package that divides evenly', { model: 'package', amount: '1', size: '3' }, 'count', '6', false],
    ['a prorated package of thirds', { model: 'package', amount: '1', size: '3' }, 'count', '7', true],
    ['whole packages', { model: 'package', amount: '10', size: '5', rounding: 'up' }, 'count', '5', true],
    ['tiers', { model: 'graduated', tiers: [{ up_to: null, amount: '1' }] }, 'sum', '1', true],
    ['any price on a max meter', { model: 'unit', amount: '3' }, 'max', '1', true],
  ] as const)('given %s, then it is %s', (_name, raw, aggregation, quantity, expected) => {
    expect(costDependsOnPeriod(price(raw), aggregation, money(quantity))).toBe(expected);
  });

  it('given a line whose own cost is exact, then it costs the same after any quantity before it', () => {
    const unit = price({ model: 'unit', amount: '0.5' });
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 15n }), fc.bigInt({ min: 0n, max: 10n ** 12n }), (b, q) => {
        const quantity = money(q.toString()).dividedBy(1e8); // 8 fraction digits: 0.5 × q is exact at 9
        const before = money(b.toString()).dividedBy(1e9);
        expect(costDependsOnPeriod(unit, 'sum', quantity)).toBe(false);
        expect(costOf(unit, quantity, before).toFixed()).toBe(costOf(unit, quantity).toFixed());
      }),
    );
  });
});
