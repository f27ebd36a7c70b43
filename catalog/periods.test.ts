import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addDuration,
  boundariesIn,
  leadTimeMaxMs,
  parseDuration,
  parseLeadTime,
  periodAt,
  periodIndexAt,
  periodStart,
} from './periods.js';
import { parseCatalog } from './model.js';

const utc = (iso: string): number => Date.parse(iso);
const iso = (ms: number): string => new Date(ms).toISOString();

describe('grant periods', () => {
  it('given a monthly anchor on the 31st, periods clamp to short months and return to the 31st', () => {
    const anchor = utc('2026-01-31T10:00:00Z');
    expect([0, 1, 2, 3, 4].map((i) => iso(periodStart(anchor, 'monthly', i)))).toEqual([
      '2026-01-31T10:00:00.000Z',
      '2026-02-28T10:00:00.000Z',
      '2026-03-31T10:00:00.000Z',
      '2026-04-30T10:00:00.000Z',
      '2026-05-31T10:00:00.000Z',
    ]);
    expect(iso(periodStart(utc('2028-01-31T00:00:00Z'), 'monthly', 1))).toBe('2028-02-29T00:00:00.000Z');
  });

  it('given a yearly anchor on Feb 29, non-leap years use Feb 28', () => {
    const anchor = utc('2028-02-29T00:00:00Z');
    expect([1, 4].map((i) => iso(periodStart(anchor, 'yearly', i)))).toEqual([
      '2029-02-28T00:00:00.000Z',
      '2032-02-29T00:00:00.000Z',
    ]);
  });

  it('finds the period containing an instant, with the start inclusive and the end exclusive', () => {
    const anchor = utc('2026-01-15T00:00:00Z');
    expect(periodAt(anchor, 'monthly', utc('2026-02-15T00:00:00Z'))).toEqual({
      index: 1,
      startMs: utc('2026-02-15T00:00:00Z'),
      endMs: utc('2026-03-15T00:00:00Z'),
    });
    expect(periodAt(anchor, 'monthly', utc('2026-02-14T23:59:59Z')).index).toBe(0);
    expect(periodAt(anchor, 'daily', utc('2026-01-14T23:00:00Z')).index).toBe(-1);
  });

  it('for any anchor, frequency and instant, the period found contains the instant', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: utc('2000-01-01T00:00:00Z'), max: utc('2040-01-01T00:00:00Z') }),
        fc.integer({ min: -3 * 365 * 86_400_000, max: 10 * 365 * 86_400_000 }),
        fc.constantFrom('daily' as const, 'monthly' as const, 'yearly' as const),
        (anchor, offset, frequency) => {
          const at = anchor + offset;
          const index = periodIndexAt(anchor, frequency, at);
          return periodStart(anchor, frequency, index) <= at && at < periodStart(anchor, frequency, index + 1);
        },
      ),
    );
  });

  it('lists the boundaries a window crosses, (from, until]', () => {
    const anchor = utc('2026-01-01T00:00:00Z');
    expect(boundariesIn(anchor, 'monthly', utc('2026-01-01T00:00:00Z'), utc('2026-04-01T00:00:00Z')).map(iso)).toEqual([
      '2026-02-01T00:00:00.000Z',
      '2026-03-01T00:00:00.000Z',
      '2026-04-01T00:00:00.000Z',
    ]);
    expect(() => boundariesIn(anchor, 'daily', anchor, anchor + 5 * 86_400_000, 3)).toThrow(RangeError);
  });

  it('reads ISO-8601 durations for time-limited rollover and adds them on the calendar', () => {
    expect(parseDuration('P2M')).toEqual({ months: 2, days: 0 });
    expect(parseDuration('P1Y')).toEqual({ months: 12, days: 0 });
    expect(parseDuration('P1M15D')).toEqual({ months: 1, days: 15 });
    for (const bad of ['P', 'P0D', '2M', 'PT1H', 'P-1M', '']) expect(parseDuration(bad)).toBeUndefined();
    expect(iso(addDuration(utc('2026-02-01T00:00:00Z'), { months: 2, days: 0 }))).toBe('2026-04-01T00:00:00.000Z');
    expect(iso(addDuration(utc('2025-12-31T00:00:00Z'), { months: 2, days: 1 }))).toBe('2026-03-01T00:00:00.000Z');
  });
});

describe('notice lead times (grant.expiring)', () => {
  it('reads days, hours and minutes, and refuses months, zero, empty parts and more than a year', () => {
    expect(parseLeadTime('P7D')).toBe(7 * 86_400_000);
    expect(parseLeadTime('PT12H')).toBe(12 * 3_600_000);
    expect(parseLeadTime('P1DT6H30M')).toBe(86_400_000 + 6 * 3_600_000 + 30 * 60_000);
    expect(parseLeadTime('P366D')).toBe(leadTimeMaxMs);
    for (const bad of ['P367D', 'P1M', 'P0D', 'PT0H', 'P', 'PT', 'P1DT', '7d', 'P-1D', ' P1D'])
      expect({ bad, ms: parseLeadTime(bad) }).toEqual({ bad, ms: undefined });
  });

  it('given a catalog default lead time, then it is read; a malformed one is refused naming the field', () => {
    const unit = (notices: unknown) => ({ credit_units: [{ id: 'credits', name: 'Credits', notices }] });
    expect(parseCatalog(unit({ expiring_within: 'P3D' })).creditUnits.get('credits')!.expiringWithin).toEqual({
      text: 'P3D',
      ms: 3 * 86_400_000,
    });
    expect(parseCatalog(unit({ low: ['5'] })).creditUnits.get('credits')!.expiringWithin).toBeUndefined();
    let problems: unknown;
    try {
      parseCatalog(unit({ expiring_within: 'P1M' }));
    } catch (error) {
      problems = (error as { problems?: unknown }).problems;
    }
    expect(problems).toEqual([
      expect.objectContaining({ field: 'credit_units[0].notices.expiring_within', code: 'format' }),
    ]);
  });
});
