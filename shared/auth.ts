/**
 * API keys with scopes (SPEC §3). Keys are stored as SHA-256 hashes: they
 * are 32 random bytes, so a fast hash cannot be brute-forced and a slow KDF
 * would only cost every request. A request presents `Authorization: Bearer
 * <key>`; the key is hashed and looked up — never compared in plain text,
 * never logged, never echoed in an error.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DrawdownError } from './errors.js';
import { Problems, isPlainObject } from './validate.js';

export const scopes = ['ingest', 'read', 'admin'] as const;
export type Scope = (typeof scopes)[number];

export interface ApiKey {
  id: string;
  scopes: ReadonlySet<Scope>;
}

export type KeyTable = ReadonlyMap<string, ApiKey>;

export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function newKey(): string {
  return `dd_${randomBytes(32).toString('base64url')}`;
}

/** DRAWDOWN_API_KEYS: a JSON array, or `@path` to a file holding one. */
export function parseKeyTable(text: string): KeyTable {
  let raw: unknown;
  try {
    raw = JSON.parse(text.startsWith('@') ? readFileSync(text.slice(1), 'utf8') : text);
  } catch (cause) {
    throw new DrawdownError('config_invalid', `DRAWDOWN_API_KEYS is not readable JSON: ${(cause as Error).message}`, { cause });
  }
  const problems = new Problems();
  const table = new Map<string, ApiKey>();
  if (!Array.isArray(raw)) problems.add('DRAWDOWN_API_KEYS', 'type', 'DRAWDOWN_API_KEYS must be a JSON array of {"id", "sha256", "scopes"}');
  (Array.isArray(raw) ? raw : []).forEach((entry, i) => {
    const at = `DRAWDOWN_API_KEYS[${i}]`;
    if (!isPlainObject(entry)) return problems.add(at, 'type', `${at} must be an object`);
    const { id, sha256 } = entry;
    if (typeof id !== 'string' || !/^[A-Za-z0-9._:@-]{1,64}$/.test(id)) problems.add(`${at}.id`, 'format', `${at}.id must be 1–64 characters of [A-Za-z0-9._:@-]`);
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) problems.add(`${at}.sha256`, 'format', `${at}.sha256 must be 64 lowercase hex digits (drawdown keys new prints it)`);
    const granted = Array.isArray(entry.scopes) ? entry.scopes : [];
    if (granted.length === 0 || granted.some((s) => !(scopes as readonly unknown[]).includes(s))) {
      problems.add(`${at}.scopes`, 'enum', `${at}.scopes must list one or more of ${scopes.join(', ')}`);
    }
    if (typeof sha256 === 'string' && table.has(sha256)) problems.add(`${at}.sha256`, 'duplicate', `${at} repeats another key`);
    if (typeof id === 'string' && typeof sha256 === 'string') table.set(sha256, { id, scopes: new Set(granted as Scope[]) });
  });
  if (!problems.empty) throw new DrawdownError('config_invalid', `invalid API keys:\n${problems.list.map((p) => `  ${p.message}`).join('\n')}`, { problems: problems.list });
  return table;
}

/** Checks a request's Authorization header against a scope; throws 401 or 403. */
export function authorize(table: KeyTable, header: string | undefined, scope: Scope): ApiKey {
  const match = header === undefined ? null : /^Bearer ([\x21-\x7e]{1,256})$/.exec(header);
  const key = match === null ? undefined : table.get(hashKey(match[1]!));
  if (key === undefined) {
    throw new DrawdownError('unauthorized', header === undefined ? 'an API key is required (Authorization: Bearer <key>)' : 'the API key is not valid');
  }
  if (!key.scopes.has(scope)) throw new DrawdownError('forbidden', `API key ${key.id} does not have the ${scope} scope`);
  return key;
}
