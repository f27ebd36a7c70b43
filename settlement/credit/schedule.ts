/**
 * Which grants (and overage) the catalog's subscriptions bring to each
 * (customer, credit unit) in a settlement window — pure.
 *
 * A subscription's life is cut at its scheduled changes, which all fall on
 * billing-term starts; each piece grants by the terms (plan version,
 * overrides and add-ons) in force during it. Grant periods never cross a
 * term start (a grant is never longer than the billing term and counts from
 * the same anchor), so every grant period is granted by the terms of the
 * term that contains it, and an edit never takes effect mid-term.
 *
 * An add-on's grant is a plan grant with another source: the same schedule,
 * keyed by the add-on, its quantity times the copies held. A one-time
 * charge is a schedule with `once`: one block at its own instant.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../../catalog/model.js';
import { termSegments, termsAt, type Subscription } from '../../catalog/plans.js';
import { addDuration } from '../../catalog/periods.js';
import type { DrawDownPolicy } from './blocks.js';
import type { GrantSchedule } from './timeline.js';

/** Keys are `${customer}\u0000${unit}`. */
export interface AccountSchedules {
  grantsByAccount: Map<string, GrantSchedule[]>;
  overageByAccount: Map<string, DrawDownPolicy['overage']>;
}

type OveragePrice = { pricePerCredit: Decimal; currency: string };

/**
 * The overage prices a subscription's terms at `atMs` set, by unit: the plan
 * version's, and each metered add-on's (SPEC §4: a metered add-on is the
 * overage price). An add-on attached to the subscription is the more
 * specific, so it wins over the plan's price for the same unit.
 */
export function overagePricesAt(catalog: Catalog, subscription: Subscription, atMs: number): Map<string, OveragePrice> {
  const out = new Map<string, OveragePrice>();
  const terms = termsAt(subscription, Math.max(atMs, subscription.startMs));
  const overage = catalog.plans.get(subscription.plan)?.versions[terms.planVersion - 1]?.overage;
  if (overage) out.set(overage.unit, { pricePerCredit: overage.pricePerCredit, currency: overage.currency });
  for (const held of terms.addOns) {
    const addOn = catalog.addOns.get(held.addOn);
    if (addOn?.overage)
      out.set(addOn.overage.unit, { pricePerCredit: addOn.overage.pricePerCredit, currency: addOn.overage.currency });
  }
  return out;
}

function push(map: Map<string, GrantSchedule[]>, key: string, grant: GrantSchedule): void {
  const list = map.get(key);
  if (list) list.push(grant);
  else map.set(key, [grant]);
}

export function grantSchedules(catalog: Catalog, fromMs: number, untilMs: number): AccountSchedules {
  const grantsByAccount = new Map<string, GrantSchedule[]>();
  const overageByAccount = new Map<string, DrawDownPolicy['overage']>();
  for (const subscription of catalog.subscriptions) {
    if (subscription.startMs >= untilMs || (subscription.endMs !== undefined && subscription.endMs < fromMs)) continue;
    const plan = catalog.plans.get(subscription.plan);
    if (plan === undefined) continue;
    // Each piece of the subscription's life grants by the terms in force then;
    // pieces start at billing-term starts, so every grant period lies in one.
    // A piece ending at the window start is kept: its capped rollover happens then.
    for (const segment of termSegments(subscription)) {
      if (segment.fromMs >= untilMs || (segment.untilMs !== undefined && segment.untilMs < fromMs)) continue;
      const version = plan.versions[segment.terms.planVersion - 1];
      for (const grant of version?.grants ?? []) {
        const override = segment.terms.overrides[grant.id] ?? {};
        const frequency = override.frequency ?? grant.frequency;
        push(grantsByAccount, `${subscription.customer}\u0000${grant.unit}`, {
          // Blocks are named by grant, version and period index; a frequency
          // override counts other periods, so it names its blocks apart.
          key: `${subscription.id}:${grant.id}:v${segment.terms.planVersion}${frequency === grant.frequency ? '' : `:${frequency}`}`,
          quantity: override.quantity ?? grant.quantity,
          frequency,
          rollover: override.rollover ?? grant.rollover,
          anchorMs: subscription.anchorMs,
          activeFromMs: segment.fromMs,
          activeUntilMs: segment.untilMs,
          source: 'grant',
          origin: plan.id,
        });
      }
      for (const held of segment.terms.addOns) {
        const addOn = catalog.addOns.get(held.addOn);
        const grant = addOn?.versions[held.version - 1]?.grant;
        if (addOn === undefined || grant === undefined) continue;
        const frequency = held.overrides.frequency ?? grant.frequency;
        push(grantsByAccount, `${subscription.customer}\u0000${grant.unit}`, {
          // '/' is in no catalog id, so an add-on's blocks never share a name with a plan grant's. The number of
          // copies is left out: changing it at a term start continues the same grant, as a quantity override does.
          key: `${subscription.id}:add_on/${addOn.id}:v${held.version}${frequency === grant.frequency ? '' : `:${frequency}`}`,
          quantity: (held.overrides.quantity ?? grant.quantity).times(held.quantity),
          frequency,
          rollover: held.overrides.rollover ?? grant.rollover,
          anchorMs: subscription.anchorMs,
          activeFromMs: segment.fromMs,
          activeUntilMs: segment.untilMs,
          source: 'add_on',
          origin: addOn.id,
        });
      }
    }
    for (const applied of subscription.charges) {
      const grant = catalog.charges.get(applied.charge)?.grant;
      if (grant === undefined || applied.atMs >= untilMs) continue;
      push(grantsByAccount, `${subscription.customer}\u0000${grant.unit}`, {
        key: `${subscription.id}:charge/${applied.id}`,
        quantity: grant.quantity,
        // The term the charge falls in is its block's "period": a rollover rule applies at that term's end.
        frequency: plan.billing,
        rollover: grant.rollover ?? { kind: grant.expiresAfter === undefined ? 'unlimited' : 'none' },
        anchorMs: subscription.anchorMs,
        activeFromMs: applied.atMs,
        activeUntilMs: undefined,
        source: 'charge',
        origin: applied.charge,
        once: {
          atMs: applied.atMs,
          expiresAtMs: grant.expiresAfter === undefined ? undefined : addDuration(applied.atMs, grant.expiresAfter),
        },
      });
    }
    // Overage follows the terms in force at the window start (windows are short).
    if (subscription.endMs === undefined || subscription.endMs > fromMs)
      for (const [unit, price] of overagePricesAt(catalog, subscription, fromMs))
        overageByAccount.set(`${subscription.customer}\u0000${unit}`, price);
  }

  return { grantsByAccount, overageByAccount };
}
