/**
 * The grant.expiring rule alone (expiring.ts): which blocks are expiring —
 * at the lead time's edge, with nothing left, already expired, carried by
 * rollover, drawn by unsettled usage in burn order — and that deciding them
 * under the account's state announces each (block, expiry) once.
 */
import { describe, expect, it } from 'vitest';
import { money } from '../../shared/money.js';
import { grantExpiry } from '../credit/rollover.js';
import { emptyCrossingState } from './crossings.js';
import {
  decideExpiring,
  expiringBlocks,
  expiringMarkKeepMs,
  expiringNoticeId,
  expiringPerDecisionMax,
  type HeldBlock,
} from './expiring.js';

const hour = 3_600_000;
const day = 24 * hour;
const now = Date.parse('2026-03-10T12:00:00Z');
const lead = 7 * day;
const account = { customer: 'acme', unit: 'credits', names: { unit_name: 'Credits', unit_internal_name: 'credits' } };

function block(id: string, remaining: string, expiresAtMs: number | undefined, extra: Partial<HeldBlock> = {}) {
  return {
    id,
    source: 'grant' as const,
    remaining: money(remaining),
    createdAtMs: now - 30 * day,
    expiresAtMs,
    ...extra,
  } satisfies HeldBlock;
}

const ids = (blocks: ReturnType<typeof expiringBlocks>) => blocks.map((b) => `${b.block.id}=${b.remaining.toString()}`);

describe('which blocks are expiring', () => {
  it('given a block expiring exactly at now + lead time, then it is expiring; one millisecond later it is not yet', () => {
    expect(ids(expiringBlocks([block('edge', '10', now + lead)], money(0), now, lead))).toEqual(['edge=10']);
    expect(ids(expiringBlocks([block('later', '10', now + lead + 1)], money(0), now, lead))).toEqual([]);
  });

  it('given a block with nothing left, then it is not expiring', () => {
    expect(expiringBlocks([block('empty', '0', now + day)], money(0), now, lead)).toEqual([]);
  });

  it('given a block that expires now or expired already (not yet expired by settlement), then it is not expiring', () => {
    expect(expiringBlocks([block('now', '10', now), block('past', '10', now - hour)], money(0), now, lead)).toEqual([]);
  });

  it('given blocks that never expire (purchases, unlimited or capped rollover), then none is expiring', () => {
    const blocks = [block('bought', '10', undefined, { source: 'purchase' }), block('capped-carry', '5', undefined)];
    expect(expiringBlocks(blocks, money(0), now, lead)).toEqual([]);
  });

  it('given a block carried by time-limited rollover, then it is expiring by its own expiry (period end + duration), not its period end', () => {
    // Granted for February, carried 2 months: expires 2026-05-01, not 2026-03-01.
    const periodEnd = Date.parse('2026-03-01T00:00:00Z');
    const expiresAt = grantExpiry({ kind: 'time_limited', duration: { months: 2, days: 0 } }, periodEnd)!;
    expect(new Date(expiresAt).toISOString()).toBe('2026-05-01T00:00:00.000Z');
    const carried = block('feb', '600', expiresAt);
    expect(expiringBlocks([carried], money(0), now, lead)).toEqual([]);
    const weekBefore = expiresAt - 7 * day;
    expect(ids(expiringBlocks([carried], money(0), weekBefore, lead))).toEqual(['feb=600']);
    expect(ids(expiringBlocks([carried], money(0), weekBefore - 1, lead))).toEqual([]);
  });

  it('given unsettled usage and holds, then they are taken in burn order (soonest expiry first) before a block counts as expiring', () => {
    const blocks = [
      block('b-later', '50', now + 5 * day),
      block('a-soon', '30', now + 2 * day),
      block('never', '1000', undefined, { source: 'purchase' }),
    ];
    // 40 drawn: all 30 of a-soon, then 10 of b-later.
    expect(ids(expiringBlocks(blocks, money(40), now, lead))).toEqual(['b-later=40']);
    // Exactly all of both: nothing left to expire.
    expect(ids(expiringBlocks(blocks, money(80), now, lead))).toEqual([]);
    // Nothing drawn: both, soonest first; the never-expiring purchase is not.
    expect(ids(expiringBlocks(blocks, money(0), now, lead))).toEqual(['a-soon=30', 'b-later=50']);
  });

  it('given equal expiries, then granted credits burn before purchased, then oldest first, as settlement draws them', () => {
    const at = now + day;
    const blocks = [
      block('manual-new', '10', at, { source: 'manual', createdAtMs: now - day }),
      block('grant-old', '10', at, { createdAtMs: now - 2 * day }),
    ];
    expect(ids(expiringBlocks(blocks, money(15), now, lead))).toEqual(['manual-new=5']);
  });

  it('keeps exact decimals: 0.000000001 left after a draw is still expiring', () => {
    const blocks = [block('tiny', '1.000000001', now + day)];
    expect(ids(expiringBlocks(blocks, money('1'), now, lead))).toEqual(['tiny=0.000000001']);
  });
});

