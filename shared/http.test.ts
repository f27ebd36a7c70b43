import { describe, expect, it } from 'vitest';
import { StoreError } from './clickhouse/store.js';
import { DrawdownError } from './errors.js';
import { loggablePath, problemFor } from './http.js';

describe('problemFor: what a thrown error becomes for the client', () => {
  it('turns ClickHouse being unreachable into 503 store_unavailable with Retry-After, also when wrapped', () => {
    const unreachable = new StoreError('ClickHouse query failed: connect ECONNREFUSED 127.0.0.1:9', true);
    for (const error of [unreachable, new Error('balance failed', { cause: unreachable })]) {
      const problem = problemFor(error);
      expect(problem).toMatchObject({ code: 'store_unavailable', status: 503, retryAfterSeconds: 2 });
      expect(problem.message).not.toContain('127.0.0.1');
    }
  });

  it('keeps a failing ClickHouse statement, and anything unknown, internal; a DrawdownError as it is', () => {
    expect(problemFor(new StoreError('ClickHouse query failed: Code: 62, Syntax error', false)).code).toBe('internal');
    expect(problemFor(new TypeError('x is undefined')).code).toBe('internal');
    const invalid = new DrawdownError('request_invalid', 'until must be after from');
    expect(problemFor(invalid)).toBe(invalid);
    // Thrown as store_unavailable anywhere, it still tells the client when to retry.
    expect(new DrawdownError('store_unavailable', 'read back failed').retryAfterSeconds).toBe(2);
  });

  it('logs a request URL as its path alone', () => {
    expect(loggablePath('/v1/customers/x/balance?api_key=secret123')).toBe('/v1/customers/x/balance');
    expect(loggablePath('/v1/catalog')).toBe('/v1/catalog');
    expect(loggablePath(undefined)).toBe('/');
  });
});
