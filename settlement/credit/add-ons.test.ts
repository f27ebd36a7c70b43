/**
 * Add-ons and one-time charges (SPEC §4): their grants are blocks like a
 * plan's, burn in the same order, roll over by their own rule, and change
 * only at the next billing term. Pure: the catalog as parsed, the schedules
 * settlement builds from it, and the credit timeline over consecutive
 * windows, so settling in one window or in many gives the same postings.
 */
import { describe, expect, it } from 'vitest';
import { parseCatalog, type Catalog } from '../../catalog/model.js';
import { formatAmount, money } from '../../shared/money.js';
import { scheduleSubscriptionEdit, subscriptionJson, parseSubscription } from '../../catalog/plans.js';
import { Problems } from '../../shared/validate.js';
import { emptyState, type CreditState, type Posting } from './blocks.js';
import { grantSchedules } from './schedule.js';
import { settleWindow, type UsageCharge } from './timeline.js';

const utc = (iso: string): number => Date.parse(iso);
const hourMs = 3_600_000;

/** The worked example of settlement/README.md "Add-ons and one-time charges". */
function workedExample(subscription: Record<string, unknown> = {}): Catalog {
  return parseCatalog({
    credit_units: [{ id: 'ai', name: 'AI credits' }],
    plans: [
      {
        id: 'pro',
        billing: 'monthly',
        versions: [
          {
            version: 1,
            grants: [
              {
                id: 'monthly',
                unit: 'ai',
                quantity: '10000',
                frequency: 'monthly',
                rollover: { kind: 'capped', percent: '20', maximum: '1000' },
              },
            ],
          },
        ],
      },
    ],
    add_ons: [
      {
        id: 'ai-5k',
        billing: 'monthly',
        versions: [
          { version: 1, grant: { unit: 'ai', quantity: '5000', frequency: 'monthly', rollover: { kind: 'none' } } },
        ],
      },
    ],
    charges: [{ id: 'launch-bonus', grant: { unit: 'ai', quantity: '2000', expires_after: 'P60D' } }],
    subscriptions: [
      {
        id: 'sub-1',
        customer: 'acme',
        plan: 'pro',
        start: '2026-01-01T00:00:00Z',
        add_ons: [{ add_on: 'ai-5k', quantity: 2 }],
        charges: [{ id: 'bonus', charge: 'launch-bonus', at: '2026-01-10T00:00:00Z' }],
        ...subscription,
      },
    ],
  });
}

interface Run {
  postings: Posting[];
  state: CreditState;
}

/** Settles acme's `ai` credits from `fromIso` to `untilIso` in windows of `stepMs`. */
function settle(catalog: Catalog, fromIso: string, untilIso: string, stepMs: number, usage: UsageCharge[] = []): Run {
  const state = emptyState();
  const postings: Posting[] = [];
  for (let from = utc(fromIso); from < utc(untilIso); from += stepMs) {
    const until = Math.min(from + stepMs, utc(untilIso));
    const { grantsByAccount, overageByAccount } = grantSchedules(catalog, from, until);
    const key = 'acme\u0000ai';
    const result = settleWindow(
      state,
      { fromMs: from, untilMs: until },
      grantsByAccount.get(key) ?? [],
      usage.filter((u) => u.atMs >= from && u.atMs < until),
      { allowedNegative: undefined, overage: overageByAccount.get(key) },
    );
    postings.push(...result.postings);
  }
  return { postings, state };
}

const use = (iso: string, cost: string): UsageCharge => ({
  atMs: utc(iso),
  cost: money(cost),
  note: 'usage',
  kind: 'usage',
});

/** Postings as [kind, block, amount, instant], for reading a test like the README's table. */
const rows = (postings: Posting[]) =>
  postings.map((p) => [p.kind, p.blockId, formatAmount(p.amount), new Date(p.atMs).toISOString()]);