describe('deciding grant.expiring', () => {
  const soon = now + 3 * day;
  const expiring = expiringBlocks(
    [block('sub-1:monthly:p2', '42.5', soon, { source: 'add_on', origin: 'ai-5k' })],
    money(0),
    now,
    lead,
  );

  it('given an expiring block not yet announced, then one notice with a deterministic id and the figures, in the outbox of the same state', () => {
    const { state, added } = decideExpiring(account, emptyCrossingState(), expiring, now, { text: 'P7D' });
    expect(added).toHaveLength(1);
    const notice = added[0]!.notice;
    expect(notice).toEqual({
      id: expiringNoticeId('acme', 'credits', 'sub-1:monthly:p2', soon),
      type: 'grant.expiring',
      timestamp: new Date(now).toISOString(),
      data: {
        customer: 'acme',
        unit: 'credits',
        unit_name: 'Credits',
        unit_internal_name: 'credits',
        block: 'sub-1:monthly:p2',
        grant_source: 'add_on',
        grant_origin: 'ai-5k',
        remaining: '42.5',
        expires_at: new Date(soon).toISOString(),
        expiring_within: 'P7D',
      },
    });
    expect(notice.id).toMatch(/^ntc_[A-Za-z0-9_-]{22}$/);
    expect(state.outbox.map((o) => o.notice.id)).toEqual([notice.id]);
    expect(state.expiring).toEqual({ [notice.id]: { block: 'sub-1:monthly:p2', expiresAtMs: soon, decidedMs: now } });
  });

  it('given the block announced already, when decided again (later figures, another process, after a restart), then nothing changes and the state is the same object', () => {
    const first = decideExpiring(account, emptyCrossingState(), expiring, now, { text: 'P7D' });
    const drained = { ...first.state, outbox: [] };
    const again = decideExpiring(account, drained, expiring, now + hour, { text: 'P7D' });
    expect(again.added).toEqual([]);
    expect(again.state).toBe(drained);
  });

  it('given a plan grant, then grant_source is plan and an origin-less block names none', () => {
    const plan = expiringBlocks([block('p', '1', soon)], money(0), now, lead);
    const { added } = decideExpiring(account, emptyCrossingState(), plan, now, { text: 'P7D' });
    expect(added[0]!.notice.data).toMatchObject({ grant_source: 'plan', grant_origin: null });
  });

  it('given the same block id with a different expiry, then it is another notice', () => {
    expect(expiringNoticeId('acme', 'credits', 'b', soon)).not.toBe(expiringNoticeId('acme', 'credits', 'b', soon + 1));
    expect(expiringNoticeId('acme', 'credits', 'b', soon)).not.toBe(expiringNoticeId('acme', 'other', 'b', soon));
  });

  it('keeps marks until a day after the expiry, then forgets them (the block can no longer be expiring)', () => {
    const first = decideExpiring(account, emptyCrossingState(), expiring, now, { text: 'P7D' }).state;
    const kept = decideExpiring(account, first, [], soon + expiringMarkKeepMs, { text: 'P7D' });
    expect(kept.state).toBe(first);
    const pruned = decideExpiring(account, first, [], soon + expiringMarkKeepMs + 1, { text: 'P7D' });
    expect(pruned.state.expiring).toEqual({});
  });

  it(`announces at most ${expiringPerDecisionMax} blocks per decision, soonest first; the rest are deferred to the next`, () => {
    const many = expiringBlocks(
      Array.from({ length: expiringPerDecisionMax + 3 }, (_, i) => block(`b${i}`, '1', now + hour + i)),
      money(0),
      now,
      lead,
    );
    const first = decideExpiring(account, emptyCrossingState(), many, now, { text: 'P7D' });
    expect(first.added).toHaveLength(expiringPerDecisionMax);
    expect(first.deferred).toBe(3);
    expect(first.added[0]!.notice.data.block).toBe('b0');
    const second = decideExpiring(account, first.state, many, now, { text: 'P7D' });
    expect(second.added.map((a) => a.notice.data.block)).toEqual(['b64', 'b65', 'b66']);
  });
});
