import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeTsv, encodeTsv, tsvEscape, tsvUnescape } from './tsv.js';

const hostile = [
  '',
  'plain',
  'tab\there',
  'line\nbreak',
  'carriage\rreturn',
  'back\\slash',
  '\\t is not a tab',
  'trailing backslash\\',
  'nul\0byte',
  `quotes ' and "`,
  'unicode: ünïcödé 日本語 🎉',
  '\t\n\r\\\0',
  '\\\\\\',
];

/** Strings built from the characters TabSeparated treats specially, plus ordinary ones. */
const hostileString = fc.string({
  unit: fc.constantFrom('\t', '\n', '\r', '\\', '\0', "'", '"', 'a', 'é', '🎉', 't', 'n', '0', '\b', '\f'),
});
const anyString = fc.oneof(hostileString, fc.string({ unit: 'binary' }));

describe('tsvEscape', () => {
  it('escapes exactly backslash, tab, newline, carriage return and NUL', () => {
    expect(tsvEscape('a\tb\nc\rd\\e\0f')).toBe('a\\tb\\nc\\rd\\\\e\\0f');
    expect(tsvEscape(`'"é🎉`)).toBe(`'"é🎉`);
  });

  it('leaves no raw tab or newline, so a cell cannot split a row', () => {
    for (const value of hostile) {
      expect(tsvEscape(value)).not.toMatch(/[\t\n]/);
    }
  });
});

describe('tsvUnescape', () => {
  it('reads the escapes ClickHouse writes', () => {
    expect(tsvUnescape('a\\tb\\nc\\rd\\\\e\\0f')).toBe('a\tb\nc\rd\\e\0f');
    expect(tsvUnescape('\\\'\\"\\b\\f')).toBe(`'"\b\f`);
  });

  it('keeps a lone trailing backslash', () => {
    expect(tsvUnescape('abc\\')).toBe('abc\\');
  });

  it.each(hostile)('round-trips %j', (value) => {
    expect(tsvUnescape(tsvEscape(value))).toBe(value);
  });

  it('round-trips any string (property)', () => {
    fc.assert(fc.property(anyString, (value) => tsvUnescape(tsvEscape(value)) === value));
  });
});

describe('encodeTsv / decodeTsv', () => {
  it('given rows, then cells are tab-separated and every row ends with a newline', () => {
    expect(
      encodeTsv([
        ['a', 'b'],
        ['c', 'd'],
      ]),
    ).toBe('a\tb\nc\td\n');
    expect(encodeTsv([])).toBe('');
  });

  it('given hostile cells, then they survive a round trip in their rows and columns', () => {
    const rows = [hostile, [...hostile].reverse(), ['', '', '']];
    expect(decodeTsv(encodeTsv(rows))).toEqual(rows);
  });

  it('given trailing empty cells, then they are kept', () => {
    const rows = [['a', '', ''], [''], ['', 'b']];
    expect(encodeTsv(rows)).toBe('a\t\t\n\n\tb\n');
    expect(decodeTsv(encodeTsv(rows))).toEqual(rows);
  });

  it('given an empty payload, then there are no rows', () => {
    expect(decodeTsv('')).toEqual([]);
  });

  it('given a payload without a final newline, then the last row is still read', () => {
    expect(decodeTsv('a\tb\nc')).toEqual([['a', 'b'], ['c']]);
  });

  it('round-trips any rows of at least one cell (property)', () => {
    const rows = fc.array(fc.array(anyString, { minLength: 1, maxLength: 6 }), { maxLength: 8 });
    fc.assert(
      fc.property(rows, (value) => {
        expect(decodeTsv(encodeTsv(value))).toEqual(value);
      }),
    );
  });
});
