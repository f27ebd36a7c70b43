/**
 * The catalog: credit units, meters, the versioned rate card and credit
 * packages. It arrives as JSON (catalog-as-code) and is validated once, here,
 * into typed values; everything downstream trusts it.
 */
import { readFileSync } from 'node:fs';
import type { Decimal } from 'decimal.js';
import { DrawdownError } from '../shared/errors.js';
import { money } from '../shared/money.js';
import { parsePlan, parseSubscription, refuseNewGrantsOnArchivedUnits, type Plan, type Subscription } from './plans.js';
import { catalogFields } from './fields.js';
import {
  Problems,
  hostileKeys,
  isPlainObject,
  readDecimalText,
  readInstant,
  readString,
  refuseUnknownFields,
} from '../shared/validate.js';
import type { Aggregation, MeterDefinitions } from '../shared/events/meters.js';
import { parseEventMapping, type EventMapping } from './event-mapping.js';
import { parseAddOn, parseCharge, type AddOn, type Charge } from './add-ons.js';
import { parseNameHistory, type UnitNames } from './names.js';
import { parseLeadTime } from './periods.js';

export type { Aggregation, MeterDefinitions };

export interface Meter {
  key: string;
  name: string;
  unitSingular: string;
  unitPlural: string;
  aggregation: Aggregation;
  /** Declared dimension keys, sorted; only these are kept from events. */
  dimensions: string[];
  /** How CloudEvents map to this meter (`event_type`, `value_property`, `group_by`); undefined when none. */
  events: EventMapping | undefined;
}

export interface CreditUnit {
  id: string;
  name: string;
  internalName: string;
  fiat: { currency: string; value: Decimal } | undefined;
  /** Fraction digits shown to people; the ledger itself keeps 9. */
  precision: number;
  /** How far below zero usage may take the balance; undefined = not at all. */
  allowedNegativeBalance: Decimal | undefined;
  archived: boolean;
  /** Default balance.low thresholds for every customer (settlement/notices; a customer's own settings replace them). */
  lowThresholds: Decimal[];
  /**
   * Default grant.expiring lead time for every customer (settlement/notices): a block with credits left is announced
   * once when its expiry is this close. undefined: none (a customer's own settings may set one).
   */
  expiringWithin: LeadTime | undefined;
  /** The names this unit had before, oldest first, each with when it stopped being in force (catalog/names.ts). */
  previousNames: (UnitNames & { untilMs: number })[];
}

/** A notice lead time as written ("P7D") and in ms (catalog/periods.ts parseLeadTime). */
export interface LeadTime {
  text: string;
  ms: number;
}

/** At most this many balance.low thresholds per unit (catalog default or a customer's own). */
export const lowThresholdsMax = 10;

/**
 * One tier of a graduated price: the quantity above the previous tier's
 * `upTo` and up to this one's costs `amount` per `per` units. `upTo`
 * undefined = no upper bound (only the last tier).
 */
export interface PriceTier {
  upTo: Decimal | undefined;
  amount: Decimal;
  per: Decimal;
}

export type Price =
  | { model: 'unit'; amount: Decimal }
  | { model: 'package'; amount: Decimal; size: Decimal; rounding: 'prorate' | 'up' }
  /** Each tier prices the part of the period's cumulative quantity that falls into it (settlement/README.md). */
  | { model: 'graduated'; tiers: PriceTier[] };

/** Enough for any real rate card; bounds the work of pricing one line. */
const priceTiersMax = 32;

export interface RateRow {
  meter: string;
  /** Dimension values this row requires; more keys = more specific. */
  match: Record<string, string>;
  unit: string;
  price: Price;
}

export interface RateCardVersion {
  version: string;
  effectiveFromMs: number;
  rows: RateRow[];
}

export interface CreditPackage {
  id: string;
  name: string;
  price: { currency: string; amount: Decimal };
  credits: Decimal;
  unit: string;
}

