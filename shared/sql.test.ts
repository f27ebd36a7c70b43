import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sqlDateTime, sqlIdentifier, sqlString, sqlStringList, sqlUInt } from './sql.js';

const clickHouseEscapes: Record<string, string> = { n: '\n', r: '\r', t: '\t', '0': '\0', b: '\b', f: '\f' };

/**
 * Reads one ClickHouse quoted string literal the way its lexer does: from the
 * opening quote to the first unescaped quote. Returns the value and where the
 * literal ended, so a test can check the literal spans the whole text.
 */
function readLiteral(sql: string): { value: string; end: number } {
  if (sql[0] !== "'") throw new Error('does not start with a quote');
  let value = '';
  for (let i = 1; i < sql.length; i++) {
    const c = sql[i]!;
    if (c === "'") return { value, end: i };
    if (c === '\\') {
      const next = sql[++i];
      if (next === undefined) throw new Error('dangling backslash');
      value += clickHouseEscapes[next] ?? next;
    } else {
      value += c;
    }
  }
  throw new Error('literal never closed');
}

describe('sqlString', () => {
  it.each([
    ['', "''"],
    ['plain', "'plain'"],
    ["it's", "'it\\'s'"],
    ['a\\b', "'a\\\\b'"],
    ["\\'", "'\\\\\\''"],
    ["' OR 1=1 --", "'\\' OR 1=1 --'"],
    ['x\ny\tz\r\0', "'x\\ny\\tz\\r\\0'"],
    ['\b\f', "'\\b\\f'"],
    ['日本語 🎉 "q"', '\'日本語 🎉 "q"\''],
  ])('given %j, then the literal is %s', (input, expected) => {
    expect(sqlString(input)).toBe(expected);
  });

  it('leaves no raw line breaks, tabs, NUL, backspace or form feed in the SQL', () => {
    expect(sqlString('\n\r\t\0\b\f')).not.toMatch(/[\n\r\t\0\b\f]/);
  });

  it('given any string, then the output is one literal from first to last character that reads back as the input (property)', () => {
    const hostile = fc.string({
      unit: fc.constantFrom("'", '\\', '"', '\n', '\r', '\t', '\0', '\b', '\f', 'a', ';', '-', '🎉'),
    });
    fc.assert(
      fc.property(fc.oneof(hostile, fc.string({ unit: 'binary' })), (input) => {
        const sql = sqlString(input);
        const literal = readLiteral(sql);
        return sql.startsWith("'") && sql.endsWith("'") && literal.end === sql.length - 1 && literal.value === input;
      }),
    );
  });
});

describe('sqlUInt', () => {
  it('writes non-negative safe integers and bigints', () => {
    expect(sqlUInt(0)).toBe('0');
    expect(sqlUInt(42)).toBe('42');
    expect(sqlUInt(Number.MAX_SAFE_INTEGER)).toBe('9007199254740991');
    expect(sqlUInt(18_446_744_073_709_551_615n)).toBe('18446744073709551615');
  });

  it.each([
    ['a negative number', -1],
    ['a fraction', 1.5],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['an unsafe integer', 2 ** 53],
    ['a huge float', 1e21],
    ['a negative bigint', -1n],
  ])('rejects %s', (_label, value) => {
    expect(() => sqlUInt(value)).toThrow(RangeError);
  });
});

describe('sqlDateTime', () => {
  it('wraps whole epoch seconds in a UTC DateTime', () => {
    expect(sqlDateTime(1_767_225_600)).toBe("toDateTime(1767225600, 'UTC')");
  });

  it('rejects fractional or negative seconds', () => {
    expect(() => sqlDateTime(1.5)).toThrow(RangeError);
    expect(() => sqlDateTime(-60)).toThrow(RangeError);
  });
});

describe('sqlIdentifier', () => {
  it.each(['usage_minute', '_private', 'A1', 'x'])('accepts %j', (name) => {
    expect(sqlIdentifier(name)).toBe(name);
  });

  it.each(['', '1abc', 'a-b', 'a b', 'a.b', 'a;DROP TABLE x', '`x`', '"x"', 'usage_minute\n', 'tablé', 'a\0'])(
    'rejects %j',
    (name) => {
      expect(() => sqlIdentifier(name)).toThrow(RangeError);
    },
  );
});

describe('sqlStringList', () => {
  it('writes a parenthesised list of escaped literals', () => {
    expect(sqlStringList(['a'])).toBe("('a')");
    expect(sqlStringList(['a', "b'c", 'd\\'])).toBe("('a', 'b\\'c', 'd\\\\')");
  });

  it('rejects an empty list, which is not valid SQL for IN', () => {
    expect(() => sqlStringList([])).toThrow(RangeError);
  });
});
