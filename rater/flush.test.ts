import { describe, expect, it } from 'vitest';
import { StoreError, writeFailure } from '../shared/clickhouse/store.js';
import { retryDelayMs } from './flush.js';

describe('writeFailure: retry, or blame the rows', () => {
  it('given ClickHouse unreachable (a retryable StoreError), then retry', () => {
    expect(writeFailure(new StoreError('ECONNREFUSED', true))).toBe('retry');
  });
  it('given an error about the store, not the rows (table missing, disk full, read-only, too many parts), then retry', () => {
    for (const code of [60, 16, 243, 164, 252, 241])
      expect(writeFailure(new StoreError(`Code: ${code}. DB::Exception: …`, false)), String(code)).toBe('retry');
    // The server client's error carries the code as a field.
    const cause = Object.assign(new Error('Table default.usage_minute does not exist'), { code: '60' });
    expect(writeFailure(new StoreError('ClickHouse insert failed', false, cause))).toBe('retry');
    expect(writeFailure(new StoreError('chDB session is closed', false))).toBe('retry');
  });
  it('given ClickHouse refusing the data (parse error, value out of range, overflow), then refused', () => {
    for (const code of [27, 41, 69, 407, 321])
      expect(writeFailure(new StoreError(`Code: ${code}. DB::Exception: …`, false)), String(code)).toBe('refused');
  });
  it('given anything that is not a store error (a bug, NATS), then retry: it is never blamed on the data', () => {
    expect(writeFailure(new TypeError('x is undefined'))).toBe('retry');
  });
});

describe('retryDelayMs: exponential back-off with jitter', () => {
  it('doubles from 100 ms, stays within the upper half of each step, and never passes the maximum', () => {
    for (let attempt = 1; attempt <= 30; attempt++) {
      const ceiling = Math.min(10_000, 100 * 2 ** (attempt - 1));
      expect(retryDelayMs(attempt, 10_000, () => 0)).toBe(ceiling / 2);
      expect(retryDelayMs(attempt, 10_000, () => 0.999999)).toBeLessThanOrEqual(ceiling);
    }
  });
});