export interface Catalog {
  creditUnits: ReadonlyMap<string, CreditUnit>;
  meters: ReadonlyMap<string, Meter>;
  /** Sorted by effectiveFromMs, ascending. */
  rateCard: readonly RateCardVersion[];
  packages: ReadonlyMap<string, CreditPackage>;
  plans: ReadonlyMap<string, Plan>;
  addOns: ReadonlyMap<string, AddOn>;
  charges: ReadonlyMap<string, Charge>;
  subscriptions: readonly Subscription[];
}

export function meterDefinitions(catalog: Catalog): MeterDefinitions {
  const out: MeterDefinitions = Object.create(null);
  for (const meter of catalog.meters.values())
    out[meter.key] = { aggregation: meter.aggregation, dimensions: meter.dimensions };
  return out;
}

const idPattern = /^[A-Za-z0-9._:@-]+$/;
const meterKeyPattern = /^[A-Za-z0-9._:-]+$/;
const currencyPattern = /^[A-Z]{3}$/;

function list(problems: Problems, value: unknown, field: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    problems.add(field, 'type', `${field} must be an array`);
    return [];
  }
  return value;
}

function object(problems: Problems, value: unknown, field: string, known?: readonly string[]): Record<string, unknown> {
  if (!isPlainObject(value)) {
    problems.add(field, 'type', `${field} must be an object`);
    return {};
  }
  for (const key of Object.keys(value))
    if (hostileKeys.has(key)) problems.add(`${field}.${key}`, 'hostile_key', `${field} may not have the key ${key}`);
  if (known !== undefined) refuseUnknownFields(problems, value, field, known);
  return value;
}

function parseCreditUnit(problems: Problems, raw: unknown, at: string): CreditUnit | undefined {
  const o = object(problems, raw, at, catalogFields.creditUnit);
  const id = readString(problems, o.id, `${at}.id`, { max: 64, pattern: idPattern });
  const name = readString(problems, o.name, `${at}.name`, { max: 128 });
  const internalName = readString(problems, o.internal_name ?? o.name, `${at}.internal_name`, { max: 128 });
  let fiat: CreditUnit['fiat'];
  if (o.fiat !== undefined) {
    const f = object(problems, o.fiat, `${at}.fiat`, catalogFields.fiat);
    const currency = readString(problems, f.currency, `${at}.fiat.currency`, { pattern: currencyPattern });
    const value = readDecimalText(problems, f.value, `${at}.fiat.value`, { positive: true });
    if (currency && value) fiat = { currency, value: money(value) };
  }
  const precision = o.precision ?? 2;
  if (!Number.isInteger(precision) || (precision as number) < 0 || (precision as number) > 9) {
    problems.add(`${at}.precision`, 'range', `${at}.precision must be an integer 0–9`);
  }
  const allowed =
    o.allowed_negative_balance === undefined || o.allowed_negative_balance === null
      ? undefined
      : readDecimalText(problems, o.allowed_negative_balance, `${at}.allowed_negative_balance`);
  if (o.archived !== undefined && typeof o.archived !== 'boolean')
    problems.add(`${at}.archived`, 'type', `${at}.archived must be a boolean`);
  const lowThresholds: Decimal[] = [];
  let expiringWithin: LeadTime | undefined;
  if (o.notices !== undefined) {
    const n = object(problems, o.notices, `${at}.notices`, catalogFields.creditUnitNotices);
    const low = list(problems, n.low, `${at}.notices.low`);
    if (low.length > lowThresholdsMax)
      problems.add(
        `${at}.notices.low`,
        'too_many',
        `${at}.notices.low may list at most ${lowThresholdsMax} thresholds`,
      );
    low.slice(0, lowThresholdsMax).forEach((t, i) => {
      const text = readDecimalText(problems, t, `${at}.notices.low[${i}]`);
      if (text !== undefined) lowThresholds.push(money(text));
    });
    if (n.expiring_within !== undefined) {
      const ms = typeof n.expiring_within === 'string' ? parseLeadTime(n.expiring_within) : undefined;
      if (ms === undefined)
        problems.add(
          `${at}.notices.expiring_within`,
          'format',
          `${at}.notices.expiring_within must be an ISO-8601 lead time in days, hours or minutes (P7D, PT12H), at most P366D`,
        );
      else expiringWithin = { text: n.expiring_within as string, ms };
    }
  }
  const previousNames = parseNameHistory(problems, o.previous_names, `${at}.previous_names`);
  if (!id || !name || !internalName) return undefined;
  return {
    id,
    name,
    internalName,
    fiat,
    precision: precision as number,
    allowedNegativeBalance: allowed === undefined ? undefined : money(allowed),
    archived: o.archived === true,
    lowThresholds,
    expiringWithin,
    previousNames,
  };
}

