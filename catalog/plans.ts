/**
 * Plans and subscriptions as the catalog declares them (SPEC §4), validated
 * once into typed values. The rules that act on them live in
 * settlement/credit; these are only the shapes and their validation.
 */
import type { Decimal } from 'decimal.js';
import { frequencyRank, periodIndexAt, periodStart, type Duration, type Frequency } from './periods.js';
import { DrawdownError } from '../shared/errors.js';
import { money } from '../shared/money.js';
import {
  Problems,
  hostileKeys,
  isPlainObject,
  readDecimalText,
  readInstant,
  readString,
  refuseUnknownFields,
} from '../shared/validate.js';
import { catalogFields } from './fields.js';
import type { AddOn, Charge } from './add-ons.js';
import { parseFrequency, parseRollover, readGrantTerms, type BillingFrequency, type Rollover } from './grant-rules.js';

export { parseFrequency, parseRollover, type BillingFrequency, type Rollover };

export type { Duration, Frequency };

export interface GrantDefinition {
  id: string;
  unit: string;
  quantity: Decimal;
  frequency: Frequency;
  rollover: Rollover;
}

export interface PlanVersion {
  version: number;
  grants: GrantDefinition[];
  overage: { unit: string; pricePerCredit: Decimal; currency: string } | undefined;
}

export interface Plan {
  id: string;
  name: string;
  billing: BillingFrequency;
  /** Ascending by version; a subscription pins one. */
  versions: PlanVersion[];
}

/** One grant's per-subscription overrides. */
export type GrantOverride = Partial<Pick<GrantDefinition, 'quantity' | 'frequency' | 'rollover'>>;

/** Per-grant overrides, by grant id. */
export type Overrides = Record<string, GrantOverride>;

/** A recurring or metered add-on on a subscription: `quantity` copies of its pinned version. */
export interface SubscriptionAddOn {
  addOn: string;
  /** Whole copies: 2 × "+5,000 / month" grants 10,000 a month. */
  quantity: number;
  version: number;
  /** Overrides of the add-on's grant, as a plan grant's; the quantity override is per copy. */
  overrides: GrantOverride;
}

/** A one-time charge applied to a subscription at `atMs`; `id` names this application within the subscription. */
export interface SubscriptionCharge {
  id: string;
  charge: string;
  atMs: number;
}

/** What a subscription grants during a billing term: a plan version, its overrides and the add-ons. */
export interface SubscriptionTerms {
  planVersion: number;
  overrides: Overrides;
  addOns: SubscriptionAddOn[];
}

/** Terms that take over at the start of a billing term (edits never apply mid-term). */
export interface SubscriptionChange extends SubscriptionTerms {
  effectiveFromMs: number;
}

export interface Subscription extends SubscriptionTerms {
  id: string;
  customer: string;
  plan: string;
  startMs: number;
  /** Grant and billing periods count from here; defaults to the start. */
  anchorMs: number;
  endMs: number | undefined;
  /** Scheduled edits, ascending by effectiveFromMs, each at a billing-term start. */
  changes: SubscriptionChange[];
  /** One-time charges, each granted once at its own instant (not at a term start). */
  charges: SubscriptionCharge[];
}

/** What a subscription may name besides its plan. */
export interface SubscriptionExtras {
  addOns: ReadonlyMap<string, AddOn>;
  charges: ReadonlyMap<string, Charge>;
}

const noExtras: SubscriptionExtras = { addOns: new Map(), charges: new Map() };

/** Bounds the catalog document and the work of settling one subscription. */
const subscriptionAddOnsMax = 50;
const subscriptionChargesMax = 1000;
const addOnQuantityMax = 10_000;

const idPattern = /^[A-Za-z0-9._:@-]{1,128}$/;

/** Grants in archived units, per plan, as parsePlan found them: judged once the subscriptions are known. */
const archivedGrants = new WeakMap<Plan, { version: number; field: string; unit: string }[]>();

/**
 * An archived unit takes no new grants (SPEC §4), but subscriptions already
 * on a plan version granting it keep receiving them. Within one catalog
 * document "already" means: some subscription is on that version (its
 * `plan_version` or a scheduled change). A version granting an archived unit
 * that no subscription uses is a new grant, and is refused naming the grant's
 * unit. (A version keeps being accepted while any subscription still uses
 * it; a new subscription on it is indistinguishable here from an old one.)
 */
