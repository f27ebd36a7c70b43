/**
 * docs/openapi.yaml types every catalog body, and agrees with the parsers:
 * each catalog schema lists exactly the fields catalog/fields.ts lets the
 * parser take, refuses any other (ajv, additional properties refused), and
 * accepts the demo catalog and every subscription, plan and price shape the
 * parser does.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { catalogFields } from '../catalog/fields.js';
import { catalogPath, repoRoot } from './harness.js';

type Schema = Record<string, unknown> & { properties?: Record<string, unknown>; 'x-catalog-fields'?: string };
const doc = parse(readFileSync(join(repoRoot, 'docs', 'openapi.yaml'), 'utf8')) as {
  components: { schemas: Record<string, Schema> };
};
const schemas = doc.components.schemas;

function validator(name: string): (value: unknown) => string[] {
  // OpenAPI 3.1 schemas are JSON Schema 2020-12; `x-` keywords are annotations.
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addFormat(
    'date-time',
    (text: string) =>
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(text) && !Number.isNaN(Date.parse(text)),
  );
  ajv.addSchema({ $id: 'openapi', components: { schemas } });
  const validate = ajv.getSchema(`openapi#/components/schemas/${name}`)!;
  return (value) => (validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));
}

describe('catalog bodies in docs/openapi.yaml', () => {
  it('types each catalog object with exactly the fields the parser takes, and refuses the rest', () => {
    const tagged = Object.entries(schemas).filter(([, s]) => s['x-catalog-fields'] !== undefined);
    expect(new Set(tagged.map(([, s]) => s['x-catalog-fields']))).toEqual(new Set(Object.keys(catalogFields)));
    for (const [name, schema] of tagged) {
      const fields = catalogFields[schema['x-catalog-fields'] as keyof typeof catalogFields];
      expect({ name, fields: Object.keys(schema.properties ?? {}).sort() }).toEqual({
        name,
        fields: [...fields].sort(),
      });
      expect({ name, additionalProperties: schema.additionalProperties }).toEqual({
        name,
        additionalProperties: false,
      });
    }
  });

  it('accepts the demo catalog, and refuses a misspelt field at any depth', () => {
    const validate = validator('CatalogDocument');
    const demo = JSON.parse(readFileSync(catalogPath, 'utf8'));
    expect(validate(demo)).toEqual([]);
    demo.meters[1].agregation = 'max';
    demo.rate_card.versions[0].rows[0].price.rouding = 'up';
    const problems = validate(demo).join('\n');
    expect(problems).toContain('/meters/1 must NOT have additional properties');
    expect(problems).toContain('/rate_card/versions/0/rows/0/price');
  });

  it('types plan and subscription bodies as the admin API takes them', () => {
    const plan = validator('PlanVersionBody');
    const body = {
      name: 'Pro',
      billing: 'monthly',
      grants: [
        {
          id: 'g',
          unit: 'credits',
          quantity: '10',
          frequency: 'monthly',
          rollover: { kind: 'capped', percent: '50', maximum: '5' },
        },
      ],
      overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.02' } },
    };
    expect(plan(body)).toEqual([]);
    expect(plan({ ...body, grnats: [] })).not.toEqual([]);
    const subscription = validator('Subscription');
    const sub = {
      id: 's',
      customer: 'acme',
      plan: 'pro',
      start: '2026-01-01T00:00:00Z',
      overrides: { g: { quantity: '20', rollover: { kind: 'time_limited', duration: 'P2M' } } },
      changes: [{ effective_from: '2026-02-01T00:00:00Z', plan_version: 2 }],
    };
    expect(subscription(sub)).toEqual([]);
    expect(subscription({ ...sub, overrides: { g: { quantiy: '20' } } })).not.toEqual([]);
  });
});
