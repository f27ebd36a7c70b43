/**
 * Plans and subscriptions over time (SPEC §4): edits take effect at the next
 * billing term, never mid-term; plan versions pin running subscriptions;
 * archived credit units take no new grants. Pure: the catalog as parsed,
 * the grant schedules settlement builds from it, and the credit timeline run
 * over consecutive windows.
 */
import { describe, expect, it } from 'vitest';
import { parseCatalog, type Catalog } from '../../catalog/model.js';
import { DrawdownError } from '../../shared/errors.js';
import { formatAmount, money } from '../../shared/money.js';
import { scheduleSubscriptionEdit, subscriptionJson, type Subscription } from '../../catalog/plans.js';
import { emptyState, type CreditState } from './blocks.js';
import { grantSchedules } from './schedule.js';
import { settleWindow } from './timeline.js';

const utc = (iso: string): number => Date.parse(iso);
const dayMs = 86_400_000;

function catalogJson(
  plans: unknown[],
  subscriptions: unknown[],
  units: Record<string, unknown>[] = [{ id: 'credits', name: 'Credits' }],
): Record<string, any> {
  return { credit_units: units, meters: [], rate_card: { versions: [] }, packages: [], plans, subscriptions };
}

function problemsOf(raw: unknown): [string, string][] {
  try {
    parseCatalog(raw);
  } catch (error) {
    expect(error).toBeInstanceOf(DrawdownError);
    return (error as DrawdownError).problems.map((p) => [p.field, p.code]);
  }
  throw new Error('expected catalog_invalid; the catalog was accepted');
}

const grant = (quantity: string, frequency = 'monthly', rollover: unknown = { kind: 'none' }) => ({
  id: 'credits',
  unit: 'credits',
  quantity,
  frequency,
  rollover,
});

/**
 * Settles one customer's credits unit by unit, in windows of `stepMs`, from
 * `fromIso` to `untilIso`; returns the grants issued as [instant, amount].
 */
function grantsIssued(
  catalog: Catalog,
  customer: string,
  fromIso: string,
  untilIso: string,
  stepMs: number,
  state: CreditState = emptyState(),
) {
  const issued: [string, string][] = [];
  const expired: [string, string][] = [];
  for (let from = utc(fromIso); from < utc(untilIso); from += stepMs) {
    const until = Math.min(from + stepMs, utc(untilIso));
    const { grantsByAccount, overageByAccount } = grantSchedules(catalog, from, until);
    const key = `${customer}\u0000credits`;
    const { postings } = settleWindow(state, { fromMs: from, untilMs: until }, grantsByAccount.get(key) ?? [], [], {
      allowedNegative: undefined,
      overage: overageByAccount.get(key),
    });
    for (const p of postings) {
      if (p.kind === 'grant') issued.push([new Date(p.atMs).toISOString(), formatAmount(p.amount)]);
      if (p.kind === 'expiry') expired.push([new Date(p.atMs).toISOString(), formatAmount(p.amount)]);
    }
  }
  return { issued, expired, state };
}

