/**
 * A customer's grant.expiring lead time (notice-settings.ts): validated at
 * the boundary with every problem named, and the one in force — the
 * customer's own, `null` for none, else the catalog's default.
 */
import { describe, expect, it } from 'vitest';
import { parseCatalog } from '../../catalog/model.js';
import { Problems } from '../../shared/validate.js';
import { expiringWithinFor, longestExpiringWithinMs, parseCustomerSettings } from './notice-settings.js';

const catalog = parseCatalog({
  credit_units: [
    { id: 'credits', name: 'Credits', notices: { expiring_within: 'P7D' } },
    { id: 'gpu', name: 'GPU hours' },
  ],
});
const day = 86_400_000;

function parse(body: unknown) {
  const problems = new Problems();
  const settings = parseCustomerSettings(problems, body, catalog);
  return { settings, problems: problems.list };
}

describe('grant.expiring lead time in notice settings', () => {
  it('given a customer lead time, then it replaces the catalog default; null means none; absent means the catalog', () => {
    const { settings, problems } = parse({
      units: { credits: { expiring_within: 'PT36H' }, gpu: { expiring_within: null } },
    });
    expect(problems).toEqual([]);
    expect(expiringWithinFor(catalog, settings, 'credits')).toEqual({
      text: 'PT36H',
      ms: 1.5 * day,
      source: 'customer',
    });
    expect(expiringWithinFor(catalog, settings, 'gpu')).toBeUndefined();
    expect(expiringWithinFor(catalog, undefined, 'credits')).toEqual({ text: 'P7D', ms: 7 * day, source: 'catalog' });
    expect(expiringWithinFor(catalog, { units: { credits: { expiring_within: null } } }, 'credits')).toBeUndefined();
    expect(expiringWithinFor(catalog, undefined, 'gpu')).toBeUndefined();
    expect(longestExpiringWithinMs(settings)).toBe(1.5 * day);
  });

  it('given malformed lead times, then each is refused naming its field', () => {
    const { problems } = parse({ units: { credits: { expiring_within: 'P1M' }, gpu: { expiring_within: 7 } } });
    expect(problems.map((p) => [p.field, p.code])).toEqual([
      ['units.credits.expiring_within', 'format'],
      ['units.gpu.expiring_within', 'format'],
    ]);
  });
});