function parseMeter(problems: Problems, raw: unknown, at: string): Meter | undefined {
  const o = object(problems, raw, at, catalogFields.meter);
  const key = readString(problems, o.key, `${at}.key`, { max: 128, pattern: meterKeyPattern });
  const name = readString(problems, o.name ?? o.key, `${at}.name`, { max: 128 });
  const unit = o.unit === undefined ? {} : object(problems, o.unit, `${at}.unit`, catalogFields.meterUnit);
  const unitSingular = readString(problems, unit.singular ?? 'unit', `${at}.unit.singular`, { max: 64 });
  const unitPlural = readString(problems, unit.plural ?? 'units', `${at}.unit.plural`, { max: 64 });
  const aggregation = o.aggregation ?? 'sum';
  if (aggregation !== 'sum' && aggregation !== 'count' && aggregation !== 'max') {
    problems.add(`${at}.aggregation`, 'enum', `${at}.aggregation must be sum, count or max`);
  }
  const dimensions: string[] = [];
  list(problems, o.dimensions, `${at}.dimensions`).forEach((d, i) => {
    const dimension = readString(problems, d, `${at}.dimensions[${i}]`, { max: 64, pattern: /^[A-Za-z0-9_.-]+$/ });
    if (dimension === undefined) return;
    if (hostileKeys.has(dimension))
      problems.add(`${at}.dimensions[${i}]`, 'hostile_key', `dimension key ${dimension} is not allowed`);
    else if (dimensions.includes(dimension))
      problems.add(`${at}.dimensions[${i}]`, 'duplicate', `dimension ${dimension} is declared twice`);
    else dimensions.push(dimension);
  });
  if (dimensions.length > 16) problems.add(`${at}.dimensions`, 'too_many', 'a meter declares at most 16 dimensions');
  const events = parseEventMapping(problems, o, at, aggregation as Aggregation, dimensions);
  if (!key || !name || !unitSingular || !unitPlural) return undefined;
  return {
    key,
    name,
    unitSingular,
    unitPlural,
    aggregation: aggregation as Aggregation,
    dimensions: dimensions.sort(),
    events,
  };
}

function parseTiers(problems: Problems, raw: unknown, at: string): PriceTier[] | undefined {
  if (!Array.isArray(raw) || raw.length === 0) {
    problems.add(at, 'required', `${at} must list at least one tier, the last with "up_to": null`);
    return undefined;
  }
  if (raw.length > priceTiersMax) {
    problems.add(at, 'too_many', `${at} may list at most ${priceTiersMax} tiers`);
    return undefined;
  }
  const tiers: PriceTier[] = [];
  let ok = true;
  raw.forEach((t, i) => {
    const tat = `${at}[${i}]`;
    const o = object(problems, t, tat, catalogFields.tier);
    const last = i === raw.length - 1;
    let upTo: Decimal | undefined;
    if (o.up_to === null || o.up_to === undefined) {
      if (!last) {
        problems.add(`${tat}.up_to`, 'required', `${tat}.up_to is required: only the last tier is open-ended`);
        ok = false;
      }
    } else {
      const text = readDecimalText(problems, o.up_to, `${tat}.up_to`, { positive: true });
      if (text === undefined) ok = false;
      else if (last) {
        problems.add(
          `${tat}.up_to`,
          'range',
          `${tat}.up_to must be null: the last tier is open-ended, so no usage goes unpriced`,
        );
        ok = false;
      } else {
        upTo = money(text);
        const previous = tiers[i - 1]?.upTo;
        if (previous !== undefined && !upTo.greaterThan(previous)) {
          problems.add(
            `${tat}.up_to`,
            'order',
            `${tat}.up_to must be above the previous tier's up_to (${previous.toFixed()})`,
          );
          ok = false;
        }
      }
    }
    const amount = readDecimalText(problems, o.amount, `${tat}.amount`);
    const per = o.per === undefined ? '1' : readDecimalText(problems, o.per, `${tat}.per`, { positive: true });
    if (amount === undefined || per === undefined) ok = false;
    else tiers.push({ upTo, amount: money(amount), per: money(per) });
  });
  return ok ? tiers : undefined;
}

