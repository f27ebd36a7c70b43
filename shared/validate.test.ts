import { describe, expect, it } from 'vitest';
import { Problems, readStorableTime, storableInstantMaxSec, storableInstantMinSec } from './validate.js';

function read(value: unknown): { sec: number | undefined; problems: Problems['list'] } {
  const problems = new Problems();
  const sec = readStorableTime(problems, value, 'until');
  return { sec, problems: problems.list };
}

describe('readStorableTime: a time parameter ClickHouse DateTime can store', () => {
  it('takes the bounds themselves, as ISO-8601 and as ms since the epoch', () => {
    expect(read('1970-01-01T00:00:00Z').sec).toBe(storableInstantMinSec);
    expect(read('2105-12-31T23:59:59Z').sec).toBe(storableInstantMaxSec);
    expect(read('2105-12-31T23:59:59.999Z').sec).toBe(storableInstantMaxSec);
    expect(read(0).sec).toBe(0);
    expect(read(String(storableInstantMaxSec * 1000 + 999)).sec).toBe(storableInstantMaxSec);
    expect(read('2026-03-01T12:00:00+02:00').sec).toBe(Date.UTC(2026, 2, 1, 10) / 1000);
  });

  it('refuses instants outside 1970 … 2105 as a range problem naming the field, including ones an offset pushes out', () => {
    for (const value of [
      '1969-12-31T23:59:59Z',
      '2106-01-01T00:00:00Z',
      '2106-02-07T06:28:16Z',
      '9999-12-31T23:59:59Z',
      '2105-12-31T23:59:59-01:00',
      -1,
      (storableInstantMaxSec + 1) * 1000,
      '99999999999999999999',
    ]) {
      const { sec, problems } = read(value);
      expect(sec, String(value)).toBeUndefined();
      expect(problems, String(value)).toEqual([expect.objectContaining({ field: 'until', code: 'range' })]);
      expect(problems[0]!.message).toContain('2105-12-31T23:59:59Z');
    }
  });

  it('refuses what is not an instant as a format problem: no zone, no such day, garbage, fractions of a ms, other types', () => {
    for (const value of [
      '2026-01-01T00:00:00',
      '2026-02-30T00:00:00Z',
      '2026-01-01',
      'yesterday',
      '',
      '1e12',
      '12.5',
      1.5,
      Number.NaN,
      Infinity,
      null,
      true,
      {},
      ['0'],
      '123456789012345678901',
    ]) {
      const { sec, problems } = read(value);
      expect(sec, String(value)).toBeUndefined();
      expect(problems, String(value)).toEqual([expect.objectContaining({ field: 'until', code: 'format' })]);
    }
  });
});
