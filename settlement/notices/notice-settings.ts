/**
 * A customer's own notice settings (admin API), per credit unit: balance.low
 * thresholds and a grant.expiring lead time that replace the catalog's
 * defaults, and an auto top-up rule.
 * Stored in NATS KV (one value per customer, last write wins: an admin edit,
 * not a money decision), read afresh by every evaluation (one KV get).
 *
 *   { "units": { "credits": { "low": ["100", "10"], "expiring_within": "P7D",
 *                             "auto_top_up": { "below": "20", "package": "credits-100",
 *                                              "max_per_day": 2, "mode": "confirm" } } } }
 */
import type { Decimal } from 'decimal.js';
import { jetstream, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { lowThresholdsMax, type Catalog, type LeadTime } from '../../catalog/model.js';
import { parseLeadTime } from '../../catalog/periods.js';
import { formatAmount, money } from '../../shared/money.js';
import { isPlainObject, Problems, refuseUnknownFields } from '../../shared/validate.js';
import type { AccountRules, TopUpMode } from './crossings.js';

export interface UnitSettingsJson {
  /** Replaces the catalog's thresholds for this customer when present ([] = none). */
  low?: string[];
  /** Replaces the catalog's grant.expiring lead time for this customer when present (null = none). */
  expiring_within?: string | null;
  auto_top_up?: { below: string; package: string; max_per_day: number; mode: TopUpMode } | null;
}

export interface CustomerSettingsJson {
  units: Record<string, UnitSettingsJson>;
}

export const maxPerDayLimit = 100;
const unitsMax = 64;
const decimalPattern = /^\d{1,18}(\.\d{1,9})?$/;

/** Validates a PUT body against the catalog, collecting every problem; canonical decimals out. */
export function parseCustomerSettings(problems: Problems, body: unknown, catalog: Catalog): CustomerSettingsJson {
  const out: CustomerSettingsJson = { units: {} };
  if (!isPlainObject(body)) {
    problems.add('', 'type', 'body must be a JSON object');
    return out;
  }
  refuseUnknownFields(problems, body, '', ['units']);
  if (!isPlainObject(body.units)) {
    problems.add(
      'units',
      body.units === undefined ? 'required' : 'type',
      'units must be an object keyed by credit unit',
    );
    return out;
  }
  const entries = Object.entries(body.units);
  if (entries.length > unitsMax) problems.add('units', 'too_many', `units may name at most ${unitsMax} credit units`);
  for (const [unit, raw] of entries.slice(0, unitsMax)) {
    const at = `units.${unit}`;
    if (!catalog.creditUnits.has(unit)) {
      problems.add(at, 'unknown_unit', `${JSON.stringify(unit)} is not a credit unit of the catalog`);
      continue;
    }
    if (!isPlainObject(raw)) {
      problems.add(at, 'type', `${at} must be an object`);
      continue;
    }
    refuseUnknownFields(problems, raw, at, ['low', 'expiring_within', 'auto_top_up']);
    const unitOut: UnitSettingsJson = {};
    if (raw.low !== undefined) {
      if (!Array.isArray(raw.low) || raw.low.length > lowThresholdsMax) {
        problems.add(`${at}.low`, 'type', `${at}.low must be an array of at most ${lowThresholdsMax} decimal strings`);
      } else {
        const low: string[] = [];
        raw.low.forEach((t, i) => {
          if (typeof t !== 'string' || !decimalPattern.test(t))
            problems.add(`${at}.low[${i}]`, 'format', 'a threshold is a decimal string ≥ 0 (≤ 9 fraction digits)');
          else low.push(formatAmount(money(t)));
        });
        unitOut.low = [...new Set(low)];
      }
    }
    if (raw.expiring_within === null) unitOut.expiring_within = null;
    else if (raw.expiring_within !== undefined) {
      if (typeof raw.expiring_within !== 'string' || parseLeadTime(raw.expiring_within) === undefined)
        problems.add(
          `${at}.expiring_within`,
          'format',
          'expiring_within is an ISO-8601 lead time in days, hours or minutes (P7D, PT12H), at most P366D, or null',
        );
      else unitOut.expiring_within = raw.expiring_within;
    }
    if (raw.auto_top_up === null) unitOut.auto_top_up = null;
    else if (raw.auto_top_up !== undefined) {
      const rule = raw.auto_top_up;
      const ruleAt = `${at}.auto_top_up`;
      if (!isPlainObject(rule)) problems.add(ruleAt, 'type', `${ruleAt} must be an object or null`);
      else {
        refuseUnknownFields(problems, rule, ruleAt, ['below', 'package', 'max_per_day', 'mode']);
        const below = typeof rule.below === 'string' && decimalPattern.test(rule.below) ? rule.below : undefined;
        if (below === undefined) problems.add(`${ruleAt}.below`, 'format', 'below must be a decimal string ≥ 0');
        const pkg = typeof rule.package === 'string' ? catalog.packages.get(rule.package) : undefined;
        if (pkg === undefined)
          problems.add(`${ruleAt}.package`, 'unknown_package', 'package must be a credit package of the catalog');
        else if (pkg.unit !== unit)
          problems.add(`${ruleAt}.package`, 'unit_mismatch', `package ${pkg.id} grants ${pkg.unit}, not ${unit}`);
        const maxPerDay = rule.max_per_day;
        if (
          typeof maxPerDay !== 'number' ||
          !Number.isInteger(maxPerDay) ||
          maxPerDay < 1 ||
          maxPerDay > maxPerDayLimit
        )
          problems.add(`${ruleAt}.max_per_day`, 'range', `max_per_day must be an integer 1–${maxPerDayLimit}`);
        const mode = rule.mode ?? 'confirm';
        if (mode !== 'confirm' && mode !== 'trusted')
          problems.add(`${ruleAt}.mode`, 'enum', 'mode must be confirm (the app confirms payment) or trusted');
        if (below !== undefined && pkg !== undefined && typeof maxPerDay === 'number')
          unitOut.auto_top_up = {
            below: formatAmount(money(below)),
            package: pkg.id,
            max_per_day: maxPerDay,
            mode: mode as TopUpMode,
          };
      }
    }
    out.units[unit] = unitOut;
  }
  return out;
}

/** The rules an account is evaluated by: the customer's own, else the catalog's defaults. */
export function rulesFor(catalog: Catalog, settings: CustomerSettingsJson | undefined, unit: string): AccountRules {
  const own = settings?.units[unit];
  const low: Decimal[] =
    own?.low !== undefined ? own.low.map((t) => money(t)) : (catalog.creditUnits.get(unit)?.lowThresholds ?? []);
  const rule = own?.auto_top_up ?? undefined;
  return {
    low,
    topUp:
      rule === undefined || rule === null || !catalog.packages.has(rule.package)
        ? undefined
        : { below: money(rule.below), package: rule.package, maxPerDay: rule.max_per_day, mode: rule.mode },
  };
}

/** The grant.expiring lead time in force for an account, and where it comes from; undefined: none. */
export function expiringWithinFor(
  catalog: Catalog,
  settings: CustomerSettingsJson | undefined,
  unit: string,
): (LeadTime & { source: 'customer' | 'catalog' }) | undefined {
  const own = settings?.units[unit]?.expiring_within;
  if (own === null) return undefined;
  if (own !== undefined) {
    const ms = parseLeadTime(own);
    return ms === undefined ? undefined : { text: own, ms, source: 'customer' };
  }
  const fallback = catalog.creditUnits.get(unit)?.expiringWithin;
  return fallback === undefined ? undefined : { ...fallback, source: 'catalog' };
}

/** The longest lead time these settings set for any unit, in ms (0: none). */
export function longestExpiringWithinMs(settings: CustomerSettingsJson): number {
  let longest = 0;
  for (const unit of Object.values(settings.units)) {
    const ms = typeof unit.expiring_within === 'string' ? (parseLeadTime(unit.expiring_within) ?? 0) : 0;
    if (ms > longest) longest = ms;
  }
  return longest;
}

/**
 * The key that keeps the longest lead time any customer's settings ever set (ms, as text): how far ahead the
 * grant.expiring check looks (evaluator.ts). A '.' never appears in a customer's key (base64url), so it cannot
 * collide. It only grows: a shorter setting later makes the check read a little more than it needs, never less.
 */
const expiringWithinMaxKey = 'meta.expiring_within_max';

export interface NoticeSettingsOptions {
  bucket: string;
  replicas: number;
  requestTimeoutMs: number;
}

export class NoticeSettingsStore {
  readonly #kv: KV;

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  static async open(nc: NatsConnection, options: NoticeSettingsOptions): Promise<NoticeSettingsStore> {
    const js = jetstream(nc, { timeout: options.requestTimeoutMs });
    const kv = await new Kvm(js).create(options.bucket, {
      storage: StorageType.File,
      replicas: options.replicas,
      history: 1,
      maxValueSize: 64 * 1024,
      description: 'drawdown notices: per-customer thresholds and auto top-up rules',
    });
    return new NoticeSettingsStore(kv);
  }

  static #key(customer: string): string {
    return Buffer.from(customer, 'utf8').toString('base64url');
  }

  /** Read now (the admin API). */
  async read(customer: string): Promise<CustomerSettingsJson | undefined> {
    const entry = await this.#kv.get(NoticeSettingsStore.#key(customer));
    if (entry === null || entry.operation !== 'PUT' || entry.value.length === 0) return undefined;
    return JSON.parse(Buffer.from(entry.value).toString('utf8')) as CustomerSettingsJson;
  }

  async write(customer: string, settings: CustomerSettingsJson): Promise<void> {
    // The horizon first: a setting is never in force before the check looks far enough ahead for it.
    await this.#raiseExpiringWithinMax(longestExpiringWithinMs(settings));
    await this.#kv.put(NoticeSettingsStore.#key(customer), JSON.stringify(settings));
  }

  /** The longest grant.expiring lead time any customer has set, in ms (0: none ever). */
  async expiringWithinMaxMs(): Promise<number> {
    const entry = await this.#kv.get(expiringWithinMaxKey);
    if (entry === null || entry.operation !== 'PUT' || entry.value.length === 0) return 0;
    const ms = Number(Buffer.from(entry.value).toString('utf8'));
    return Number.isSafeInteger(ms) && ms > 0 ? ms : 0;
  }

  /** Compare-and-set, so two admins' edits in two processes keep the larger; bounded attempts. */
  async #raiseExpiringWithinMax(ms: number): Promise<void> {
    for (let attempt = 0; attempt < 16 && ms > 0; attempt++) {
      const entry = await this.#kv.get(expiringWithinMaxKey);
      const stored =
        entry === null || entry.operation !== 'PUT' ? 0 : Number(Buffer.from(entry.value).toString('utf8')) || 0;
      if (stored >= ms) return;
      try {
        if (entry === null) await this.#kv.create(expiringWithinMaxKey, String(ms));
        else await this.#kv.update(expiringWithinMaxKey, String(ms), entry.revision);
        return;
      } catch (error) {
        // Another writer changed it: read again (a NATS failure fails the last attempt, and the edit with it).
        if (attempt === 15) throw error;
      }
    }
  }
}