describe('the worked example: plan grant + 2 × add-on + a one-time charge', () => {
  const usage = [use('2026-01-05T00:00:00Z', '4000')];

  it('grants, burns and, at the first term end, carries and expires each block by its own rule', () => {
    const { postings, state } = settle(
      workedExample(),
      '2026-01-01T00:00:00Z',
      '2026-02-01T00:00:01Z',
      31 * 24 * hourMs,
      usage,
    );
    expect(rows(postings)).toEqual([
      ['grant', 'sub-1:monthly:v1:p0', '10000', '2026-01-01T00:00:00.000Z'],
      // 2 × 5,000 is one block of 10,000: the copies are one grant.
      ['grant', 'sub-1:add_on/ai-5k:v1:p0', '10000', '2026-01-01T00:00:00.000Z'],
      // The add-on block expires first (2026-02-01), so it pays; the plan block (capped: no expiry) waits.
      ['usage', 'sub-1:add_on/ai-5k:v1:p0', '-4000', '2026-01-05T00:00:00.000Z'],
      // The charge grants at its own instant, not at a term start.
      ['grant', 'sub-1:charge/bonus:once', '2000', '2026-01-10T00:00:00.000Z'],
      // First term end: the add-on (no rollover) expires what is left, 6,000.
      ['expiry', 'sub-1:add_on/ai-5k:v1:p0', '-6000', '2026-02-01T00:00:00.000Z'],
      // The plan grant keeps min(20 % × 10,000, 1,000) = 1,000; 9,000 expire.
      ['expiry', 'sub-1:monthly:v1:p0', '-9000', '2026-02-01T00:00:00.000Z'],
      ['grant', 'sub-1:monthly:v1:p1', '10000', '2026-02-01T00:00:00.000Z'],
      ['grant', 'sub-1:add_on/ai-5k:v1:p1', '10000', '2026-02-01T00:00:00.000Z'],
    ]);
    // The charge's 2,000 carry untouched to their own expiry, 60 days after 2026-01-10.
    const charge = state.blocks.get('sub-1:charge/bonus:once')!;
    expect([formatAmount(charge.remaining), new Date(charge.expiresAtMs!).toISOString()]).toEqual([
      '2000',
      '2026-03-11T00:00:00.000Z',
    ]);
    expect(charge.source).toBe('charge');
    expect(state.blocks.get('sub-1:add_on/ai-5k:v1:p1')!.source).toBe('add_on');
    expect(formatAmount(state.blocks.get('sub-1:monthly:v1:p0')!.remaining)).toBe('1000');
  });

  it('posts the same whether settled in one window or hourly', () => {
    const once = settle(workedExample(), '2026-01-01T00:00:00Z', '2026-02-01T01:00:00Z', 32 * 24 * hourMs, usage);
    const hourly = settle(workedExample(), '2026-01-01T00:00:00Z', '2026-02-01T01:00:00Z', hourMs, usage);
    expect(rows(hourly.postings)).toEqual(rows(once.postings));
  });

  it('in the second term burns the new add-on block, then the charge, then the oldest plan block', () => {
    const { postings } = settle(workedExample(), '2026-01-01T00:00:00Z', '2026-02-11T00:00:00Z', 24 * hourMs, [
      ...usage,
      use('2026-02-10T00:00:00Z', '12500'),
    ]);
    expect(rows(postings.filter((p) => p.kind === 'usage' && p.atMs === utc('2026-02-10T00:00:00Z')))).toEqual([
      ['usage', 'sub-1:add_on/ai-5k:v1:p1', '-10000', '2026-02-10T00:00:00.000Z'],
      ['usage', 'sub-1:charge/bonus:once', '-2000', '2026-02-10T00:00:00.000Z'],
      // Both plan blocks never expire; granted before purchased ties, then the oldest (January's carry) first.
      ['usage', 'sub-1:monthly:v1:p0', '-500', '2026-02-10T00:00:00.000Z'],
    ]);
  });
});

