/**
 * API keys with scopes (SPEC §3): a key never reads or writes outside its scope.
 *
 * A key is `dd_` + 32 random bytes (base64url), presented as
 * `Authorization: Bearer <key>`. Only its SHA-256 (hex) is configured: a key
 * is a high-entropy random token, not a password, so a fast hash cannot be
 * brute-forced and a slow KDF (bcrypt, scrypt) would only add its cost to
 * every request. A presented key is hashed and looked up by that hash — never
 * compared in plain text, so the lookup's timing tells a caller nothing about
 * configured keys — and is never logged nor echoed in an error.
 *
 * Scopes do not nest: a key holds exactly the scopes its entry lists (`admin`
 * does not imply `read` or `ingest`); an entry may list several.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DrawdownError } from './errors.js';
import { Problems, isPlainObject } from './validate.js';

export const scopes = ['ingest', 'read', 'admin'] as const;
export type Scope = (typeof scopes)[number];
/** What a route needs: one scope, or `public` (health, readiness, metrics). */
export type RouteScope = Scope | 'public';

export interface ApiKey {
  readonly id: string;
  readonly scopes: readonly Scope[];
}

/** Configured keys by the SHA-256 hex of the key. */
export type KeyTable = ReadonlyMap<string, ApiKey>;

/** What a service enforces: a key table, or no keys at all (`DRAWDOWN_AUTH=off`). */
export type Auth = KeyTable | 'off';

export const keyIdPattern = /^[A-Za-z0-9._:@-]{1,64}$/;
const keyBytes = 32;
// `Bearer <b64token>` (RFC 6750 §2.1); the scheme is case-insensitive (RFC 9110 §11.1).
const bearerPattern = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i;
// Far longer than any key drawdown issues; a longer header is refused unhashed.
const headerCharsMax = 512;
const entryFields: ReadonlySet<string> = new Set(['id', 'sha256', 'scopes']);

export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function newKey(): string {
  return `dd_${randomBytes(keyBytes).toString('base64url')}`;
}

export function isScope(value: unknown): value is Scope {
  return (scopes as readonly unknown[]).includes(value);
}

/** A Map that cannot change once built: the key table is read on every request and written never. */
class FrozenMap<K, V> extends Map<K, V> {
  constructor(entries: Iterable<readonly [K, V]>) {
    super();
    for (const [k, v] of entries) super.set(k, v);
    Object.freeze(this);
  }
  override set(): never {
    throw new TypeError('the API key table is frozen');
  }
  override delete(): never {
    throw new TypeError('the API key table is frozen');
  }
  override clear(): never {
    throw new TypeError('the API key table is frozen');
  }
}

function configProblem(problems: Problems, summary: string): DrawdownError {
  return new DrawdownError('config_invalid', `${summary}:\n${problems.list.map((p) => `  ${p.message}`).join('\n')}`, {
    problems: problems.list,
  });
}

/**
 * DRAWDOWN_API_KEYS: a JSON array of `{"id", "sha256", "scopes"}`, or `@path`
 * of a file holding one. Every problem is reported with its path; no message
 * quotes the value, which may hold a key pasted by mistake.
 */
