/**
 * TabSeparated encoding, the one data format both ClickHouse 18.16 and chDB
 * read and write with decimals kept exact (no float round trip through JSON).
 */

const escapeMap: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' };
const needsEscape = /[\\\t\n\r\0]/g;

export function tsvEscape(value: string): string {
  return value.replace(needsEscape, (c) => escapeMap[c]!);
}

const unescapeMap: Record<string, string> = {
  '\\': '\\',
  t: '\t',
  n: '\n',
  r: '\r',
  '0': '\0',
  b: '\b',
  f: '\f',
  "'": "'",
  '"': '"',
  a: '\x07',
  v: '\v',
  e: '\x1b',
};

export function tsvUnescape(value: string): string {
  if (!value.includes('\\')) return value;
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c !== '\\' || i === value.length - 1) {
      out += c;
      continue;
    }
    const next = value[++i]!;
    out += unescapeMap[next] ?? next;
  }
  return out;
}

/** Rows of already-stringified cells to one TabSeparated payload. */
export function encodeTsv(rows: readonly (readonly string[])[]): string {
  let out = '';
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) {
      if (i > 0) out += '\t';
      out += tsvEscape(row[i]!);
    }
    out += '\n';
  }
  return out;
}

export function decodeTsv(text: string): string[][] {
  const rows: string[][] = [];
  if (text.length === 0) return rows;
  const lines = text.split('\n');
  // A trailing newline ends the last row; it does not start an empty one.
  if (lines[lines.length - 1] === '') lines.pop();
  for (const line of lines) rows.push(line.split('\t').map(tsvUnescape));
  return rows;
}

/**
 * A DateTime('UTC') cell: "YYYY-MM-DD hh:mm:ss". Bare epoch seconds are read
 * by 18.16 but not reliably by current versions (a short number such as "0"
 * is refused), so timestamps are always written as text.
 */
export function tsvDateTime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().slice(0, 19).replace('T', ' ');
}
