/**
 * Strict catalog input: a misspelling of every field of every catalog object
 * is refused, named by its path, with the field it most likely meant.
 */
import { describe, expect, it } from 'vitest';
import { isDrawdownError } from '../shared/errors.js';
import { parseCatalog, parseStoredCatalog } from './model.js';
import { catalogFields } from './fields.js';

/** A catalog that uses every field catalogFields lists (checked below), so every one is tried. */
function richCatalog(): Record<string, unknown> {
  return {
    credit_units: [
      {
        id: 'credits',
        name: 'Credits',
        internal_name: 'credits_usd',
        fiat: { currency: 'USD', value: '1.00' },
        precision: 2,
        allowed_negative_balance: '5',
        archived: false,
        notices: { low: ['10', '1'], expiring_within: 'P7D' },
        previous_names: [{ name: 'Old credits', internal_name: 'old_credits', until: '2026-01-15T00:00:00Z' }],
      },
    ],
    meters: [
      {
        key: 'tokens',
        name: 'Tokens',
        unit: { singular: 'token', plural: 'tokens' },
        aggregation: 'sum',
        dimensions: ['model'],
        archived: false,
        event_type: 'llm.tokens',
        value_property: '$.tokens',
        group_by: { model: '$.model' },
      },
      { key: 'seats', aggregation: 'max' },
      { key: 'calls', aggregation: 'count' },
    ],
    rate_card: {
      versions: [
        {
          version: 'v1',
          effective_from: '2026-01-01T00:00:00Z',
          rows: [
            { meter: 'tokens', match: { model: 'big' }, unit: 'credits', price: { model: 'unit', amount: '0.01' } },
            {
              meter: 'tokens',
              unit: 'credits',
              price: { model: 'package', amount: '5', size: '1000000', rounding: 'up' },
            },
            { meter: 'seats', unit: 'credits', price: { model: 'unit', amount: '2' } },
            {
              meter: 'calls',
              unit: 'credits',
              price: {
                model: 'graduated',
                tiers: [
                  { up_to: '100', amount: '0', per: '1' },
                  { up_to: null, amount: '1', per: '10' },
                ],
              },
            },
          ],
        },
      ],
    },
    packages: [
      {
        id: 'credits-100',
        name: '100 credits',
        price: { currency: 'USD', amount: '100' },
        credits: '100',
        unit: 'credits',
      },
    ],
    plans: [
      {
        id: 'pro',
        name: 'Pro',
        billing: 'monthly',
        versions: [
          {
            version: 1,
            grants: [
              { id: 'g-none', unit: 'credits', quantity: '10', frequency: 'monthly', rollover: { kind: 'none' } },
              {
                id: 'g-time',
                unit: 'credits',
                quantity: '10',
                frequency: 'monthly',
                rollover: { kind: 'time_limited', duration: 'P2M' },
              },
              {
                id: 'g-capped',
                unit: 'credits',
                quantity: '10',
                frequency: 'daily',
                rollover: { kind: 'capped', percent: '50', maximum: '5' },
              },
            ],
            overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.02' } },
          },
        ],
      },
    ],
    add_ons: [
      {
        id: 'ai-5k',
        name: '+5,000 AI credits / month',
        kind: 'recurring',
        billing: 'monthly',
        versions: [
          {
            version: 1,
            grant: { unit: 'credits', quantity: '5000', frequency: 'monthly', rollover: { kind: 'none' } },
          },
        ],
      },
      {
        id: 'overage',
        kind: 'metered',
        billing: 'monthly',
        overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.03' } },
      },
    ],
    charges: [
      {
        id: 'launch-bonus',
        name: 'Launch bonus',
        grant: { unit: 'credits', quantity: '2000', expires_after: 'P60D' },
      },
      { id: 'kept-bonus', grant: { unit: 'credits', quantity: '100', rollover: { kind: 'unlimited' } } },
    ],
    subscriptions: [
      {
        id: 'sub-1',
        customer: 'acme',
        plan: 'pro',
        plan_version: 1,
        start: '2026-01-01T00:00:00Z',
        billing_anchor: '2026-01-01T00:00:00Z',
        end: '2027-01-01T00:00:00Z',
        overrides: { 'g-none': { quantity: '20', frequency: 'monthly', rollover: { kind: 'unlimited' } } },
        changes: [{ effective_from: '2026-03-01T00:00:00Z', plan_version: 1, overrides: {}, add_ons: [] }],
        add_ons: [{ add_on: 'ai-5k', quantity: 2, version: 1, overrides: { quantity: '6000' } }],
        charges: [{ id: 'bonus-1', charge: 'launch-bonus', at: '2026-01-10T00:00:00Z' }],
      },
    ],
  };
}

