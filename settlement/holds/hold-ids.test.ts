/**
 * Account keys and hold ids: valid KV keys for every customer id ingest
 * accepts, one key per account (no two accounts share one), and hold ids that
 * name their account and nothing else.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import {
  accountKey,
  bodyFingerprint,
  customerPattern,
  holdIdFor,
  holdSuffix,
  parseHoldId,
  unitPattern,
  usageKeyHash,
} from './hold-ids.js';
import { fillHoldStoreSettings, valueBytesBound } from './hold-options.js';

// What @nats-io/kv accepts as a key (kv.js validateKey).
const kvKey = (key: string) => /^[-/=.\w]+$/.test(key) && !key.startsWith('.') && !key.endsWith('.');
const customers = fc.stringMatching(customerPattern);
const units = fc.stringMatching(unitPattern);

describe('account keys and hold ids', () => {
  it('every customer and unit id gives a valid KV key of two tokens', () => {
    fc.assert(
      fc.property(customers, units, (customer, unit) => {
        const key = accountKey({ customer, unit });
        expect(kvKey(key)).toBe(true);
        expect(key.split('.')).toHaveLength(2);
      }),
    );
  });

  it('ids with dots, colons and at signs do not collide', () => {
    const keys = [
      accountKey({ customer: 'a.b', unit: 'c' }),
      accountKey({ customer: 'a', unit: 'b.c' }),
      accountKey({ customer: 'a:b', unit: 'c' }),
      accountKey({ customer: 'a@b', unit: 'c' }),
      accountKey({ customer: 'a_b', unit: 'c' }),
    ];
    expect(new Set(keys).size).toBe(keys.length);
    fc.assert(
      fc.property(customers, units, customers, units, (c1, u1, c2, u2) => {
        fc.pre(c1 !== c2 || u1 !== u2);
        expect(accountKey({ customer: c1, unit: u1 })).not.toBe(accountKey({ customer: c2, unit: u2 }));
      }),
    );
  });

  it('a hold id parses back to its account, and is the same for the same key', () => {
    fc.assert(
      fc.property(customers, units, fc.stringMatching(/^[\x21-\x7e]{1,128}$/), (customer, unit, key) => {
        const id = holdIdFor({ customer, unit }, key);
        expect(id).toBe(holdIdFor({ customer, unit }, key));
        const parsed = parseHoldId(id);
        expect(parsed?.account).toEqual({ customer, unit });
        expect(parsed?.accountKey).toBe(accountKey({ customer, unit }));
        expect(kvKey(id)).toBe(true);
      }),
    );
  });

  it('refuses anything it could not have made', () => {
    const id = holdIdFor({ customer: 'acme', unit: 'credits' }, 'k1');
    const [c, u, s] = id.split('.') as [string, string, string];
    for (const bad of [
      '',
      'x',
      `${c}.${u}`,
      `${c}.${u}.${s}.x`,
      `${c}.${u}.${s}x`,
      `${c}=.${u}.${s}`,
      `${c}.${u}.${s.slice(1)}`,
      `${Buffer.from('a b').toString('base64url')}.${u}.${s}`,
    ]) {
      expect(parseHoldId(bad)).toBeUndefined();
    }
    // "YWNtZQ" is acme; "YWNtZR" decodes to the same bytes but is not the canonical encoding.
    expect(parseHoldId(`YWNtZR.${u}.${s}`)).toBeUndefined();
  });

  it('the body fingerprint ignores metadata order and sees every change', () => {
    expect(bodyFingerprint('1', { a: '1', b: '2' })).toBe(bodyFingerprint('1', { b: '2', a: '1' }));
    expect(bodyFingerprint('1', undefined)).toBe(bodyFingerprint('1', {}));
    expect(
      new Set([
        bodyFingerprint('1', undefined),
        bodyFingerprint('2', undefined),
        bodyFingerprint('1', { a: '1' }),
        bodyFingerprint('1', { a: '2' }),
      ]).size,
    ).toBe(4);
  });
});

describe('hold store settings', () => {
  it('fills defaults and freezes them', () => {
    const settings = fillHoldStoreSettings({ replicas: 3 });
    expect(settings.replicas).toBe(3);
    expect(settings.openHoldsMax).toBe(1_000);
    expect(Object.isFrozen(settings)).toBe(true);
  });

  it.each([
    [{ replicas: 2.5 }, 'replicas must be an integer from 1 to 5, got 2.5'],
    [{ openHoldsMax: 0 }, 'openHoldsMax must be an integer from 1 to 100000, got 0'],
    [{ attemptsMax: 1 }, 'attemptsMax must be an integer from 2 to 1000, got 1'],
    [{ ttlDefaultMs: 10_000, ttlMaxMs: 5_000 }, 'ttlDefaultMs (10000) must not exceed ttlMaxMs (5000)'],
    [{ backoffBaseMs: 50, backoffMaxMs: 10 }, 'backoffBaseMs (50) must not exceed backoffMaxMs (10)'],
    [{ bucket: 'has.dot' }, 'bucket must be 1–64 characters of [A-Za-z0-9_-], got "has.dot"'],
  ])('refuses %j naming the option', (options, message) => {
    expect(() => fillHoldStoreSettings(options)).toThrow(new RangeError(message));
  });

  it('the default limits fit a stock NATS server (1 MiB max_payload)', () => {
    expect(valueBytesBound(fillHoldStoreSettings({}))).toBeLessThan(1024 * 1024 - 4096);
  });
});

describe('hold ids stay what was stored', () => {
  // Ids live in logs, KV values and callers' databases: the derivation must not drift with how it is computed.
  const sha256 = (parts: string[]) => createHash('sha256').update(parts.join('\0')).digest();

  it('a hold id suffix is the first 12 bytes of sha256(tag, customer, unit, key), base64url', () => {
    fc.assert(
      fc.property(customers, units, fc.stringMatching(/^[\x21-\x7e]{1,128}$/), (customer, unit, key) => {
        const suffix = sha256(['drawdown.hold.v1', customer, unit, key]).subarray(0, 12).toString('base64url');
        expect(holdSuffix({ customer, unit }, key)).toBe(suffix);
        expect(holdIdFor({ customer, unit }, key)).toBe(`${accountKey({ customer, unit })}.${suffix}`);
      }),
    );
    // Known answer, from the createHash derivation every stored id was made with.
    expect(holdIdFor({ customer: 'acme', unit: 'credits' }, 'k1')).toBe('YWNtZQ.Y3JlZGl0cw.sNitZHRCOB2kjY-a');
  });

  it('a usage key is remembered as the first 9 bytes of sha256(tag, key), base64url', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[\x21-\x7e]{1,128}$/), (key) => {
        expect(usageKeyHash(key)).toBe(sha256(['drawdown.hold.usage.v1', key]).subarray(0, 9).toString('base64url'));
      }),
    );
  });

  it('account keys and parsed ids are the same on every call (their caches change nothing)', () => {
    fc.assert(
      fc.property(customers, units, (customer, unit) => {
        const key = `${Buffer.from(customer).toString('base64url')}.${Buffer.from(unit).toString('base64url')}`;
        expect(accountKey({ customer, unit })).toBe(key);
        expect(accountKey({ customer, unit })).toBe(key);
        const id = holdIdFor({ customer, unit }, 'k');
        expect(parseHoldId(id)?.account).toEqual({ customer, unit });
        expect(parseHoldId(id)?.account).toEqual({ customer, unit });
      }),
    );
  });
});