function parsePrice(problems: Problems, raw: unknown, at: string): Price | undefined {
  const o = object(problems, raw, at);
  const fields =
    o.model === 'graduated'
      ? catalogFields.graduatedPrice
      : o.model === 'package'
        ? catalogFields.packagePrice
        : o.model === 'unit'
          ? catalogFields.unitPrice
          : [...new Set([...catalogFields.unitPrice, ...catalogFields.packagePrice, ...catalogFields.graduatedPrice])];
  // A price's fields depend on its model: `size` on a unit price is as much a mistake as a typo. Without a known
  // model, any price field passes here (the model itself is reported), and a typo of `model` is named.
  refuseUnknownFields(problems, o, at, fields);
  if (o.model === 'graduated') {
    const tiers = parseTiers(problems, o.tiers, `${at}.tiers`);
    return tiers === undefined ? undefined : { model: 'graduated', tiers };
  }
  const amount = readDecimalText(problems, o.amount, `${at}.amount`);
  if (o.model === 'unit') return amount === undefined ? undefined : { model: 'unit', amount: money(amount) };
  if (o.model === 'package') {
    const size = readDecimalText(problems, o.size, `${at}.size`, { positive: true });
    const rounding = o.rounding ?? 'prorate';
    if (rounding !== 'prorate' && rounding !== 'up')
      problems.add(`${at}.rounding`, 'enum', `${at}.rounding must be prorate or up`);
    if (amount === undefined || size === undefined) return undefined;
    return { model: 'package', amount: money(amount), size: money(size), rounding: rounding as 'prorate' | 'up' };
  }
  problems.add(`${at}.model`, 'enum', `${at}.model must be unit, package or graduated`);
  return undefined;
}

function parseRateRow(
  problems: Problems,
  raw: unknown,
  at: string,
  meters: Map<string, Meter>,
  units: Map<string, CreditUnit>,
): RateRow | undefined {
  const o = object(problems, raw, at, catalogFields.rateRow);
  const meterKey = readString(problems, o.meter, `${at}.meter`, { max: 128 });
  const unit = readString(problems, o.unit, `${at}.unit`, { max: 64 });
  const meter = meterKey === undefined ? undefined : meters.get(meterKey);
  if (meterKey !== undefined && meter === undefined)
    problems.add(`${at}.meter`, 'unknown', `meter ${meterKey} is not defined`);
  if (unit !== undefined && !units.has(unit))
    problems.add(`${at}.unit`, 'unknown', `credit unit ${unit} is not defined`);
  const match: Record<string, string> = Object.create(null);
  const rawMatch = o.match === undefined ? {} : object(problems, o.match, `${at}.match`);
  for (const [key, value] of Object.entries(rawMatch)) {
    if (hostileKeys.has(key)) continue;
    if (meter && !meter.dimensions.includes(key))
      problems.add(`${at}.match.${key}`, 'unknown', `meter ${meter.key} declares no dimension ${key}`);
    const text = readString(problems, value, `${at}.match.${key}`, { max: 128 });
    if (text !== undefined) match[key] = text;
  }
  const price = parsePrice(problems, o.price, `${at}.price`);
  // Tiers count a period's cumulative quantity; a max meter's quantities do not add up.
  if (price?.model === 'graduated' && meter?.aggregation === 'max')
    problems.add(
      `${at}.price.model`,
      'range',
      `meter ${meter.key} aggregates by max; graduated tiers need a sum or count meter`,
    );
  if (!meterKey || !unit || !price) return undefined;
  return { meter: meterKey, match, unit, price };
}