type Json = Record<string, unknown>;

/** Every object in the document that has fixed fields, with its path as problems name it. */
function objectsOf(value: unknown, path: string, out: { path: string; object: Json }[]): void {
  if (Array.isArray(value)) value.forEach((v, i) => objectsOf(v, `${path}[${i}]`, out));
  else if (value !== null && typeof value === 'object') {
    // Maps keyed by data, not by field names: their keys are checked against the meter or the plan.
    const isDataMap = /\.(match|overrides|group_by)$/.test(path);
    if (!isDataMap) out.push({ path, object: value as Json });
    for (const [k, v] of Object.entries(value as Json)) {
      const child = path === '' ? k : `${path}.${k}`;
      if (isDataMap) {
        if (v !== null && typeof v === 'object') objectsOf(v, child, out);
      } else objectsOf(v, child, out);
    }
  }
}

/** A plausible typo: the second and third letters swapped, or, where they are the same, the last one dropped. */
function misspell(field: string): string {
  return field.length >= 3 && field[1] !== field[2]
    ? field[0] + field[2] + field[1] + field.slice(3)
    : field.slice(0, -1);
}

function problemsOf(raw: unknown): { field: string; code: string; message: string }[] {
  try {
    parseCatalog(raw);
    return [];
  } catch (error) {
    if (!isDrawdownError(error)) throw error;
    expect(error.code).toBe('catalog_invalid');
    return error.problems as { field: string; code: string; message: string }[];
  }
}

describe('strict catalog input', () => {
  it('accepts the rich catalog as it is', () => {
    expect(problemsOf(richCatalog())).toEqual([]);
  });

  it('exercises every field the catalog knows', () => {
    const seen = new Set<string>();
    const objects: { path: string; object: Json }[] = [];
    objectsOf(richCatalog(), '', objects);
    for (const { object } of objects) for (const key of Object.keys(object)) seen.add(key);
    const known = new Set(Object.values(catalogFields).flat());
    expect([...known].filter((f) => !seen.has(f))).toEqual([]);
  });

  it('refuses a misspelling of every field, naming its path and the field it meant', () => {
    const objects: { path: string; object: Json }[] = [];
    objectsOf(richCatalog(), '', objects);
    let tried = 0;
    for (const { path, object } of objects) {
      for (const key of Object.keys(object)) {
        const raw = richCatalog();
        const target = objectsOfPath(raw, path);
        const typo = misspell(key);
        target[typo] = target[key];
        delete target[key];
        const problems = problemsOf(raw);
        const field = path === '' ? typo : `${path}.${typo}`;
        const problem = problems.find((p) => p.field === field);
        expect(problem, `${field}: ${JSON.stringify(problems)}`).toMatchObject({ code: 'unknown_field' });
        expect(problem!.message).toContain(`did you mean ${key}?`);
        tried++;
      }
    }
    expect(tried).toBeGreaterThan(60);
  });

  it('refuses a field of another price model or rollover kind', () => {
    const raw = richCatalog() as any;
    raw.rate_card.versions[0].rows[2].price.size = '10';
    raw.plans[0].versions[0].grants[0].rollover.maximum = '5';
    expect(problemsOf(raw).map((p) => [p.field, p.code])).toEqual([
      ['rate_card.versions[0].rows[2].price.size', 'unknown_field'],
      ['plans[0].versions[0].grants[0].rollover.maximum', 'unknown_field'],
    ]);
  });

  it('still loads a revision stored before unknown fields were refused', () => {
    const raw = richCatalog() as any;
    raw.meters[0].agregation = 'max';
    expect(problemsOf(raw)).toEqual([expect.objectContaining({ field: 'meters[0].agregation' })]);
    expect(parseStoredCatalog(raw).meters.get('tokens')?.aggregation).toBe('sum');
  });
});

function objectsOfPath(root: Json, path: string): Json {
  if (path === '') return root;
  let at: unknown = root;
  for (const part of path.match(/[^.[\]]+/g)!) at = (at as Record<string, unknown>)[part];
  return at as Json;
}