export function refuseNewGrantsOnArchivedUnits(
  problems: Problems,
  plans: ReadonlyMap<string, Plan>,
  subscriptions: readonly Subscription[],
): void {
  const used = new Set<string>();
  for (const s of subscriptions) {
    used.add(`${s.plan}\u0000${s.planVersion}`);
    for (const change of s.changes) used.add(`${s.plan}\u0000${change.planVersion}`);
  }
  for (const plan of plans.values()) {
    for (const grant of archivedGrants.get(plan) ?? []) {
      if (used.has(`${plan.id}\u0000${grant.version}`)) continue;
      problems.add(
        grant.field,
        'archived',
        `credit unit ${grant.unit} is archived: plan ${plan.id} version ${grant.version} is used by no subscription, so it would configure a new grant`,
      );
    }
  }
}

export function parsePlan(
  problems: Problems,
  raw: unknown,
  at: string,
  units: ReadonlyMap<string, { archived: boolean }>,
): Plan | undefined {
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object`);
    return undefined;
  }
  refuseUnknownFields(problems, raw, at, catalogFields.plan);
  const id = readString(problems, raw.id, `${at}.id`, { pattern: idPattern });
  const name = readString(problems, raw.name ?? raw.id, `${at}.name`, { max: 128 });
  const billing = raw.billing;
  if (billing !== 'monthly' && billing !== 'yearly')
    problems.add(`${at}.billing`, 'enum', `${at}.billing must be monthly or yearly`);
  const versions: PlanVersion[] = [];
  const rawVersions = Array.isArray(raw.versions) ? raw.versions : [];
  if (rawVersions.length === 0)
    problems.add(`${at}.versions`, 'required', `${at}.versions must list at least one version`);
  const grantUnits = new Map<string, string>();
  const archived: { version: number; field: string; unit: string }[] = [];
  rawVersions.forEach((v, i) => {
    const vat = `${at}.versions[${i}]`;
    if (!isPlainObject(v)) return problems.add(vat, 'type', `${vat} must be an object`);
    refuseUnknownFields(problems, v, vat, catalogFields.planVersion);
    if (v.version !== i + 1)
      problems.add(
        `${vat}.version`,
        'sequence',
        `${vat}.version must be ${i + 1}: versions are numbered 1, 2, … and never removed`,
      );
    const grants: GrantDefinition[] = [];
    (Array.isArray(v.grants) ? v.grants : []).forEach((g, j) => {
      const gat = `${vat}.grants[${j}]`;
      if (!isPlainObject(g)) return problems.add(gat, 'type', `${gat} must be an object`);
      refuseUnknownFields(problems, g, gat, catalogFields.grant);
      const gid = readString(problems, g.id, `${gat}.id`, { pattern: idPattern });
      const { unit, quantity, frequency, rollover } = readGrantTerms(
        problems,
        g,
        gat,
        units,
        billing,
        `the plan's ${String(billing)} billing period`,
      );
      if (unit !== undefined && units.get(unit)?.archived)
        archived.push({ version: i + 1, field: `${gat}.unit`, unit });
      // A grant's unit is fixed once saved: later versions may change anything else.
      if (gid !== undefined && unit !== undefined) {
        const earlier = grantUnits.get(gid);
        if (earlier !== undefined && earlier !== unit)
          problems.add(
            `${gat}.unit`,
            'immutable',
            `grant ${gid} was saved with unit ${earlier}; its unit cannot change`,
          );
        grantUnits.set(gid, unit);
      }
      if (gid && unit && quantity && frequency && rollover)
        grants.push({ id: gid, unit, quantity: money(quantity), frequency, rollover });
    });
    let overage: PlanVersion['overage'];
    if (v.overage !== undefined) {
      const o = isPlainObject(v.overage) ? v.overage : {};
      refuseUnknownFields(problems, o, `${vat}.overage`, catalogFields.overage);
      const unit = readString(problems, o.unit, `${vat}.overage.unit`, { max: 64 });
      const price = isPlainObject(o.price_per_credit) ? o.price_per_credit : {};
      refuseUnknownFields(problems, price, `${vat}.overage.price_per_credit`, catalogFields.money);
      const currency = readString(problems, price.currency, `${vat}.overage.price_per_credit.currency`, {
        pattern: /^[A-Z]{3}$/,
      });
      const amount = readDecimalText(problems, price.amount, `${vat}.overage.price_per_credit.amount`);
      if (unit !== undefined && !units.has(unit))
        problems.add(`${vat}.overage.unit`, 'unknown', `credit unit ${unit} is not defined`);
      if (unit && currency && amount) overage = { unit, currency, pricePerCredit: money(amount) };
    }
    versions.push({ version: i + 1, grants, overage });
  });
  if (!id || !name || (billing !== 'monthly' && billing !== 'yearly')) return undefined;
  const plan: Plan = { id, name, billing, versions };
  archivedGrants.set(plan, archived);
  return plan;
}

