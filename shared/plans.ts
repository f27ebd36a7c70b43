/**
 * Plans and subscriptions as the catalog declares them (SPEC §4), validated
 * once into typed values. The rules that act on them live in
 * settlement/credit; these are only the shapes and their validation.
 */
import type { Decimal } from 'decimal.js';
import { money } from './money.js';
import { Problems, isPlainObject, readDecimalText, readInstant, readString } from './validate.js';

export type Frequency = 'daily' | 'monthly' | 'yearly';
export type BillingFrequency = 'monthly' | 'yearly';

/** A calendar duration, e.g. for time-limited rollover ("expire 2 months after the period end"). */
export interface Duration {
  months: number;
  days: number;
}

export type Rollover =
  | { kind: 'none' }
  | { kind: 'unlimited' }
  | { kind: 'time_limited'; duration: Duration }
  /** `percent` is 0–100. */
  | { kind: 'capped'; percent: Decimal; maximum: Decimal };

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

export interface Subscription {
  id: string;
  customer: string;
  plan: string;
  planVersion: number;
  startMs: number;
  /** Grant and billing periods count from here; defaults to the start. */
  anchorMs: number;
  endMs: number | undefined;
  /** Per-grant overrides, by grant id. */
  overrides: Record<string, Partial<Pick<GrantDefinition, 'quantity' | 'frequency' | 'rollover'>>>;
}

const frequencyRank: Record<Frequency, number> = { daily: 0, monthly: 1, yearly: 2 };
const idPattern = /^[A-Za-z0-9._:@-]{1,128}$/;

/** ISO-8601 "P2M", "P30D", "P1Y", "P1M15D" → months and days; undefined if malformed. */
export function parseDuration(text: string): Duration | undefined {
  const match = /^P(?:(\d{1,3})Y)?(?:(\d{1,4})M)?(?:(\d{1,5})D)?$/.exec(text);
  if (match === null || text === 'P') return undefined;
  const months = Number(match[1] ?? 0) * 12 + Number(match[2] ?? 0);
  const days = Number(match[3] ?? 0);
  return months === 0 && days === 0 ? undefined : { months, days };
}

export function parseRollover(problems: Problems, raw: unknown, at: string): Rollover | undefined {
  if (raw === undefined) return { kind: 'none' };
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object such as {"kind": "capped", "percent": "50", "maximum": "250"}`);
    return undefined;
  }
  switch (raw.kind) {
    case 'none':
    case 'unlimited':
      return { kind: raw.kind };
    case 'time_limited': {
      const duration = typeof raw.duration === 'string' ? parseDuration(raw.duration) : undefined;
      if (duration === undefined) problems.add(`${at}.duration`, 'format', `${at}.duration must be an ISO-8601 duration such as P2M or P30D`);
      return duration && { kind: 'time_limited', duration };
    }
    case 'capped': {
      const percent = readDecimalText(problems, raw.percent, `${at}.percent`);
      const maximum = readDecimalText(problems, raw.maximum, `${at}.maximum`);
      if (percent !== undefined && money(percent).greaterThan(100)) problems.add(`${at}.percent`, 'range', `${at}.percent must be 0–100`);
      return percent !== undefined && maximum !== undefined ? { kind: 'capped', percent: money(percent), maximum: money(maximum) } : undefined;
    }
    default:
      problems.add(`${at}.kind`, 'enum', `${at}.kind must be none, unlimited, time_limited or capped`);
      return undefined;
  }
}

function parseFrequency(problems: Problems, raw: unknown, at: string): Frequency | undefined {
  if (raw === 'daily' || raw === 'monthly' || raw === 'yearly') return raw;
  problems.add(at, 'enum', `${at} must be daily, monthly or yearly`);
  return undefined;
}

export function parsePlan(problems: Problems, raw: unknown, at: string, units: ReadonlyMap<string, { archived: boolean }>): Plan | undefined {
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object`);
    return undefined;
  }
  const id = readString(problems, raw.id, `${at}.id`, { pattern: idPattern });
  const name = readString(problems, raw.name ?? raw.id, `${at}.name`, { max: 128 });
  const billing = raw.billing;
  if (billing !== 'monthly' && billing !== 'yearly') problems.add(`${at}.billing`, 'enum', `${at}.billing must be monthly or yearly`);
  const versions: PlanVersion[] = [];
  const rawVersions = Array.isArray(raw.versions) ? raw.versions : [];
  if (rawVersions.length === 0) problems.add(`${at}.versions`, 'required', `${at}.versions must list at least one version`);
  const grantUnits = new Map<string, string>();
  rawVersions.forEach((v, i) => {
    const vat = `${at}.versions[${i}]`;
    if (!isPlainObject(v)) return problems.add(vat, 'type', `${vat} must be an object`);
    if (v.version !== i + 1) problems.add(`${vat}.version`, 'sequence', `${vat}.version must be ${i + 1}: versions are numbered 1, 2, … and never removed`);
    const grants: GrantDefinition[] = [];
    (Array.isArray(v.grants) ? v.grants : []).forEach((g, j) => {
      const gat = `${vat}.grants[${j}]`;
      if (!isPlainObject(g)) return problems.add(gat, 'type', `${gat} must be an object`);
      const gid = readString(problems, g.id, `${gat}.id`, { pattern: idPattern });
      const unit = readString(problems, g.unit, `${gat}.unit`, { max: 64 });
      const quantity = readDecimalText(problems, g.quantity, `${gat}.quantity`, { positive: true });
      const frequency = parseFrequency(problems, g.frequency, `${gat}.frequency`);
      const rollover = parseRollover(problems, g.rollover, `${gat}.rollover`);
      if (unit !== undefined && !units.has(unit)) problems.add(`${gat}.unit`, 'unknown', `credit unit ${unit} is not defined`);
      if (frequency !== undefined && (billing === 'monthly' || billing === 'yearly') && frequencyRank[frequency] > frequencyRank[billing]) {
        problems.add(`${gat}.frequency`, 'range', `a ${frequency} grant is longer than the plan's ${billing} billing period`);
      }
      // A grant's unit is fixed once saved: later versions may change anything else.
      if (gid !== undefined && unit !== undefined) {
        const earlier = grantUnits.get(gid);
        if (earlier !== undefined && earlier !== unit) problems.add(`${gat}.unit`, 'immutable', `grant ${gid} was saved with unit ${earlier}; its unit cannot change`);
        grantUnits.set(gid, unit);
      }
      if (gid && unit && quantity && frequency && rollover) grants.push({ id: gid, unit, quantity: money(quantity), frequency, rollover });
    });
    let overage: PlanVersion['overage'];
    if (v.overage !== undefined) {
      const o = isPlainObject(v.overage) ? v.overage : {};
      const unit = readString(problems, o.unit, `${vat}.overage.unit`, { max: 64 });
      const price = isPlainObject(o.price_per_credit) ? o.price_per_credit : {};
      const currency = readString(problems, price.currency, `${vat}.overage.price_per_credit.currency`, { pattern: /^[A-Z]{3}$/ });
      const amount = readDecimalText(problems, price.amount, `${vat}.overage.price_per_credit.amount`);
      if (unit !== undefined && !units.has(unit)) problems.add(`${vat}.overage.unit`, 'unknown', `credit unit ${unit} is not defined`);
      if (unit && currency && amount) overage = { unit, currency, pricePerCredit: money(amount) };
    }
    versions.push({ version: i + 1, grants, overage });
  });
  if (!id || !name || (billing !== 'monthly' && billing !== 'yearly')) return undefined;
  return { id, name, billing, versions };
}

