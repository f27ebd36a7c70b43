/**
 * Names in the holds bucket and the ids callers see.
 *
 *   account key  <b64url(customer)>.<b64url(unit)>            one KV key per (customer, unit)
 *   hold id      <b64url(customer)>.<b64url(unit)>.<suffix>   suffix = 16 chars of b64url(sha256(customer, unit, key))
 *
 * Customer and unit ids may hold '.', ':' and '@', which a KV key either
 * forbids or reads as a token separator, so each is base64url-encoded (the
 * alphabet is a subset of what a KV key token allows). Decoding insists on
 * the canonical encoding, so two different strings never name one hold.
 *
 * The hold id carries its account, so release/consume/close need nothing but
 * the id (no index to keep in step), and it derives from the idempotency key,
 * so a caller, or a usage event, can name a hold before the reserve's answer
 * arrives. The price: after a closed hold's record has been pruned (retention),
 * reserving again under the same key creates a hold with the same id.
 */
import * as crypto from 'node:crypto';
import { customerIdPattern } from '../../shared/events/customer.js';

/** As ingest accepts customers (shared/events/event.ts). */
export const customerPattern = customerIdPattern;
/** As the catalog accepts credit unit ids (catalog/model.ts). */
export const unitPattern = /^[A-Za-z0-9._:@-]{1,64}$/;
/** As the gateway accepts Idempotency-Key (ingest/gateway.ts). */
export const idempotencyKeyPattern = /^[\x21-\x7e]{1,128}$/;

export interface AccountRef {
  readonly customer: string;
  readonly unit: string;
}

export interface ParsedHoldId {
  readonly account: AccountRef;
  readonly accountKey: string;
  /** The hold's id inside its account's state. */
  readonly suffix: string;
}

const suffixLength = 16; // 12 bytes of the hash: 96 bits, per account
const tokenPattern = /^[A-Za-z0-9_-]+$/;

// Every operation encodes or decodes its customer and unit, and a process sees the same few many times over: both
// directions are remembered (≤ tokenCacheMax entries each, then forgotten at once).
const tokenCacheMax = 8_192;
const encodedTokens = new Map<string, string>();
const decodedTokens = new Map<string, string>();

function remember(cache: Map<string, string>, key: string, value: string): string {
  if (cache.size >= tokenCacheMax) cache.clear();
  cache.set(key, value);
  return value;
}

function encodeToken(text: string): string {
  return encodedTokens.get(text) ?? remember(encodedTokens, text, Buffer.from(text, 'utf8').toString('base64url'));
}

function decodeToken(token: string): string | undefined {
  const known = decodedTokens.get(token);
  if (known !== undefined) return known;
  if (!tokenPattern.test(token)) return undefined;
  const text = Buffer.from(token, 'base64url').toString('utf8');
  return encodeToken(text) === token ? remember(decodedTokens, token, text) : undefined;
}

export function accountKey(account: AccountRef): string {
  return `${encodeToken(account.customer)}.${encodeToken(account.unit)}`;
}

function sha256(parts: readonly string[]): Buffer {
  // NUL cannot occur in any part (all are printable ASCII), so the join is unambiguous.
  return crypto.createHash('sha256').update(parts.join('\0')).digest();
}

// crypto.hash (Node ≥ 20.12): one call, no Hash object, about a sixth of createHash's cost on inputs this short.
// @types/node 20 does not declare it yet.
const hashOnce = (crypto as { hash?: (algorithm: string, data: string, encoding: 'base64url') => string }).hash;

/** The first `chars` of base64url(sha256(parts)): `chars` a multiple of 4, so it is exactly 3·chars/4 leading bytes. */
function sha256Prefix(parts: readonly string[], chars: number): string {
  const text =
    hashOnce === undefined ? sha256(parts).toString('base64url') : hashOnce('sha256', parts.join('\0'), 'base64url');
  return flatPrefix(text, chars);
}

const codeUnits: number[] = [];

/**
 * text.slice(0, chars) as a string of its own. V8 makes a slice of 13 characters or more a view that keeps the
 * whole 43-character digest alive: a log-engine process keeps a million ids (open and closed holds), and the view
 * tripled what each costs (32 → 96 bytes).
 */
function flatPrefix(text: string, chars: number): string {
  codeUnits.length = chars;
  for (let i = 0; i < chars; i++) codeUnits[i] = text.charCodeAt(i);
  return String.fromCharCode.apply(null, codeUnits);
}

export function holdSuffix(account: AccountRef, idempotencyKey: string): string {
  // 16 characters: 12 bytes.
  return sha256Prefix(['drawdown.hold.v1', account.customer, account.unit, idempotencyKey], suffixLength);
}

export function holdIdFor(account: AccountRef, idempotencyKey: string): string {
  return `${accountKey(account)}.${holdSuffix(account, idempotencyKey)}`;
}

export function holdIdOf(key: string, suffix: string): string {
  return `${key}.${suffix}`;
}

/** undefined for anything that is not a hold id this module could have made. */
export function parseHoldId(id: string): ParsedHoldId | undefined {
  if (id.length > 400) return undefined;
  const parts = id.split('.');
  if (parts.length !== 3) return undefined;
  const [customerToken, unitToken, suffix] = parts as [string, string, string];
  const customer = decodeToken(customerToken);
  const unit = decodeToken(unitToken);
  if (customer === undefined || unit === undefined || !customerPattern.test(customer) || !unitPattern.test(unit))
    return undefined;
  if (suffix.length !== suffixLength || !tokenPattern.test(suffix)) return undefined;
  return { account: { customer, unit }, accountKey: `${customerToken}.${unitToken}`, suffix };
}

/**
 * What makes two reserves under one key "the same request": the amount (in
 * canonical text) and the metadata (sorted by key). 64 bits are plenty — it is
 * only ever compared with the one fingerprint stored under the same key.
 */
// Most reserves carry no metadata and one of a few amounts: their fingerprints are kept (≤ fingerprintCacheMax).
const fingerprintCache = new Map<string, string>();
const fingerprintCacheMax = 1_024;

export function bodyFingerprint(amount: string, metadata: Readonly<Record<string, string>> | undefined): string {
  if (metadata === undefined || Object.keys(metadata).length === 0) {
    let fp = fingerprintCache.get(amount);
    if (fp === undefined) {
      fp = fingerprintOf(amount, undefined);
      if (fingerprintCache.size >= fingerprintCacheMax) fingerprintCache.clear();
      fingerprintCache.set(amount, fp);
    }
    return fp;
  }
  return fingerprintOf(amount, metadata);
}

function fingerprintOf(amount: string, metadata: Readonly<Record<string, string>> | undefined): string {
  const entries =
    metadata === undefined ? [] : Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return sha256(['drawdown.hold.body.v1', JSON.stringify([amount, entries])])
    .subarray(0, 8)
    .toString('base64url');
}

/** A usage event's key as remembered by the hold it consumed (so a redelivered event consumes once). */
export function usageKeyHash(usageKey: string): string {
  // 12 characters: 9 bytes.
  return sha256Prefix(['drawdown.hold.usage.v1', usageKey], 12);
}