describe('subscription edits take effect at the next billing term', () => {
  const monthly = {
    id: 'pro',
    billing: 'monthly',
    versions: [
      { version: 1, grants: [grant('100')] },
      { version: 2, grants: [grant('500')] },
    ],
  };
  const subscription = { id: 'sub-1', customer: 'acme', plan: 'pro', plan_version: 1, start: '2026-01-01T00:00:00Z' };

  it('given an override edited mid-January, then January keeps its grant and February on grant the new quantity', () => {
    const catalog = parseCatalog(catalogJson([monthly], [subscription]));
    const edited = scheduleSubscriptionEdit(
      catalog.subscriptions[0]!,
      catalog.plans.get('pro')!,
      { overrides: { credits: { quantity: money('300') } } },
      utc('2026-01-15T12:00:00Z'),
    );
    expect(edited.changes.map((c) => new Date(c.effectiveFromMs).toISOString())).toEqual(['2026-02-01T00:00:00.000Z']);
    // Written back to the catalog document and read again, as the catalog API does.
    const reread = parseCatalog(catalogJson([monthly], [subscriptionJson(edited)]));
    expect(grantsIssued(reread, 'acme', '2026-01-01T00:00:00Z', '2026-03-15T00:00:00Z', 7 * dayMs).issued).toEqual([
      ['2026-01-01T00:00:00.000Z', '100'],
      ['2026-02-01T00:00:00.000Z', '300'],
      ['2026-03-01T00:00:00.000Z', '300'],
    ]);
  });

  it('given a new plan version, then running subscriptions stay on theirs and only an edited one moves, at its next term', () => {
    const catalog = parseCatalog(
      catalogJson(
        [monthly],
        [
          subscription,
          {
            ...subscription,
            id: 'sub-2',
            customer: 'globex',
            changes: [{ effective_from: '2026-03-01T00:00:00Z', plan_version: 2 }],
          },
        ],
      ),
    );
    expect(
      grantsIssued(catalog, 'acme', '2026-01-01T00:00:00Z', '2026-04-01T00:00:00Z', 10 * dayMs).issued.map(
        ([, q]) => q,
      ),
    ).toEqual(['100', '100', '100']);
    expect(
      grantsIssued(catalog, 'globex', '2026-01-01T00:00:00Z', '2026-04-01T00:00:00Z', 10 * dayMs).issued.map(
        ([, q]) => q,
      ),
    ).toEqual(['100', '100', '500']);
  });

  it('given a change that is not at a billing-term start, then the catalog refuses it naming the field', () => {
    const raw = catalogJson(
      [monthly],
      [{ ...subscription, changes: [{ effective_from: '2026-02-15T00:00:00Z', plan_version: 2 }] }],
    );
    expect(problemsOf(raw)).toEqual([['subscriptions[0].changes[0].effective_from', 'term_boundary']]);
  });

  it('given a change to a version the plan lacks, or overriding a grant the version lacks, then the catalog refuses it', () => {
    const raw = catalogJson(
      [monthly],
      [
        {
          ...subscription,
          changes: [
            { effective_from: '2026-02-01T00:00:00Z', plan_version: 3 },
            { effective_from: '2026-03-01T00:00:00Z', overrides: { other: { quantity: '1' } } },
          ],
        },
      ],
    );
    expect(problemsOf(raw)).toEqual([
      ['subscriptions[0].changes[0].plan_version', 'unknown'],
      ['subscriptions[0].changes[1].overrides.other', 'unknown'],
    ]);
  });

  it('given a second edit for the same term, then it replaces the first; an invalid version is refused naming plan_version', () => {
    const catalog = parseCatalog(catalogJson([monthly], [subscription]));
    const plan = catalog.plans.get('pro')!;
    const once = scheduleSubscriptionEdit(
      catalog.subscriptions[0]!,
      plan,
      { planVersion: 2 },
      utc('2026-01-10T00:00:00Z'),
    );
    const twice = scheduleSubscriptionEdit(
      once,
      plan,
      { overrides: { credits: { quantity: money('42') } } },
      utc('2026-01-20T00:00:00Z'),
    );
    expect(twice.changes).toHaveLength(1);
    // The second edit keeps the version the first one scheduled.
    expect(twice.changes[0]).toMatchObject({ effectiveFromMs: utc('2026-02-01T00:00:00Z'), planVersion: 2 });
    expect(formatAmount(twice.changes[0]!.overrides.credits!.quantity!)).toBe('42');
    try {
      scheduleSubscriptionEdit(catalog.subscriptions[0]!, plan, { planVersion: 7 }, utc('2026-01-10T00:00:00Z'));
      expect.unreachable('the edit should be refused');
    } catch (error) {
      expect((error as DrawdownError).code).toBe('request_invalid');
      expect((error as DrawdownError).problems.map((p) => p.field)).toEqual(['plan_version']);
    }
  });

  it('given an edit before the subscription starts, then it replaces the starting terms', () => {
    const catalog = parseCatalog(catalogJson([monthly], [subscription]));
    const edited: Subscription = scheduleSubscriptionEdit(
      catalog.subscriptions[0]!,
      catalog.plans.get('pro')!,
      { planVersion: 2 },
      utc('2025-12-20T00:00:00Z'),
    );
    expect(edited).toMatchObject({ planVersion: 2, changes: [] });
  });

  it('given a capped grant whose quantity changes at a term start, then the ending period is capped once, not once per terms', () => {
    const capped = {
      id: 'pro',
      billing: 'monthly',
      versions: [{ version: 1, grants: [grant('1000', 'monthly', { kind: 'capped', percent: '50', maximum: '250' })] }],
    };
    const catalog = parseCatalog(
      catalogJson(
        [capped],
        [
          {
            ...subscription,
            changes: [{ effective_from: '2026-02-01T00:00:00Z', overrides: { credits: { quantity: '2000' } } }],
          },
        ],
      ),
    );
    const { expired, state } = grantsIssued(catalog, 'acme', '2026-01-01T00:00:00Z', '2026-02-10T00:00:00Z', 5 * dayMs);
    // 1,000 unused → 250 carry, 750 expire; then February's 2,000.
    expect(expired).toEqual([['2026-02-01T00:00:00.000Z', '-750']]);
    expect(formatAmount([...state.blocks.values()].reduce((s, b) => s.plus(b.remaining), money(0)))).toBe('2250');
  });
});

