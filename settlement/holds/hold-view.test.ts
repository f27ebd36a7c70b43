/**
 * How a hold is shown (hold-store.ts holdView): instants as ISO 8601 text,
 * consumed = amount − remaining, the status the API names.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ClosedHold, OpenHold } from './hold-account.js';
import { holdView, iso } from './hold-store.js';

const account = { customer: 'acme', unit: 'credits' };
const key = 'YWNtZQ.Y3JlZGl0cw';

function open(amount: string, remaining: string, extra: Partial<OpenHold> = {}): OpenHold {
  return {
    id: 'abcdefghijklmnop',
    fp: 'fp',
    amount,
    remaining,
    createdMs: Date.UTC(2026, 11, 2, 1, 2, 3, 4),
    expiresMs: Date.UTC(2026, 11, 2, 1, 7, 3, 4),
    metadata: undefined,
    usage: [],
    ...extra,
  };
}

describe('instants as the API shows them', () => {
  it('are Date#toISOString, whatever the instant and the order they come in', () => {
    const instant = fc.oneof(
      fc.integer({ min: 0, max: 253_402_300_799_999 }),
      fc.integer({ min: -62_198_755_200_000, max: 8_640_000_000_000_000 }),
      fc.constantFrom(0, 999, 1_000, 1_764_640_000_999, 253_402_300_799_999, 253_402_300_800_000, -1),
    );
    fc.assert(
      fc.property(fc.array(instant, { minLength: 1, maxLength: 20 }), (instants) => {
        for (const ms of instants) expect(iso(ms)).toBe(new Date(ms).toISOString());
      }),
      { numRuns: 500 },
    );
  });

  it('of one second differ in the milliseconds only, padded to three digits', () => {
    const second = Date.UTC(2026, 11, 2, 1, 2, 3);
    expect([0, 7, 42, 999].map((ms) => iso(second + ms))).toEqual([
      '2026-12-02T01:02:03.000Z',
      '2026-12-02T01:02:03.007Z',
      '2026-12-02T01:02:03.042Z',
      '2026-12-02T01:02:03.999Z',
    ]);
  });
});

describe('holdView', () => {
  it('shows an untouched hold as consumed 0, and a partly used one as amount − remaining', () => {
    expect(holdView(account, key, open('5', '5'))).toMatchObject({
      id: `${key}.abcdefghijklmnop`,
      status: 'open',
      consumed: '0',
      created_at: '2026-12-02T01:02:03.004Z',
      expires_at: '2026-12-02T01:07:03.004Z',
      closed_at: null,
    });
    expect(holdView(account, key, open('5', '1.25')).consumed).toBe('3.75');
    expect(holdView(account, key, open('0.3', '0.1')).consumed).toBe('0.2');
    expect(holdView(account, key, open('5', '5', { releasedMs: 1 })).status).toBe('releasing');
  });

  it('shows a closed hold with its status and when it closed', () => {
    const closed: ClosedHold = {
      id: 'abcdefghijklmnop',
      fp: 'fp',
      status: 'expired',
      amount: '2',
      remaining: '0.5',
      createdMs: Date.UTC(2026, 0, 1),
      closedMs: Date.UTC(2026, 0, 1, 0, 5),
    };
    expect(holdView(account, key, closed)).toMatchObject({
      status: 'expired',
      consumed: '1.5',
      expires_at: null,
      closed_at: '2026-01-01T00:05:00.000Z',
      metadata: null,
    });
  });
});
