/**
 * The one place where values become SQL text. drawdown must run the same SQL on
 * ClickHouse 18.16 and on current chDB, and 18.16 has no query parameters, so
 * every inlined value goes through one of these functions and nothing else.
 */

const stringEscapes: Record<string, string> = {
  '\\': '\\\\',
  "'": "\\'",
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\0': '\\0',
  '\b': '\\b',
  '\f': '\\f',
};

// Backslash escapes are understood identically by 18.16 and current versions;
// quoting only `'` by doubling would not be, for input with backslashes.
const needsEscape = /[\\'\n\r\t\0\b\f]/g;

export function sqlString(value: string): string {
  return `'${value.replace(needsEscape, (c) => stringEscapes[c]!)}'`;
}

export function sqlUInt(value: number | bigint): string {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a non-negative safe integer: ${value}`);
    return String(value);
  }
  if (value < 0n) throw new RangeError(`not a non-negative integer: ${value}`);
  return value.toString();
}

/** A UTC DateTime from whole seconds since the epoch. */
export function sqlDateTime(epochSeconds: number): string {
  return `toDateTime(${sqlUInt(epochSeconds)}, 'UTC')`;
}

export function sqlStringList(values: readonly string[]): string {
  if (values.length === 0) throw new RangeError('an IN list needs at least one value');
  return `(${values.map(sqlString).join(', ')})`;
}

/** Table and column names are fixed by our schema; this only guards typos in code. */
export function sqlIdentifier(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new RangeError(`not a plain identifier: ${name}`);
  return name;
}