export function parseSubscription(problems: Problems, raw: unknown, at: string, plans: ReadonlyMap<string, Plan>): Subscription | undefined {
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object`);
    return undefined;
  }
  const id = readString(problems, raw.id, `${at}.id`, { pattern: idPattern });
  const customer = readString(problems, raw.customer, `${at}.customer`, { pattern: idPattern });
  const planId = readString(problems, raw.plan, `${at}.plan`, { pattern: idPattern });
  const plan = planId === undefined ? undefined : plans.get(planId);
  if (planId !== undefined && plan === undefined) problems.add(`${at}.plan`, 'unknown', `plan ${planId} is not defined`);
  // A subscription keeps the version it started on unless it names another.
  const planVersion = raw.plan_version ?? plan?.versions.length;
  if (plan && (!Number.isInteger(planVersion) || (planVersion as number) < 1 || (planVersion as number) > plan.versions.length)) {
    problems.add(`${at}.plan_version`, 'unknown', `plan ${plan.id} has versions 1–${plan.versions.length}`);
  }
  const startMs = readInstant(problems, raw.start, `${at}.start`);
  const anchorMs = raw.billing_anchor === undefined ? startMs : readInstant(problems, raw.billing_anchor, `${at}.billing_anchor`);
  const endMs = raw.end === undefined ? undefined : readInstant(problems, raw.end, `${at}.end`);
  const overrides: Subscription['overrides'] = {};
  if (raw.overrides !== undefined) {
    if (!isPlainObject(raw.overrides)) problems.add(`${at}.overrides`, 'type', `${at}.overrides must map grant ids to overrides`);
    else {
      for (const [grantId, o] of Object.entries(raw.overrides)) {
        const oat = `${at}.overrides.${grantId}`;
        const version = plan?.versions[(planVersion as number) - 1];
        if (version && !version.grants.some((g) => g.id === grantId)) problems.add(oat, 'unknown', `plan ${plan!.id} version ${planVersion} has no grant ${grantId}`);
        if (!isPlainObject(o)) {
          problems.add(oat, 'type', `${oat} must be an object`);
          continue;
        }
        const entry: Subscription['overrides'][string] = {};
        if (o.quantity !== undefined) {
          const q = readDecimalText(problems, o.quantity, `${oat}.quantity`, { positive: true });
          if (q) entry.quantity = money(q);
        }
        if (o.frequency !== undefined) {
          const f = parseFrequency(problems, o.frequency, `${oat}.frequency`);
          if (f && plan && frequencyRank[f] > frequencyRank[plan.billing]) problems.add(`${oat}.frequency`, 'range', `a ${f} grant is longer than the plan's ${plan.billing} billing period`);
          if (f) entry.frequency = f;
        }
        if (o.rollover !== undefined) {
          const r = parseRollover(problems, o.rollover, `${oat}.rollover`);
          if (r) entry.rollover = r;
        }
        overrides[grantId] = entry;
      }
    }
  }
  if (!id || !customer || !plan || startMs === undefined || anchorMs === undefined) return undefined;
  return { id, customer, plan: plan.id, planVersion: planVersion as number, startMs, anchorMs, endMs, overrides };
}