describe('add-ons on a subscription', () => {
  it('per-subscription overrides apply to an add-on grant, per copy', () => {
    const catalog = workedExample({
      add_ons: [{ add_on: 'ai-5k', quantity: 3, overrides: { quantity: '1000', rollover: { kind: 'unlimited' } } }],
    });
    const { postings, state } = settle(catalog, '2026-01-01T00:00:00Z', '2026-02-01T00:00:01Z', 24 * hourMs);
    expect(rows(postings.filter((p) => p.blockId.includes('add_on')))).toEqual([
      ['grant', 'sub-1:add_on/ai-5k:v1:p0', '3000', '2026-01-01T00:00:00.000Z'],
      ['grant', 'sub-1:add_on/ai-5k:v1:p1', '3000', '2026-02-01T00:00:00.000Z'],
    ]);
    // Unlimited rollover: January's add-on credits do not expire.
    expect(state.blocks.get('sub-1:add_on/ai-5k:v1:p0')!.expiresAtMs).toBeUndefined();
  });

  it('an add-on added or removed mid-term takes effect at the next term', () => {
    const catalog = workedExample({ add_ons: [] });
    const plan = catalog.plans.get('pro')!;
    const added = scheduleSubscriptionEdit(
      catalog.subscriptions[0]!,
      plan,
      { addOns: [{ addOn: 'ai-5k', quantity: 1, version: 1, overrides: {} }] },
      utc('2026-01-15T12:00:00Z'),
      catalog.addOns,
    );
    const removed = scheduleSubscriptionEdit(added, plan, { addOns: [] }, utc('2026-02-20T00:00:00Z'), catalog.addOns);
    // Written back and read again, as the catalog stores it.
    const problems = new Problems();
    const reread = parseSubscription(problems, subscriptionJson(removed), 's', catalog.plans, catalog);
    expect(problems.list).toEqual([]);
    const edited = { ...catalog, subscriptions: [reread!] };
    const { postings } = settle(edited, '2026-01-01T00:00:00Z', '2026-04-01T00:00:01Z', 24 * hourMs);
    expect(rows(postings.filter((p) => p.kind === 'grant' && p.blockId.includes('add_on')))).toEqual([
      ['grant', 'sub-1:add_on/ai-5k:v1:p1', '5000', '2026-02-01T00:00:00.000Z'],
    ]);
  });

  it('refuses an add-on edit the catalog would refuse, naming the field', () => {
    const catalog = workedExample({ add_ons: [] });
    expect(() =>
      scheduleSubscriptionEdit(
        catalog.subscriptions[0]!,
        catalog.plans.get('pro')!,
        { addOns: [{ addOn: 'nope', quantity: 1, version: 1, overrides: {} }] },
        utc('2026-01-15T00:00:00Z'),
        catalog.addOns,
      ),
    ).toThrow(/add-on nope is not defined/);
  });
});