/** Rows with the same meter and the same match would make "most specific wins" ambiguous. */
function rowIdentity(row: RateRow): string {
  const keys = Object.keys(row.match).sort();
  return JSON.stringify([row.meter, keys.map((k) => [k, row.match[k]])]);
}

export interface ParseOptions {
  /**
   * 'refuse' (input: files, the admin API, `catalog apply`) or 'ignore': a revision stored before unknown fields
   * were refused was valid when written, and must still load.
   */
  unknownFields?: 'refuse' | 'ignore';
}

/** A revision read back from the store (see ParseOptions.unknownFields). */
export function parseStoredCatalog(raw: unknown): Catalog {
  return parseCatalog(raw, { unknownFields: 'ignore' });
}

export function parseCatalog(raw: unknown, options: ParseOptions = {}): Catalog {
  const problems = new Problems();
  const root = object(problems, raw, 'catalog');
  refuseUnknownFields(problems, root, '', catalogFields.catalog);

  const creditUnits = new Map<string, CreditUnit>();
  list(problems, root.credit_units, 'credit_units').forEach((u, i) => {
    const unit = parseCreditUnit(problems, u, `credit_units[${i}]`);
    if (!unit) return;
    if (creditUnits.has(unit.id))
      problems.add(`credit_units[${i}].id`, 'duplicate', `credit unit ${unit.id} is defined twice`);
    creditUnits.set(unit.id, unit);
  });

  const meters = new Map<string, Meter>();
  list(problems, root.meters, 'meters').forEach((m, i) => {
    const meter = parseMeter(problems, m, `meters[${i}]`);
    if (!meter) return;
    if (meters.has(meter.key)) problems.add(`meters[${i}].key`, 'duplicate', `meter ${meter.key} is defined twice`);
    meters.set(meter.key, meter);
  });

  const rateCard: RateCardVersion[] = [];
  const card =
    root.rate_card === undefined ? {} : object(problems, root.rate_card, 'rate_card', catalogFields.rateCard);
  list(problems, card.versions, 'rate_card.versions').forEach((v, i) => {
    const at = `rate_card.versions[${i}]`;
    const o = object(problems, v, at, catalogFields.rateCardVersion);
    const version = readString(problems, o.version, `${at}.version`, { max: 64, pattern: idPattern });
    const effectiveFromMs = readInstant(problems, o.effective_from, `${at}.effective_from`);
    // Usage is aggregated per minute; a version starting mid-minute could not price that minute's two halves apart.
    if (effectiveFromMs !== undefined && effectiveFromMs % 60_000 !== 0)
      problems.add(`${at}.effective_from`, 'alignment', `${at}.effective_from must fall on a whole minute`);
    const rows: RateRow[] = [];
    const seen = new Set<string>();
    list(problems, o.rows, `${at}.rows`).forEach((r, j) => {
      const row = parseRateRow(problems, r, `${at}.rows[${j}]`, meters, creditUnits);
      if (!row) return;
      const identity = rowIdentity(row);
      if (seen.has(identity)) problems.add(`${at}.rows[${j}]`, 'duplicate', 'another row has the same meter and match');
      seen.add(identity);
      rows.push(row);
    });
    if (version !== undefined && effectiveFromMs !== undefined) rateCard.push({ version, effectiveFromMs, rows });
  });
  rateCard.sort((a, b) => a.effectiveFromMs - b.effectiveFromMs);
  for (let i = 1; i < rateCard.length; i++) {
    if (rateCard[i]!.effectiveFromMs === rateCard[i - 1]!.effectiveFromMs) {
      problems.add(
        'rate_card.versions',
        'duplicate',
        `two versions take effect at the same instant (${rateCard[i]!.version})`,
      );
    }
    if (rateCard.findIndex((v) => v.version === rateCard[i]!.version) !== i) {
      problems.add('rate_card.versions', 'duplicate', `version ${rateCard[i]!.version} is defined twice`);
    }
  }

  const packages = new Map<string, CreditPackage>();
  list(problems, root.packages, 'packages').forEach((p, i) => {
    const at = `packages[${i}]`;
    const o = object(problems, p, at, catalogFields.package);
    const id = readString(problems, o.id, `${at}.id`, { max: 64, pattern: idPattern });
    const name = readString(problems, o.name ?? o.id, `${at}.name`, { max: 128 });
    const price = object(problems, o.price, `${at}.price`, catalogFields.money);
    const currency = readString(problems, price.currency, `${at}.price.currency`, { pattern: currencyPattern });
    const amount = readDecimalText(problems, price.amount, `${at}.price.amount`);
    const credits = readDecimalText(problems, o.credits, `${at}.credits`, { positive: true });
    const unit = readString(problems, o.unit, `${at}.unit`, { max: 64 });
    if (unit !== undefined && !creditUnits.has(unit))
      problems.add(`${at}.unit`, 'unknown', `credit unit ${unit} is not defined`);
    if (unit !== undefined && creditUnits.get(unit)?.archived)
      problems.add(`${at}.unit`, 'archived', `credit unit ${unit} is archived`);
    if (!id || !name || !currency || !amount || !credits || !unit) return;
    if (packages.has(id)) problems.add(`${at}.id`, 'duplicate', `package ${id} is defined twice`);
    packages.set(id, { id, name, price: { currency, amount: money(amount) }, credits: money(credits), unit });
  });

  const plans = new Map<string, Plan>();
  list(problems, root.plans, 'plans').forEach((p, i) => {
    const plan = parsePlan(problems, p, `plans[${i}]`, creditUnits);
    if (!plan) return;
    if (plans.has(plan.id)) problems.add(`plans[${i}].id`, 'duplicate', `plan ${plan.id} is defined twice`);
    plans.set(plan.id, plan);
  });
  const addOns = new Map<string, AddOn>();
  list(problems, root.add_ons, 'add_ons').forEach((a, i) => {
    const addOn = parseAddOn(problems, a, `add_ons[${i}]`, creditUnits);
    if (!addOn) return;
    if (addOns.has(addOn.id)) problems.add(`add_ons[${i}].id`, 'duplicate', `add-on ${addOn.id} is defined twice`);
    addOns.set(addOn.id, addOn);
  });
  const charges = new Map<string, Charge>();
  list(problems, root.charges, 'charges').forEach((c, i) => {
    const charge = parseCharge(problems, c, `charges[${i}]`, creditUnits);
    if (!charge) return;
    if (charges.has(charge.id)) problems.add(`charges[${i}].id`, 'duplicate', `charge ${charge.id} is defined twice`);
    charges.set(charge.id, charge);
  });
  const subscriptions: Subscription[] = [];
  const subscriptionIds = new Set<string>();
  list(problems, root.subscriptions, 'subscriptions').forEach((s, i) => {
    const subscription = parseSubscription(problems, s, `subscriptions[${i}]`, plans, { addOns, charges });
    if (!subscription) return;
    // A Set, not a scan of the list: catalogs hold one subscription per customer (100,000s).
    if (subscriptionIds.has(subscription.id))
      problems.add(`subscriptions[${i}].id`, 'duplicate', `subscription ${subscription.id} is defined twice`);
    subscriptionIds.add(subscription.id);
    subscriptions.push(subscription);
  });
  refuseNewGrantsOnArchivedUnits(problems, plans, subscriptions);

  const found =
    options.unknownFields === 'ignore' ? problems.list.filter((p) => p.code !== 'unknown_field') : problems.list;
  if (found.length > 0)
    throw new DrawdownError('catalog_invalid', `catalog has ${found.length} problem(s)`, {
      problems: found,
    });
  return { creditUnits, meters, rateCard, packages, plans, addOns, charges, subscriptions };
}

export function loadCatalogFile(path: string): Catalog {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new DrawdownError('catalog_invalid', `cannot read catalog file ${path}: ${(cause as Error).message}`, {
      cause,
    });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new DrawdownError('catalog_invalid', `catalog file ${path} is not valid JSON: ${(cause as Error).message}`, {
      cause,
    });
  }
  return parseCatalog(raw);
}
