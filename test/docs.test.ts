import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { errorCodes } from '../shared/errors.js';
import { settings } from '../shared/config.js';

const errorsDoc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
const configDoc = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');

describe('docs stay in step with the code', () => {
  it('documents every error code with its status, and no code that does not exist', () => {
    const documented = new Map(
      [...errorsDoc.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1]!, Number(m[2])]),
    );
    const actual = new Map(Object.entries(errorCodes).map(([code, e]) => [code, e.status]));
    expect(documented).toEqual(actual);
  });

  it('documents every setting by its environment variable', () => {
    const documented = new Set([...configDoc.matchAll(/^\| `(DRAWDOWN_[A-Z_]+)` \|/gm)].map((m) => m[1]!));
    expect(documented).toEqual(new Set(Object.values(settings).map((s) => s.env)));
  });
});