describe('grant frequencies shorter than the billing term, across terms', () => {
  it('given daily grants on a monthly plan edited in January, then every January day grants the old quantity and every February day the new', () => {
    const plan = { id: 'daily', billing: 'monthly', versions: [{ version: 1, grants: [grant('10', 'daily')] }] };
    const catalog = parseCatalog(
      catalogJson([plan], [{ id: 's', customer: 'acme', plan: 'daily', start: '2026-01-01T00:00:00Z' }]),
    );
    const edited = scheduleSubscriptionEdit(
      catalog.subscriptions[0]!,
      catalog.plans.get('daily')!,
      { overrides: { credits: { quantity: money('20') } } },
      utc('2026-01-03T05:00:00Z'),
    );
    const reread = parseCatalog(catalogJson([plan], [subscriptionJson(edited)]));
    const { issued, expired } = grantsIssued(
      reread,
      'acme',
      '2026-01-01T00:00:00Z',
      '2026-03-01T00:00:00Z',
      3 * dayMs + 7 * 3_600_000,
    );
    const january = issued.filter(([at]) => at.startsWith('2026-01'));
    const february = issued.filter(([at]) => at.startsWith('2026-02'));
    expect([january.length, new Set(january.map(([, q]) => q))]).toEqual([31, new Set(['10'])]);
    expect([february.length, new Set(february.map(([, q]) => q))]).toEqual([28, new Set(['20'])]);
    // Rollover none: each day's unused grant expires at the end of its day (the last one, Feb 28's, on Mar 1, the
    // next window).
    expect(expired).toHaveLength(58);
  });

  it('given monthly grants on a yearly plan edited in March, then the edit waits for the next year: twelve old grants, then new ones', () => {
    const plan = {
      id: 'annual',
      billing: 'yearly',
      versions: [
        { version: 1, grants: [grant('100')] },
        { version: 2, grants: [grant('250')] },
      ],
    };
    const catalog = parseCatalog(
      catalogJson(
        [plan],
        [{ id: 's', customer: 'acme', plan: 'annual', plan_version: 1, start: '2026-01-31T00:00:00Z' }],
      ),
    );
    const edited = scheduleSubscriptionEdit(
      catalog.subscriptions[0]!,
      catalog.plans.get('annual')!,
      { planVersion: 2 },
      utc('2026-03-10T00:00:00Z'),
    );
    expect(new Date(edited.changes[0]!.effectiveFromMs).toISOString()).toBe('2027-01-31T00:00:00.000Z');
    const reread = parseCatalog(catalogJson([plan], [subscriptionJson(edited)]));
    const { issued } = grantsIssued(reread, 'acme', '2026-01-31T00:00:00Z', '2027-04-01T00:00:00Z', 20 * dayMs);
    // Month-end clamping: Feb 28, Mar 31, Apr 30, … from an anchor on the 31st.
    expect(issued.slice(0, 3).map(([at]) => at.slice(0, 10))).toEqual(['2026-01-31', '2026-02-28', '2026-03-31']);
    expect(issued.map(([, q]) => q)).toEqual([...Array(12).fill('100'), '250', '250', '250']);
  });

  it('given a yearly plan, then a change one month after the anchor is refused: it is mid-term', () => {
    const plan = { id: 'annual', billing: 'yearly', versions: [{ version: 1, grants: [grant('100')] }] };
    const raw = catalogJson(
      [plan],
      [
        {
          id: 's',
          customer: 'acme',
          plan: 'annual',
          start: '2026-01-31T00:00:00Z',
          changes: [{ effective_from: '2026-02-28T00:00:00Z' }],
        },
      ],
    );
    expect(problemsOf(raw)).toEqual([['subscriptions[0].changes[0].effective_from', 'term_boundary']]);
  });
});

describe('archived credit units', () => {
  const units = [
    { id: 'credits', name: 'Credits' },
    { id: 'legacy', name: 'Legacy credits', archived: true },
  ];
  const legacyGrant = { id: 'old', unit: 'legacy', quantity: '50', frequency: 'monthly' };
  const plan = {
    id: 'pro',
    billing: 'monthly',
    versions: [
      { version: 1, grants: [grant('100'), legacyGrant] },
      { version: 2, grants: [grant('100')] },
    ],
  };
  const onV1 = { id: 'sub-old', customer: 'acme', plan: 'pro', plan_version: 1, start: '2026-01-01T00:00:00Z' };

  it('given a subscription on an older version granting an archived unit, then it keeps receiving those grants', () => {
    const catalog = parseCatalog(catalogJson([plan], [onV1], units));
    const { grantsByAccount } = grantSchedules(catalog, utc('2026-03-01T00:00:00Z'), utc('2026-03-01T01:00:00Z'));
    expect(grantsByAccount.get('acme\u0000legacy')?.map((g) => formatAmount(g.quantity))).toEqual(['50']);
  });

  it('given a new plan version granting an archived unit, used by no subscription, then the catalog refuses it naming the grant unit', () => {
    const newer = { ...plan, versions: [...plan.versions, { version: 3, grants: [legacyGrant] }] };
    expect(problemsOf(catalogJson([newer], [onV1], units))).toEqual([
      ['plans[0].versions[2].grants[0].unit', 'archived'],
    ]);
  });

  it('given a new plan granting an archived unit, then it is refused too', () => {
    const fresh = { id: 'new', billing: 'monthly', versions: [{ version: 1, grants: [legacyGrant] }] };
    expect(problemsOf(catalogJson([plan, fresh], [onV1], units))).toEqual([
      ['plans[1].versions[0].grants[0].unit', 'archived'],
    ]);
  });

  it('given a package in an archived unit, then it is refused naming the package unit', () => {
    const raw = catalogJson([plan], [onV1], units);
    raw.packages = [{ id: 'legacy-10', price: { currency: 'USD', amount: '1' }, credits: '10', unit: 'legacy' }];
    expect(problemsOf(raw)).toEqual([['packages[0].unit', 'archived']]);
  });
});
