import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { authFromConfig, authorize, hashKey, newKey, parseKeyTable, type KeyTable } from './auth.js';
import { DrawdownError } from './errors.js';

function thrown(fn: () => unknown): DrawdownError {
  try {
    fn();
  } catch (error) {
    if (error instanceof DrawdownError) return error;
    throw error;
  }
  throw new Error('expected a DrawdownError');
}

describe('API keys', () => {
  const ingestKey = newKey();
  const billingKey = newKey();
  const entries = [
    { id: 'backend', sha256: hashKey(ingestKey), scopes: ['ingest'] },
    { id: 'billing', sha256: hashKey(billingKey).toUpperCase(), scopes: ['admin', 'read', 'admin'] },
  ];

  it('generates dd_ + 32 random bytes in base64url', () => {
    const key = newKey();
    expect(key).toMatch(/^dd_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(key.slice(3), 'base64url')).toHaveLength(32);
    expect(newKey()).not.toBe(key);
  });

  it('loads entries into a frozen table keyed by the lower-case hash, scopes without repeats', () => {
    const table = parseKeyTable(JSON.stringify(entries));
    expect(table.get(hashKey(billingKey))).toEqual({ id: 'billing', scopes: ['admin', 'read'] });
    expect(() => (table as Map<string, unknown>).set('x', {})).toThrow(TypeError);
    expect(() => (table as Map<string, unknown>).delete(hashKey(ingestKey))).toThrow(TypeError);
    expect(Object.isFrozen(table.get(hashKey(ingestKey)))).toBe(true);
    expect(table.size).toBe(2);
  });

  it('reads the array from a file given as @path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'drawdown-keys-'));
    try {
      writeFileSync(join(dir, 'keys.json'), JSON.stringify(entries));
      expect(parseKeyTable(`@${join(dir, 'keys.json')}`).size).toBe(2);
      const missing = thrown(() => parseKeyTable(`@${join(dir, 'nope.json')}`));
      expect(missing.message).toContain('cannot be read: ENOENT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports every problem with its path', () => {
    const bad = [
      { id: 'ok', sha256: hashKey(ingestKey), scopes: ['ingest'] },
      { id: 'has space', sha256: 'abc', scopes: [] },
      { id: 'ok', sha256: hashKey(ingestKey), scopes: ['superuser'], key: 'x' },
      'not an object',
    ];
    const error = thrown(() => parseKeyTable(JSON.stringify(bad)));
    expect(error.code).toBe('config_invalid');
    expect(error.problems.map((p) => `${p.field} ${p.code}`)).toEqual([
      'DRAWDOWN_API_KEYS[1].id format',
      'DRAWDOWN_API_KEYS[1].sha256 format',
      'DRAWDOWN_API_KEYS[1].scopes enum',
      'DRAWDOWN_API_KEYS[2].key unknown_field',
      'DRAWDOWN_API_KEYS[2].id duplicate',
      'DRAWDOWN_API_KEYS[2].sha256 duplicate',
      'DRAWDOWN_API_KEYS[2].scopes enum',
      'DRAWDOWN_API_KEYS[3] type',
    ]);
  });

  it('never quotes the value in an error, even when a key was pasted instead of its entry', () => {
    for (const value of [
      ingestKey,
      `[{"id":"x","sha256":"${ingestKey}",}]`,
      `[{"id":"x","key":"${ingestKey}","sha256":"${ingestKey}","scopes":["read"]}]`,
    ]) {
      const error = thrown(() => parseKeyTable(value));
      expect(error.code).toBe('config_invalid');
      expect(error.message).not.toContain(ingestKey);
      expect(JSON.stringify(error.problems)).not.toContain(ingestKey);
    }
    expect(thrown(() => parseKeyTable(ingestKey)).message).toContain('looks like a key itself');
  });

  it('refuses to serve the API with auth required and no keys, naming both settings', () => {
    for (const apiKeys of [undefined, '[]']) {
      const error = thrown(() => authFromConfig({ auth: 'required', apiKeys }, true));
      expect(error.code).toBe('config_invalid');
      expect(error.message).toContain('DRAWDOWN_API_KEYS');
      expect(error.message).toContain('DRAWDOWN_AUTH=off');
      expect(error.problems[0]!.field).toBe('DRAWDOWN_API_KEYS');
    }
  });

  it('lets a process with only public routes (the rater) start without keys, and validates keys even when auth is off', () => {
    const raterAuth = authFromConfig({ auth: 'required', apiKeys: undefined }, false);
    expect(raterAuth !== 'off' && raterAuth.size).toBe(0);
    expect(authFromConfig({ auth: 'off', apiKeys: undefined }, true)).toBe('off');
    expect(thrown(() => authFromConfig({ auth: 'off', apiKeys: '{}' }, true)).code).toBe('config_invalid');
  });

  describe('authorize', () => {
    const table: KeyTable = parseKeyTable(JSON.stringify(entries));
    const cases: [string, string | undefined, 'ingest' | 'read' | 'admin', string][] = [
      ['no header', undefined, 'ingest', 'unauthorized'],
      ['empty header', '', 'ingest', 'unauthorized'],
      ['another scheme', `Basic ${ingestKey}`, 'ingest', 'unauthorized'],
      ['a bare key', ingestKey, 'ingest', 'unauthorized'],
      ['a key and more', `Bearer ${ingestKey} ${ingestKey}`, 'ingest', 'unauthorized'],
      ['an unknown key', `Bearer ${newKey()}`, 'ingest', 'unauthorized'],
      ['an over-long header', `Bearer ${'a'.repeat(1000)}`, 'ingest', 'unauthorized'],
      ['a key without the scope', `Bearer ${ingestKey}`, 'read', 'forbidden'],
      [
        'an admin and read key asking for ingest (admin implies nothing)',
        `Bearer ${billingKey}`,
        'ingest',
        'forbidden',
      ],
      ['the scope', `Bearer ${ingestKey}`, 'ingest', 'ok'],
      ['a lower-case scheme', `bearer ${ingestKey}`, 'ingest', 'ok'],
      ['one of several scopes', `Bearer ${billingKey}`, 'read', 'ok'],
    ];
    it.each(cases)('given %s, answers as expected without echoing the key', (_name, header, scope, expected) => {
      let outcome: string;
      try {
        outcome = authorize(table, header, scope) ? 'ok' : 'none';
      } catch (error) {
        const problem = error as DrawdownError;
        expect(problem.message).not.toContain(ingestKey);
        expect(problem.message).not.toContain(billingKey);
        outcome = problem.code;
      }
      expect(outcome).toBe(expected);
    });
  });
});