export function parseSubscription(
  problems: Problems,
  raw: unknown,
  at: string,
  plans: ReadonlyMap<string, Plan>,
  extras: SubscriptionExtras = noExtras,
): Subscription | undefined {
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object`);
    return undefined;
  }
  refuseUnknownFields(problems, raw, at, catalogFields.subscription);
  const id = readString(problems, raw.id, `${at}.id`, { pattern: idPattern });
  const customer = readString(problems, raw.customer, `${at}.customer`, { pattern: idPattern });
  const planId = readString(problems, raw.plan, `${at}.plan`, { pattern: idPattern });
  const plan = planId === undefined ? undefined : plans.get(planId);
  if (planId !== undefined && plan === undefined)
    problems.add(`${at}.plan`, 'unknown', `plan ${planId} is not defined`);
  // A subscription keeps the version it started on unless it names another.
  const planVersion = raw.plan_version ?? plan?.versions.length;
  if (
    plan &&
    (!Number.isInteger(planVersion) || (planVersion as number) < 1 || (planVersion as number) > plan.versions.length)
  ) {
    problems.add(`${at}.plan_version`, 'unknown', `plan ${plan.id} has versions 1–${plan.versions.length}`);
  }
  const startMs = readInstant(problems, raw.start, `${at}.start`);
  const anchorMs =
    raw.billing_anchor === undefined ? startMs : readInstant(problems, raw.billing_anchor, `${at}.billing_anchor`);
  const endMs = raw.end === undefined ? undefined : readInstant(problems, raw.end, `${at}.end`);
  const overrides = parseOverrides(problems, raw.overrides, `${at}.overrides`, plan, planVersion as number);
  const addOns = parseSubscriptionAddOns(problems, raw.add_ons, `${at}.add_ons`, plan, extras.addOns);
  const changes: SubscriptionChange[] = [];
  if (raw.changes !== undefined && !Array.isArray(raw.changes))
    problems.add(`${at}.changes`, 'type', `${at}.changes must be an array`);
  const rawChanges = Array.isArray(raw.changes) ? raw.changes : [];
  if (rawChanges.length > subscriptionChangesMax)
    problems.add(`${at}.changes`, 'too_many', `${at}.changes may list at most ${subscriptionChangesMax} changes`);
  let previous: SubscriptionTerms = { planVersion: planVersion as number, overrides, addOns };
  rawChanges.slice(0, subscriptionChangesMax).forEach((c, i) => {
    const cat = `${at}.changes[${i}]`;
    if (!isPlainObject(c)) return problems.add(cat, 'type', `${cat} must be an object`);
    refuseUnknownFields(problems, c, cat, catalogFields.subscriptionChange);
    const effectiveFromMs = readInstant(problems, c.effective_from, `${cat}.effective_from`);
    if (effectiveFromMs !== undefined && plan && anchorMs !== undefined && startMs !== undefined) {
      const problem = termStartProblem(
        plan,
        anchorMs,
        startMs,
        endMs,
        effectiveFromMs,
        changes[changes.length - 1]?.effectiveFromMs,
      );
      if (problem) problems.add(`${cat}.effective_from`, 'term_boundary', `${cat}.effective_from ${problem}`);
    }
    const version = c.plan_version ?? previous.planVersion;
    if (plan && (!Number.isInteger(version) || (version as number) < 1 || (version as number) > plan.versions.length)) {
      problems.add(`${cat}.plan_version`, 'unknown', `plan ${plan.id} has versions 1–${plan.versions.length}`);
      return;
    }
    // Overrides carry over while the version stays; a new version starts from its own grants.
    const changeOverrides =
      c.overrides !== undefined
        ? parseOverrides(problems, c.overrides, `${cat}.overrides`, plan, version as number)
        : version === previous.planVersion
          ? previous.overrides
          : {};
    // Add-ons carry over until a change lists them again (an empty list removes them all).
    const changeAddOns =
      c.add_ons !== undefined
        ? parseSubscriptionAddOns(problems, c.add_ons, `${cat}.add_ons`, plan, extras.addOns)
        : previous.addOns;
    if (effectiveFromMs === undefined) return;
    previous = { planVersion: version as number, overrides: changeOverrides, addOns: changeAddOns };
    changes.push({ effectiveFromMs, ...previous });
  });
  const charges = parseSubscriptionCharges(problems, raw.charges, `${at}.charges`, extras.charges, startMs, endMs);
  if (!id || !customer || !plan || startMs === undefined || anchorMs === undefined) return undefined;
  return {
    id,
    customer,
    plan: plan.id,
    planVersion: planVersion as number,
    startMs,
    anchorMs,
    endMs,
    overrides,
    addOns,
    changes,
    charges,
  };
}

function parseSubscriptionAddOns(
  problems: Problems,
  raw: unknown,
  at: string,
  plan: Plan | undefined,
  addOns: ReadonlyMap<string, AddOn>,
): SubscriptionAddOn[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    problems.add(at, 'type', `${at} must be an array`);
    return [];
  }
  if (raw.length > subscriptionAddOnsMax)
    problems.add(at, 'too_many', `${at} may list at most ${subscriptionAddOnsMax} add-ons`);
  const out: SubscriptionAddOn[] = [];
  raw.slice(0, subscriptionAddOnsMax).forEach((a, i) => {
    const aat = `${at}[${i}]`;
    if (!isPlainObject(a)) return problems.add(aat, 'type', `${aat} must be an object`);
    refuseUnknownFields(problems, a, aat, catalogFields.subscriptionAddOn);
    const id = readString(problems, a.add_on, `${aat}.add_on`, { pattern: idPattern });
    const addOn = id === undefined ? undefined : addOns.get(id);
    if (id !== undefined && addOn === undefined)
      problems.add(`${aat}.add_on`, 'unknown', `add-on ${id} is not defined`);
    // One entry per add-on: two copies are `quantity: 2`, so its blocks have one name.
    if (id !== undefined && out.some((x) => x.addOn === id))
      problems.add(`${aat}.add_on`, 'duplicate', `add-on ${id} is listed twice; set its quantity instead`);
    // Its grant periods must nest in the subscription's billing terms, where add-ons are added and removed.
    if (addOn && plan && frequencyRank[addOn.billing] > frequencyRank[plan.billing])
      problems.add(
        `${aat}.add_on`,
        'range',
        `add-on ${addOn.id} bills ${addOn.billing}, longer than plan ${plan.id}'s ${plan.billing} terms`,
      );
    const quantity = a.quantity ?? 1;
    if (!Number.isInteger(quantity) || (quantity as number) < 1 || (quantity as number) > addOnQuantityMax)
      problems.add(`${aat}.quantity`, 'range', `${aat}.quantity must be a whole number 1–${addOnQuantityMax}`);
    const latest = addOn?.versions.length ?? 0;
    const version = a.version ?? latest;
    if (
      addOn &&
      addOn.kind === 'recurring' &&
      (!Number.isInteger(version) || (version as number) < 1 || (version as number) > latest)
    )
      problems.add(`${aat}.version`, 'unknown', `add-on ${addOn.id} has versions 1–${latest}`);
    const grant = addOn?.versions[(version as number) - 1]?.grant;
    let overrides: GrantOverride = {};
    if (a.overrides !== undefined) {
      if (addOn && grant === undefined)
        problems.add(
          `${aat}.overrides`,
          'unknown',
          `add-on ${addOn.id} version ${String(version)} grants nothing to override`,
        );
      overrides = parseGrantOverride(problems, a.overrides, `${aat}.overrides`, addOn?.billing, `add-on ${id}`);
    }
    if (id && addOn && typeof quantity === 'number' && typeof version === 'number')
      out.push({ addOn: id, quantity, version, overrides });
  });
  return out;
}

