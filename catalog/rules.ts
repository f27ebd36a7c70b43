/**
 * The rules that keep data already recorded meaningful when the catalog
 * changes (catalog/README.md). parseCatalog decides whether a
 * catalog is valid on its own; these decide whether moving from the catalog
 * in force to a new one is allowed. Every refusal names a field of the new
 * document.
 */
import type { Catalog } from './model.js';
import type { FieldProblem } from '../shared/errors.js';
import { canonicalText, entityList, type CatalogDocument } from './document.js';

export interface TransitionContext {
  nowMs: number;
  /** End of the last completed settlement run (0 before the first): time before it is billed. */
  settledUntilMs: number;
}

export interface CatalogState {
  document: CatalogDocument;
  catalog: Catalog;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function indexBy(list: Record<string, unknown>[], key: string): Map<string, number> {
  return new Map(list.map((e, i) => [String(e[key]), i]));
}

/**
 * Fields the catalog file may carry that parseCatalog does not read:
 * `archived` on a meter (the gateway refuses new events for it; data and
 * rates stay). Problems here are definition problems, like parseCatalog's.
 */
export function extraDefinitionProblems(raw: CatalogDocument): FieldProblem[] {
  const problems: FieldProblem[] = [];
  entityList(raw, 'meters').forEach((m, i) => {
    if (m !== null && typeof m === 'object' && m.archived !== undefined && typeof m.archived !== 'boolean') {
      problems.push({
        field: `meters[${i}].archived`,
        code: 'type',
        message: `meters[${i}].archived must be a boolean`,
      });
    }
  });
  return problems;
}

/** Meter keys marked `archived: true`: kept for data and rating, closed to new events. */
export function archivedMeters(document: CatalogDocument): Set<string> {
  return new Set(
    entityList(document, 'meters')
      .filter((m) => m.archived === true)
      .map((m) => String(m.key)),
  );
}

/** Every way `next` (as submitted: paths index into it) would change data already in use under `previous`. */
export function transitionProblems(
  previous: CatalogState,
  next: CatalogState,
  context: TransitionContext,
): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const refuse = (field: string, code: string, message: string) => problems.push({ field, code, message });
  const prev = previous.catalog;
  const cat = next.catalog;

  // Credit units: balances and ledger entries name them forever.
  for (const id of prev.creditUnits.keys()) {
    if (!cat.creditUnits.has(id))
      refuse(
        'credit_units',
        'removed',
        `credit unit ${id} cannot be removed (ledger entries use it); set "archived": true instead`,
      );
  }

  // Meters: stored usage was aggregated by these rules.
  const meterIndex = indexBy(entityList(next.document, 'meters'), 'key');
  for (const [key, meter] of prev.meters) {
    const now = cat.meters.get(key);
    if (now === undefined) {
      refuse(
        'meters',
        'removed',
        `meter ${key} cannot be removed (usage is stored under it); set "archived": true instead`,
      );
      continue;
    }
    const at = `meters[${meterIndex.get(key)}]`;
    if (now.aggregation !== meter.aggregation)
      refuse(
        `${at}.aggregation`,
        'immutable',
        `meter ${key} was saved with aggregation ${meter.aggregation}; it cannot change (define a new meter)`,
      );
    if (canonicalText(now.dimensions) !== canonicalText(meter.dimensions)) {
      refuse(
        `${at}.dimensions`,
        'immutable',
        `meter ${key} was saved with dimensions [${meter.dimensions.join(', ')}]; they cannot change (define a new meter)`,
      );
    }
  }

  // Rate card: a version in force (or covering settled time) has priced usage.
  const frozenUntilMs = Math.max(context.nowMs, context.settledUntilMs);
  const prevVersions = new Map(entityList(previous.document, 'rate_card.versions').map((v) => [String(v.version), v]));
  const nextVersions = entityList(next.document, 'rate_card.versions');
  const nextIndex = indexBy(nextVersions, 'version');
  for (const version of prev.rateCard) {
    if (version.effectiveFromMs > frozenUntilMs) continue;
    const i = nextIndex.get(version.version);
    if (i === undefined) {
      refuse(
        'rate_card.versions',
        'removed',
        `rate card version ${version.version} is in force since ${iso(version.effectiveFromMs)} and cannot be removed; add a new version instead`,
      );
    } else if (canonicalText(nextVersions[i]) !== canonicalText(prevVersions.get(version.version))) {
      refuse(
        `rate_card.versions[${i}]`,
        'immutable',
        `rate card version ${version.version} is in force since ${iso(version.effectiveFromMs)} and cannot change; add a new version with a later effective_from instead`,
      );
    }
  }
  const frozen = new Set(prev.rateCard.filter((v) => v.effectiveFromMs <= frozenUntilMs).map((v) => v.version));
  nextVersions.forEach((v, i) => {
    const before = prevVersions.get(String(v.version));
    // Unchanged, or already refused above as a version in force.
    if (before !== undefined && (canonicalText(before) === canonicalText(v) || frozen.has(String(v.version)))) return;
    const mine = cat.rateCard.find((x) => x.version === String(v.version));
    if (mine !== undefined && mine.effectiveFromMs < context.settledUntilMs) {
      refuse(
        `rate_card.versions[${i}].effective_from`,
        'settled',
        `a new or changed rate card version must take effect at or after ${iso(context.settledUntilMs)}, the end of the last settlement run`,
      );
    }
  });