export function parseKeyTable(text: string): KeyTable {
  const problems = new Problems();
  const source = text.startsWith('@') ? `DRAWDOWN_API_KEYS (${text.slice(1)})` : 'DRAWDOWN_API_KEYS';
  let json: string;
  try {
    json = text.startsWith('@') ? readFileSync(text.slice(1), 'utf8') : text;
  } catch (cause) {
    problems.add(
      'DRAWDOWN_API_KEYS',
      'unreadable',
      `${source} cannot be read: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`,
    );
    throw configProblem(problems, 'invalid API keys');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    // JSON.parse's message quotes the text around the error; the text may be a key.
    const hint = /^\s*dd_/.test(json)
      ? ': it looks like a key itself — configure the entry `drawdown keys new` prints, never the key'
      : '';
    problems.add('DRAWDOWN_API_KEYS', 'json', `${source} is not valid JSON${hint}`);
    throw configProblem(problems, 'invalid API keys');
  }
  if (!Array.isArray(raw)) {
    problems.add('DRAWDOWN_API_KEYS', 'type', `${source} must be a JSON array of {"id", "sha256", "scopes"}`);
    throw configProblem(problems, 'invalid API keys');
  }

  const entries: [string, ApiKey][] = [];
  const seenHashes = new Set<string>();
  const seenIds = new Set<string>();
  raw.forEach((entry: unknown, i) => {
    const at = `DRAWDOWN_API_KEYS[${i}]`;
    if (!isPlainObject(entry)) return problems.add(at, 'type', `${at} must be an object {"id", "sha256", "scopes"}`);
    let ok = true;
    for (const field of Object.keys(entry)) {
      if (!entryFields.has(field)) {
        ok = false;
        problems.add(`${at}.${field}`, 'unknown_field', `${at}.${field} is not a known field (id, sha256, scopes)`);
      }
    }
    const { id, sha256, scopes: granted } = entry;
    if (typeof id !== 'string' || !keyIdPattern.test(id)) {
      ok = false;
      problems.add(`${at}.id`, 'format', `${at}.id must be 1–64 characters of [A-Za-z0-9._:@-]`);
    } else if (seenIds.has(id)) {
      ok = false;
      problems.add(`${at}.id`, 'duplicate', `${at}.id ${id} is used by an earlier entry`);
    }
    const hash = typeof sha256 === 'string' && /^[0-9a-fA-F]{64}$/.test(sha256) ? sha256.toLowerCase() : undefined;
    if (hash === undefined) {
      ok = false;
      problems.add(
        `${at}.sha256`,
        'format',
        `${at}.sha256 must be the 64 hex digits of the key's SHA-256 (drawdown keys new prints it)`,
      );
    } else if (seenHashes.has(hash)) {
      ok = false;
      problems.add(`${at}.sha256`, 'duplicate', `${at}.sha256 repeats an earlier entry's key`);
    }
    if (!Array.isArray(granted) || granted.length === 0 || !granted.every(isScope)) {
      ok = false;
      problems.add(`${at}.scopes`, 'enum', `${at}.scopes must list one or more of ${scopes.join(', ')}`);
    }
    if (typeof id === 'string') seenIds.add(id);
    if (hash !== undefined) seenHashes.add(hash);
    if (ok)
      entries.push([
        hash!,
        Object.freeze({ id: id as string, scopes: Object.freeze([...new Set(granted as Scope[])]) }),
      ]);
  });
  if (!problems.empty) throw configProblem(problems, 'invalid API keys');
  return new FrozenMap(entries);
}

/**
 * The auth a process enforces, from DRAWDOWN_AUTH and DRAWDOWN_API_KEYS.
 * Keys are validated whenever they are set. With `required`, a process that
 * serves key-protected routes refuses to start without at least one key: it
 * must never come up open by accident. A process with only public routes
 * (the rater: health, readiness, metrics) needs no keys.
 */
export function authFromConfig(
  config: { auth: string; apiKeys: string | undefined },
  servesProtectedRoutes: boolean,
): Auth {
  const table = config.apiKeys === undefined ? undefined : parseKeyTable(config.apiKeys);
  if (config.auth === 'off') return 'off';
  if (servesProtectedRoutes && (table === undefined || table.size === 0)) {
    const problems = new Problems();
    problems.add(
      'DRAWDOWN_API_KEYS',
      'required',
      `DRAWDOWN_API_KEYS ${table === undefined ? 'is required' : 'lists no keys'} while DRAWDOWN_AUTH=required (the default): create keys with \`drawdown keys new --scopes ingest\`, or set DRAWDOWN_AUTH=off for local use only`,
    );
    throw configProblem(problems, 'invalid configuration');
  }
  return table ?? new FrozenMap([]);
}

/**
 * Checks a request's Authorization header against the scope a route needs.
 * Throws `unauthorized` (401) without a valid key and `forbidden` (403) for a
 * valid key without the scope. No message quotes the header.
 */
export function authorize(table: KeyTable, header: string | undefined, scope: Scope): ApiKey {
  if (header === undefined || header === '')
    throw new DrawdownError('unauthorized', 'an API key is required: Authorization: Bearer <key>');
  const match = header.length > headerCharsMax ? null : bearerPattern.exec(header);
  if (match === null) throw new DrawdownError('unauthorized', 'the Authorization header must be "Bearer <key>"');
  const key = table.get(hashKey(match[1]!));
  if (key === undefined) throw new DrawdownError('unauthorized', 'the API key is not valid');
  if (!key.scopes.includes(scope))
    throw new DrawdownError('forbidden', `API key ${key.id} does not have the ${scope} scope`);
  return key;
}