function parseSubscriptionCharges(
  problems: Problems,
  raw: unknown,
  at: string,
  charges: ReadonlyMap<string, Charge>,
  startMs: number | undefined,
  endMs: number | undefined,
): SubscriptionCharge[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    problems.add(at, 'type', `${at} must be an array`);
    return [];
  }
  if (raw.length > subscriptionChargesMax)
    problems.add(at, 'too_many', `${at} may list at most ${subscriptionChargesMax} charges`);
  const out: SubscriptionCharge[] = [];
  raw.slice(0, subscriptionChargesMax).forEach((c, i) => {
    const cat = `${at}[${i}]`;
    if (!isPlainObject(c)) return problems.add(cat, 'type', `${cat} must be an object`);
    refuseUnknownFields(problems, c, cat, catalogFields.subscriptionCharge);
    const chargeId = readString(problems, c.charge, `${cat}.charge`, { pattern: idPattern });
    if (chargeId !== undefined && !charges.has(chargeId))
      problems.add(`${cat}.charge`, 'unknown', `charge ${chargeId} is not defined`);
    // The id names the block the charge grants: applying the same charge twice needs two ids.
    const id = readString(problems, c.id ?? chargeId, `${cat}.id`, { pattern: idPattern });
    if (id !== undefined && out.some((x) => x.id === id))
      problems.add(`${cat}.id`, 'duplicate', `charge ${id} is applied twice; give each application its own id`);
    const atMs = c.at === undefined ? startMs : readInstant(problems, c.at, `${cat}.at`);
    if (atMs !== undefined && startMs !== undefined && (atMs < startMs || (endMs !== undefined && atMs >= endMs)))
      problems.add(`${cat}.at`, 'range', `${cat}.at must lie within the subscription (from its start, before its end)`);
    if (id && chargeId && charges.has(chargeId) && atMs !== undefined) out.push({ id, charge: chargeId, atMs });
  });
  return out;
}