  // Plans: subscriptions pin a version; its grants are what they were sold.
  const prevPlans = new Map(entityList(previous.document, 'plans').map((p) => [String(p.id), p]));
  const nextPlans = entityList(next.document, 'plans');
  const planIndex = indexBy(nextPlans, 'id');
  for (const [id, plan] of prev.plans) {
    const i = planIndex.get(id);
    if (i === undefined) {
      refuse('plans', 'removed', `plan ${id} cannot be removed (subscriptions and grants refer to it)`);
      continue;
    }
    const now = cat.plans.get(id);
    if (now !== undefined && now.billing !== plan.billing)
      refuse(`plans[${i}].billing`, 'immutable', `plan ${id} was saved with billing ${plan.billing}; it cannot change`);
    const before = entityList(prevPlans.get(id) ?? {}, 'versions');
    const after = entityList(nextPlans[i]!, 'versions');
    if (after.length < before.length)
      refuse(
        `plans[${i}].versions`,
        'removed',
        `plan ${id} has ${before.length} saved versions; versions cannot be removed`,
      );
    before.forEach((v, j) => {
      if (j < after.length && canonicalText(after[j]) !== canonicalText(v)) {
        refuse(
          `plans[${i}].versions[${j}]`,
          'immutable',
          `plan ${id} version ${j + 1} is saved and cannot change; add version ${after.length + 1} instead`,
        );
      }
    });
  }
  // No new grants on an archived unit: new plan versions may not grant it.
  nextPlans.forEach((p, i) => {
    const saved = entityList(prevPlans.get(String(p.id)) ?? {}, 'versions').length;
    entityList(p, 'versions').forEach((v, j) => {
      if (j < saved) return;
      entityList(v, 'grants').forEach((g, k) => {
        if (cat.creditUnits.get(String(g.unit))?.archived)
          refuse(
            `plans[${i}].versions[${j}].grants[${k}].unit`,
            'archived',
            `credit unit ${String(g.unit)} is archived: no new grants on it`,
          );
      });
    });
  });

  addOnAndChargeProblems(previous, next, refuse);
  nameHistoryProblems(previous, next, refuse);
  settledGrantProblems(previous, next, context, refuse);

  // Subscriptions carry grant history; they end, they are not deleted.
  const subscriptionIds = new Set(cat.subscriptions.map((s) => s.id));
  for (const s of prev.subscriptions) {
    if (!subscriptionIds.has(s.id))
      refuse(
        'subscriptions',
        'removed',
        `subscription ${s.id} cannot be removed (its grants are in the ledger); set its "end" instead`,
      );
  }
  return problems;
}

type Refuse = (field: string, code: string, message: string) => void;

/**
 * Grants are posted by the run whose window holds their instant, so one in
 * settled time would never be posted: the customer would silently not get
 * the credits. A new subscription must start, and a newly applied one-time
 * charge take effect, at or after the end of the last settlement run (a
 * charge without `at` takes effect at its subscription's start).
 */
function settledGrantProblems(
  previous: CatalogState,
  next: CatalogState,
  context: TransitionContext,
  refuse: Refuse,
): void {
  if (context.settledUntilMs <= 0) return;
  const before = new Map(previous.catalog.subscriptions.map((s) => [s.id, s]));
  const parsed = new Map(next.catalog.subscriptions.map((s) => [s.id, s]));
  const settled = iso(context.settledUntilMs);
  entityList(next.document, 'subscriptions').forEach((raw, i) => {
    const subscription = parsed.get(String(raw.id));
    if (subscription === undefined) return;
    const old = before.get(subscription.id);
    if (old === undefined && subscription.startMs < context.settledUntilMs)
      refuse(
        `subscriptions[${i}].start`,
        'settled',
        `a new subscription must start at or after ${settled}, the end of the last settlement run: grants before it would never be posted`,
      );
    const applied = new Set(old?.charges.map((c) => c.id) ?? []);
    const rawCharges = entityList(raw, 'charges');
    subscription.charges.forEach((charge) => {
      if (applied.has(charge.id) || charge.atMs >= context.settledUntilMs) return;
      const j = rawCharges.findIndex((c) => String(c.id ?? c.charge) === charge.id);
      refuse(
        `subscriptions[${i}].charges[${j}].at`,
        'settled',
        `charge ${charge.id} would take effect at ${iso(charge.atMs)}, in settled time: give "at" at or after ${settled}, the end of the last settlement run`,
      );
    });
  });
}