describe('one-time charges', () => {
  const withCharge = (grant: Record<string, unknown>) =>
    parseCatalog({
      ...JSON.parse(JSON.stringify(rawExample())),
      charges: [{ id: 'launch-bonus', grant: { unit: 'ai', quantity: '2000', ...grant } }],
    });

  it('grants once, however many windows cover it or re-run it', () => {
    const { postings } = settle(workedExample(), '2026-01-01T00:00:00Z', '2026-03-01T00:00:00Z', hourMs);
    expect(postings.filter((p) => p.blockId === 'sub-1:charge/bonus:once' && p.kind === 'grant')).toHaveLength(1);
  });

  it('with a capped rollover keeps min(percent × unused, maximum) at the end of its term, once', () => {
    const catalog = withCharge({ rollover: { kind: 'capped', percent: '50', maximum: '600' } });
    const { postings, state } = settle(catalog, '2026-01-01T00:00:00Z', '2026-04-01T00:00:01Z', 24 * hourMs);
    expect(rows(postings.filter((p) => p.blockId === 'sub-1:charge/bonus:once'))).toEqual([
      ['grant', 'sub-1:charge/bonus:once', '2000', '2026-01-10T00:00:00.000Z'],
      ['expiry', 'sub-1:charge/bonus:once', '-1400', '2026-02-01T00:00:00.000Z'],
    ]);
    expect(formatAmount(state.blocks.get('sub-1:charge/bonus:once')!.remaining)).toBe('600');
  });

  it('with no rollover expires at the end of the term it was applied in; time-limited that long after', () => {
    const none = settle(
      withCharge({ rollover: { kind: 'none' } }),
      '2026-01-01T00:00:00Z',
      '2026-03-01T00:00:00Z',
      24 * hourMs,
    );
    expect(rows(none.postings.filter((p) => p.kind === 'expiry' && p.blockId.includes('charge')))).toEqual([
      ['expiry', 'sub-1:charge/bonus:once', '-2000', '2026-02-01T00:00:00.000Z'],
    ]);
    const timed = settle(
      withCharge({ rollover: { kind: 'time_limited', duration: 'P1M' } }),
      '2026-01-01T00:00:00Z',
      '2026-04-01T00:00:00Z',
      24 * hourMs,
    );
    expect(rows(timed.postings.filter((p) => p.kind === 'expiry' && p.blockId.includes('charge')))).toEqual([
      ['expiry', 'sub-1:charge/bonus:once', '-2000', '2026-03-01T00:00:00.000Z'],
    ]);
  });

  it('without an expiry or rollover never expires, like a purchase', () => {
    const { state } = settle(withCharge({}), '2026-01-01T00:00:00Z', '2026-06-01T00:00:00Z', 24 * hourMs * 7);
    expect(state.blocks.get('sub-1:charge/bonus:once')!.expiresAtMs).toBeUndefined();
  });
});

describe('metered add-ons', () => {
  it('set the overage price for their unit, over the plan, from the term they are added', () => {
    const raw = rawExample();
    raw.add_ons.push({
      id: 'ai-overage',
      kind: 'metered',
      billing: 'monthly',
      overage: { unit: 'ai', price_per_credit: { currency: 'USD', amount: '0.002' } },
    });
    raw.subscriptions[0].add_ons.push({ add_on: 'ai-overage' });
    const catalog = parseCatalog(raw);
    const overage = grantSchedules(catalog, utc('2026-01-02T00:00:00Z'), utc('2026-01-03T00:00:00Z')).overageByAccount;
    expect(overage.get('acme\u0000ai')?.pricePerCredit.toFixed()).toBe('0.002');
  });
});

/** The worked example as a document, for variations. */
function rawExample(): Record<string, any> {
  return {
    credit_units: [{ id: 'ai', name: 'AI credits' }],
    plans: [
      {
        id: 'pro',
        billing: 'monthly',
        versions: [
          {
            version: 1,
            grants: [
              {
                id: 'monthly',
                unit: 'ai',
                quantity: '10000',
                frequency: 'monthly',
                rollover: { kind: 'capped', percent: '20', maximum: '1000' },
              },
            ],
          },
        ],
      },
    ],
    add_ons: [
      {
        id: 'ai-5k',
        billing: 'monthly',
        versions: [
          { version: 1, grant: { unit: 'ai', quantity: '5000', frequency: 'monthly', rollover: { kind: 'none' } } },
        ],
      },
    ],
    charges: [{ id: 'launch-bonus', grant: { unit: 'ai', quantity: '2000', expires_after: 'P60D' } }],
    subscriptions: [
      {
        id: 'sub-1',
        customer: 'acme',
        plan: 'pro',
        start: '2026-01-01T00:00:00Z',
        add_ons: [{ add_on: 'ai-5k', quantity: 2 }],
        charges: [{ id: 'bonus', charge: 'launch-bonus', at: '2026-01-10T00:00:00Z' }],
      },
    ],
  };
}
