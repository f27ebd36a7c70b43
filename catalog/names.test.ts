import { describe, expect, it } from 'vitest';
import type { CatalogDocument } from './document.js';
import { carryNameHistory, namesFor, unitNamesAt, type NamedCatalog, type NamedUnit } from './names.js';

const ms = (iso: string): number => Date.parse(iso);

// "Credits" until Feb 1, "AI credits" until Mar 1, "Tokens" since.
const unit: NamedUnit = {
  name: 'Tokens',
  internalName: 'tok',
  previousNames: [
    { name: 'Credits', internalName: 'cr', untilMs: ms('2026-02-01T00:00:00Z') },
    { name: 'AI credits', internalName: 'ai', untilMs: ms('2026-03-01T00:00:00Z') },
  ],
};

describe('unitNamesAt', () => {
  it.each([
    ['2026-01-15T00:00:00Z', 'Credits', 'cr'],
    ['2026-01-31T23:59:59.999Z', 'Credits', 'cr'],
    // A rename takes effect at its instant: whoever starts then sees the new name.
    ['2026-02-01T00:00:00Z', 'AI credits', 'ai'],
    ['2026-03-01T00:00:00Z', 'Tokens', 'tok'],
    ['2030-01-01T00:00:00Z', 'Tokens', 'tok'],
  ])('at %s the unit is named %s (%s)', (at, name, internalName) => {
    expect(unitNamesAt(unit, ms(at))).toEqual({ name, internalName });
  });
});

describe('namesFor', () => {
  const catalog: NamedCatalog = {
    creditUnits: new Map([['credits', unit]]),
    subscriptions: [
      { customer: 'old', startMs: ms('2026-01-10T00:00:00Z'), endMs: undefined },
      { customer: 'old', startMs: ms('2026-02-10T00:00:00Z'), endMs: undefined },
      { customer: 'ended', startMs: ms('2026-01-10T00:00:00Z'), endMs: ms('2026-02-15T00:00:00Z') },
      { customer: 'future', startMs: ms('2026-06-01T00:00:00Z'), endMs: undefined },
    ],
  };
  const now = ms('2026-04-01T00:00:00Z');

  it('given a statement of a subscription, then the names as of its start', () => {
    expect(namesFor(catalog, 'credits', { subscription: { startMs: ms('2026-02-10T00:00:00Z') } })?.name).toBe(
      'AI credits',
    );
  });

  it('given a customer with subscriptions in force, then the names as of the earliest start', () => {
    expect(namesFor(catalog, 'credits', { customer: 'old', nowMs: now })?.name).toBe('Credits');
  });

  it('given a customer whose subscription ended or has not started, or who has none, then the current names', () => {
    for (const customer of ['ended', 'future', 'nobody'])
      expect(namesFor(catalog, 'credits', { customer, nowMs: now })?.name, customer).toBe('Tokens');
  });

  it('given a unit the catalog does not have, then no names', () => {
    expect(namesFor(catalog, 'gpu', { customer: 'old', nowMs: now })).toBeUndefined();
  });
});

describe('carryNameHistory', () => {
  const stored = {
    credit_units: [
      {
        id: 'credits',
        name: 'AI credits',
        internal_name: 'ai',
        previous_names: [{ name: 'Credits', internal_name: 'cr', until: '2026-02-01T00:00:00.000Z' }],
      },
    ],
  } as unknown as CatalogDocument;
  const at = ms('2026-03-01T00:00:00Z');
  const unitsOf = (doc: unknown) => (doc as { credit_units: Record<string, unknown>[] }).credit_units;

  it('given a rename, then the old names are appended with until = the write time', () => {
    const next = carryNameHistory(
      stored,
      { credit_units: [{ id: 'credits', name: 'Tokens', internal_name: 'tok' }] },
      at,
    );
    expect(unitsOf(next)[0]!.previous_names).toEqual([
      { name: 'Credits', internal_name: 'cr', until: '2026-02-01T00:00:00.000Z' },
      { name: 'AI credits', internal_name: 'ai', until: '2026-03-01T00:00:00.000Z' },
    ]);
  });

  it('given only the internal name changes, then that is a rename too', () => {
    const next = carryNameHistory(
      stored,
      { credit_units: [{ id: 'credits', name: 'AI credits', internal_name: 'x' }] },
      at,
    );
    expect((unitsOf(next)[0]!.previous_names as unknown[]).at(-1)).toEqual({
      name: 'AI credits',
      internal_name: 'ai',
      until: '2026-03-01T00:00:00.000Z',
    });
  });

  it('given a document that leaves the history out and keeps the names, then the stored history is kept', () => {
    const next = carryNameHistory(
      stored,
      { credit_units: [{ id: 'credits', name: 'AI credits', internal_name: 'ai' }] },
      at,
    );
    expect(unitsOf(next)[0]!.previous_names).toEqual(unitsOf(stored)[0]!.previous_names);
  });

  it('given a document that records the rename itself, then it is not recorded twice', () => {
    const history = [
      { name: 'Credits', internal_name: 'cr', until: '2026-02-01T00:00:00.000Z' },
      { name: 'AI credits', internal_name: 'ai', until: '2026-02-20T00:00:00.000Z' },
    ];
    const next = carryNameHistory(
      stored,
      { credit_units: [{ id: 'credits', name: 'Tokens', internal_name: 'tok', previous_names: history }] },
      at,
    );
    expect(unitsOf(next)[0]!.previous_names).toEqual(history);
  });

  it('given a new unit or no stored catalog, then the document passes unchanged', () => {
    const doc = { credit_units: [{ id: 'gpu', name: 'GPU' }] };
    expect(carryNameHistory(stored, doc, at)).toEqual(doc);
    expect(carryNameHistory(undefined, doc, at)).toBe(doc);
  });
});