/** Add-ons are kept like plans (versions saved, never removed); a charge applied to a subscription keeps its grant. */
function addOnAndChargeProblems(previous: CatalogState, next: CatalogState, refuse: Refuse): void {
  const prevAddOns = new Map(entityList(previous.document, 'add_ons').map((a) => [String(a.id), a]));
  const nextAddOns = entityList(next.document, 'add_ons');
  const addOnIndex = indexBy(nextAddOns, 'id');
  for (const [id, addOn] of previous.catalog.addOns) {
    const i = addOnIndex.get(id);
    if (i === undefined) {
      refuse('add_ons', 'removed', `add-on ${id} cannot be removed (subscriptions and grants refer to it)`);
      continue;
    }
    const now = next.catalog.addOns.get(id);
    for (const field of ['billing', 'kind'] as const)
      if (now !== undefined && now[field] !== addOn[field])
        refuse(
          `add_ons[${i}].${field}`,
          'immutable',
          `add-on ${id} was saved with ${field} ${addOn[field]}; it cannot change`,
        );
    const before = entityList(prevAddOns.get(id) ?? {}, 'versions');
    const after = entityList(nextAddOns[i]!, 'versions');
    if (after.length < before.length)
      refuse(
        `add_ons[${i}].versions`,
        'removed',
        `add-on ${id} has ${before.length} saved versions; versions cannot be removed`,
      );
    before.forEach((v, j) => {
      if (j < after.length && canonicalText(after[j]) !== canonicalText(v))
        refuse(
          `add_ons[${i}].versions[${j}]`,
          'immutable',
          `add-on ${id} version ${j + 1} is saved and cannot change; add version ${after.length + 1} instead`,
        );
    });
  }
  // No new grants on an archived unit: new add-on versions and new or changed charges may not grant it.
  nextAddOns.forEach((a, i) => {
    const saved = entityList(prevAddOns.get(String(a.id)) ?? {}, 'versions').length;
    entityList(a, 'versions').forEach((v, j) => {
      const unit = (v.grant as Record<string, unknown> | undefined)?.unit;
      if (j >= saved && next.catalog.creditUnits.get(String(unit))?.archived)
        refuse(
          `add_ons[${i}].versions[${j}].grant.unit`,
          'archived',
          `credit unit ${String(unit)} is archived: no new grants on it`,
        );
    });
  });
  const applied = new Set(previous.catalog.subscriptions.flatMap((s) => s.charges.map((c) => c.charge)));
  const prevCharges = new Map(entityList(previous.document, 'charges').map((c) => [String(c.id), c]));
  const nextCharges = entityList(next.document, 'charges');
  const chargeIndex = indexBy(nextCharges, 'id');
  for (const id of previous.catalog.charges.keys()) {
    const i = chargeIndex.get(id);
    if (i === undefined) {
      refuse('charges', 'removed', `charge ${id} cannot be removed (subscriptions and grants refer to it)`);
      continue;
    }
    if (applied.has(id) && canonicalText(nextCharges[i]!.grant) !== canonicalText(prevCharges.get(id)?.grant))
      refuse(
        `charges[${i}].grant`,
        'immutable',
        `charge ${id} is applied to subscriptions; its grant cannot change (define a new charge)`,
      );
  }
  nextCharges.forEach((c, i) => {
    const before = prevCharges.get(String(c.id));
    const unit = (c.grant as Record<string, unknown> | undefined)?.unit;
    if (before !== undefined && canonicalText(before.grant) === canonicalText(c.grant)) return;
    if (next.catalog.creditUnits.get(String(unit))?.archived)
      refuse(`charges[${i}].grant.unit`, 'archived', `credit unit ${String(unit)} is archived: no new grants on it`);
  });
}

/** A unit's name history only grows (catalog/names.ts): subscriptions show the names it records. */
function nameHistoryProblems(previous: CatalogState, next: CatalogState, refuse: Refuse): void {
  const nextUnits = entityList(next.document, 'credit_units');
  const unitIndex = indexBy(nextUnits, 'id');
  for (const u of entityList(previous.document, 'credit_units')) {
    const i = unitIndex.get(String(u.id));
    if (i === undefined) continue;
    const before = entityList(u, 'previous_names');
    const after = entityList(nextUnits[i]!, 'previous_names');
    if (before.some((entry, j) => canonicalText(entry) !== canonicalText(after[j])))
      refuse(
        `credit_units[${i}].previous_names`,
        'immutable',
        `credit unit ${String(u.id)}'s name history cannot be changed or shortened; existing subscriptions show those names`,
      );
  }
}
