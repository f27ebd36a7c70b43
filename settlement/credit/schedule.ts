/**
 * Which grants (and overage) the catalog's subscriptions bring to each
 * (customer, credit unit) in a settlement window — pure.
 *
 * A subscription's life is cut at its scheduled changes, which all fall on
 * billing-term starts; each piece grants by the terms (plan version and
 * overrides) in force during it. Grant periods never cross a term start
 * (a grant is never longer than the billing term and counts from the same
 * anchor), so every grant period is granted by the terms of the term that
 * contains it, and an edit never takes effect mid-term.
 */
import type { Catalog } from '../../catalog/model.js';
import { termSegments, termsAt } from '../../catalog/plans.js';
import type { DrawDownPolicy } from './blocks.js';
import type { GrantSchedule } from './timeline.js';

/** Keys are `${customer}\u0000${unit}`. */
export interface AccountSchedules {
  grantsByAccount: Map<string, GrantSchedule[]>;
  overageByAccount: Map<string, DrawDownPolicy['overage']>;
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
      if (version === undefined) continue;
      for (const grant of version.grants) {
        const override = segment.terms.overrides[grant.id] ?? {};
        const frequency = override.frequency ?? grant.frequency;
        const key = `${subscription.customer}\u0000${grant.unit}`;
        const list = grantsByAccount.get(key) ?? [];
        list.push({
          // Blocks are named by grant, version and period index; a frequency
          // override counts other periods, so it names its blocks apart.
          key: `${subscription.id}:${grant.id}:v${segment.terms.planVersion}${frequency === grant.frequency ? '' : `:${frequency}`}`,
          quantity: override.quantity ?? grant.quantity,
          frequency,
          rollover: override.rollover ?? grant.rollover,
          anchorMs: subscription.anchorMs,
          activeFromMs: segment.fromMs,
          activeUntilMs: segment.untilMs,
        });
        grantsByAccount.set(key, list);
      }
    }
    // Overage follows the terms in force at the window start (windows are short).
    const terms = termsAt(subscription, Math.max(fromMs, subscription.startMs));
    const overage = plan.versions[terms.planVersion - 1]?.overage;
    if (overage && (subscription.endMs === undefined || subscription.endMs > fromMs)) {
      overageByAccount.set(`${subscription.customer}\u0000${overage.unit}`, {
        pricePerCredit: overage.pricePerCredit,
        currency: overage.currency,
      });
    }
  }

  return { grantsByAccount, overageByAccount };
}