/** Bounds the catalog document and the work of finding a term's state. */
const subscriptionChangesMax = 120;

function parseOverrides(
  problems: Problems,
  raw: unknown,
  at: string,
  plan: Plan | undefined,
  planVersion: number,
): Overrides {
  const overrides: Overrides = {};
  if (raw === undefined) return overrides;
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must map grant ids to overrides`);
    return overrides;
  }
  for (const [grantId, o] of Object.entries(raw)) {
    const oat = `${at}.${grantId}`;
    const version = plan?.versions[planVersion - 1];
    if (version && !version.grants.some((g) => g.id === grantId))
      problems.add(oat, 'unknown', `plan ${plan!.id} version ${planVersion} has no grant ${grantId}`);
    if (!isPlainObject(o)) {
      problems.add(oat, 'type', `${oat} must be an object`);
      continue;
    }
    const entry = parseGrantOverride(problems, o, oat, plan?.billing, 'the plan');
    if (!hostileKeys.has(grantId)) overrides[grantId] = entry;
  }
  return overrides;
}

/** One grant's overrides (a plan grant's or an add-on grant's); `billing` bounds the frequency. */
function parseGrantOverride(
  problems: Problems,
  raw: unknown,
  at: string,
  billing: BillingFrequency | undefined,
  owner: string,
): GrantOverride {
  const entry: GrantOverride = {};
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object`);
    return entry;
  }
  refuseUnknownFields(problems, raw, at, catalogFields.grantOverride);
  if (raw.quantity !== undefined) {
    const q = readDecimalText(problems, raw.quantity, `${at}.quantity`, { positive: true });
    if (q) entry.quantity = money(q);
  }
  if (raw.frequency !== undefined) {
    const f = parseFrequency(problems, raw.frequency, `${at}.frequency`);
    if (f && billing && frequencyRank[f] > frequencyRank[billing])
      problems.add(`${at}.frequency`, 'range', `a ${f} grant is longer than ${owner}'s ${billing} billing period`);
    if (f) entry.frequency = f;
  }
  if (raw.rollover !== undefined) {
    const r = parseRollover(problems, raw.rollover, `${at}.rollover`);
    if (r) entry.rollover = r;
  }
  return entry;
}

/** Start of billing term `index` (0 = the one starting at the anchor). */
export function termStart(plan: Pick<Plan, 'billing'>, anchorMs: number, index: number): number {
  return periodStart(anchorMs, plan.billing, index);
}

/** Why `atMs` cannot be when a change takes effect; undefined if it can. */
function termStartProblem(
  plan: Pick<Plan, 'billing'>,
  anchorMs: number,
  startMs: number,
  endMs: number | undefined,
  atMs: number,
  previousMs: number | undefined,
): string | undefined {
  if (termStart(plan, anchorMs, periodIndexAt(anchorMs, plan.billing, atMs)) !== atMs) {
    return `must be the start of a ${plan.billing} billing term (counted from the billing anchor ${new Date(anchorMs).toISOString()}): edits never take effect mid-term`;
  }
  if (atMs <= startMs)
    return 'must be after the subscription start (the start itself takes plan_version and overrides)';
  if (endMs !== undefined && atMs >= endMs) return 'must be before the subscription end';
  if (previousMs !== undefined && atMs <= previousMs) return 'must be after the previous change';
  return undefined;
}

/** The terms in force at `atMs`: the last change effective by then, else the initial terms. */
export function termsAt(subscription: Subscription, atMs: number): SubscriptionTerms {
  let terms: SubscriptionTerms = subscription;
  for (const change of subscription.changes) if (change.effectiveFromMs <= atMs) terms = change;
  return terms;
}

/** The subscription's life cut at its changes: each piece with the terms in force throughout it. */
export function termSegments(
  subscription: Subscription,
): { fromMs: number; untilMs: number | undefined; terms: SubscriptionTerms }[] {
  const starts = [
    { fromMs: subscription.startMs, terms: subscription as SubscriptionTerms },
    ...subscription.changes.map((c) => ({ fromMs: c.effectiveFromMs, terms: c as SubscriptionTerms })),
  ];
  return starts.map((s, i) => ({
    fromMs: s.fromMs,
    untilMs: starts[i + 1]?.fromMs ?? subscription.endMs,
    terms: { planVersion: s.terms.planVersion, overrides: s.terms.overrides, addOns: s.terms.addOns },
  }));
}

/** An edit to an active subscription: a new plan version, new overrides and/or add-ons (replacing the old ones). */
export interface SubscriptionEdit {
  planVersion?: number;
  overrides?: Overrides;
  addOns?: SubscriptionAddOn[];
}

/**
 * Places an edit at the start of the next billing term after `nowMs` (SPEC §4:
 * edits take effect at the next term, never mid-term) and returns the
 * edited subscription; the input is not changed. A change already scheduled
 * for that term is replaced; changes scheduled later stay. Before the
 * subscription starts, the edit replaces its initial terms. Without
 * `overrides`, the overrides in force carry over when the version stays and
 * are dropped with a new version. Refuses (request_invalid, naming the
 * field) a version the plan lacks, overrides of grants the version lacks,
 * and an edit after the subscription has ended.
 */
export function scheduleSubscriptionEdit(
  subscription: Subscription,
  plan: Plan,
  edit: SubscriptionEdit,
  nowMs: number,
  addOns: ReadonlyMap<string, AddOn> = new Map(),
): Subscription {
  const problems = new Problems();
  if (plan.id !== subscription.plan)
    problems.add('plan', 'mismatch', `subscription ${subscription.id} is on plan ${subscription.plan}, not ${plan.id}`);
  const before = nowMs < subscription.startMs;
  const effectiveFromMs = before
    ? subscription.startMs
    : termStart(plan, subscription.anchorMs, periodIndexAt(subscription.anchorMs, plan.billing, nowMs) + 1);
  if (subscription.endMs !== undefined && effectiveFromMs >= subscription.endMs)
    problems.add('effective_from', 'range', `subscription ${subscription.id} ends before its next billing term`);
  // Based on what that term would have had, a change already scheduled for it included.
  const current = termsAt(subscription, effectiveFromMs);
  const planVersion = edit.planVersion ?? current.planVersion;
  if (!Number.isInteger(planVersion) || planVersion < 1 || planVersion > plan.versions.length)
    problems.add('plan_version', 'unknown', `plan ${plan.id} has versions 1–${plan.versions.length}`);
  const version = plan.versions[planVersion - 1];
  const overrides = edit.overrides ?? (planVersion === current.planVersion ? current.overrides : {});
  for (const [grantId, o] of Object.entries(overrides)) {
    if (version && !version.grants.some((g) => g.id === grantId))
      problems.add(`overrides.${grantId}`, 'unknown', `plan ${plan.id} version ${planVersion} has no grant ${grantId}`);
    if (o.frequency && frequencyRank[o.frequency] > frequencyRank[plan.billing])
      problems.add(
        `overrides.${grantId}.frequency`,
        'range',
        `a ${o.frequency} grant is longer than the plan's ${plan.billing} billing period`,
      );
    if (o.quantity && !o.quantity.gt(0)) problems.add(`overrides.${grantId}.quantity`, 'range', 'quantity must be > 0');
  }
  const nextAddOns = edit.addOns ?? current.addOns;
  // The document form goes through the one validator, so an edit is held to what a catalog file is.
  if (edit.addOns !== undefined)
    parseSubscriptionAddOns(problems, edit.addOns.map(subscriptionAddOnJson), 'add_ons', plan, addOns);
  if (!problems.empty)
    throw new DrawdownError(
      'request_invalid',
      `subscription edit refused: ${problems.list.map((p) => p.message).join('; ')}`,
      { problems: problems.list },
    );
  if (before)
    return {
      ...subscription,
      planVersion,
      overrides,
      addOns: nextAddOns,
      changes: subscription.changes.filter((c) => c.effectiveFromMs > subscription.startMs),
    };
  const changes = subscription.changes.filter((c) => c.effectiveFromMs !== effectiveFromMs);
  changes.push({ effectiveFromMs, planVersion, overrides, addOns: nextAddOns });
  changes.sort((a, b) => a.effectiveFromMs - b.effectiveFromMs);
  return { ...subscription, changes };
}

function rolloverJson(r: Rollover): Record<string, unknown> {
  switch (r.kind) {
    case 'none':
    case 'unlimited':
      return { kind: r.kind };
    case 'time_limited':
      return {
        kind: r.kind,
        duration: `P${r.duration.months > 0 ? `${r.duration.months}M` : ''}${r.duration.days > 0 ? `${r.duration.days}D` : ''}`,
      };
    case 'capped':
      return { kind: r.kind, percent: r.percent.toFixed(), maximum: r.maximum.toFixed() };
  }
}

function overrideJson(o: GrantOverride): Record<string, unknown> {
  return {
    ...(o.quantity && { quantity: o.quantity.toFixed() }),
    ...(o.frequency && { frequency: o.frequency }),
    ...(o.rollover && { rollover: rolloverJson(o.rollover) }),
  };
}

function overridesJson(overrides: Overrides): Record<string, unknown> {
  return Object.fromEntries(Object.entries(overrides).map(([id, o]) => [id, overrideJson(o)]));
}

function subscriptionAddOnJson(a: SubscriptionAddOn): Record<string, unknown> {
  return {
    add_on: a.addOn,
    quantity: a.quantity,
    version: a.version,
    ...(Object.keys(a.overrides).length > 0 && { overrides: overrideJson(a.overrides) }),
  };
}

/** A subscription as the catalog document writes it (the inverse of parseSubscription). */
export function subscriptionJson(s: Subscription): Record<string, unknown> {
  return {
    id: s.id,
    customer: s.customer,
    plan: s.plan,
    plan_version: s.planVersion,
    start: new Date(s.startMs).toISOString(),
    ...(s.anchorMs !== s.startMs && { billing_anchor: new Date(s.anchorMs).toISOString() }),
    ...(s.endMs !== undefined && { end: new Date(s.endMs).toISOString() }),
    ...(Object.keys(s.overrides).length > 0 && { overrides: overridesJson(s.overrides) }),
    ...(s.addOns.length > 0 && { add_ons: s.addOns.map(subscriptionAddOnJson) }),
    ...(s.changes.length > 0 && {
      changes: s.changes.map((c, i) => {
        const addOns = c.addOns.map(subscriptionAddOnJson);
        // Add-ons carry over, so a change lists them only when it changes them.
        const before = (i === 0 ? s.addOns : s.changes[i - 1]!.addOns).map(subscriptionAddOnJson);
        return {
          effective_from: new Date(c.effectiveFromMs).toISOString(),
          plan_version: c.planVersion,
          overrides: overridesJson(c.overrides),
          ...(JSON.stringify(addOns) !== JSON.stringify(before) && { add_ons: addOns }),
        };
      }),
    }),
    ...(s.charges.length > 0 && {
      charges: s.charges.map((c) => ({ id: c.id, charge: c.charge, at: new Date(c.atMs).toISOString() })),
    }),
  };
}
