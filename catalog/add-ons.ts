/**
 * Add-ons and one-time charges (SPEC §4, the rest of the Chargebee credit
 * model): what a subscription can carry besides its plan, validated once
 * into typed values. A recurring add-on's grant is a plan grant in all but
 * its source (versions, overrides, rollover are the plan's machinery); a
 * metered add-on is an overage price and never grants; a charge grants
 * once. Settlement turns them into blocks (settlement/credit/schedule.ts).
 */
import type { Decimal } from 'decimal.js';
import { parseDuration, type Duration, type Frequency } from './periods.js';
import { money } from '../shared/money.js';
import { Problems, isPlainObject, readDecimalText, readString, refuseUnknownFields } from '../shared/validate.js';
import { catalogFields } from './fields.js';
import { parseRollover, readGrantTerms, type BillingFrequency, type Rollover } from './grant-rules.js';

/** An add-on's grant: a plan grant without an id (an add-on grants one unit, so the add-on names it). */
export interface AddOnGrant {
  unit: string;
  quantity: Decimal;
  frequency: Frequency;
  rollover: Rollover;
}

export interface AddOnVersion {
  version: number;
  /** Undefined: this version grants nothing (an add-on may sell something other than credits). */
  grant: AddOnGrant | undefined;
}

export interface AddOn {
  id: string;
  name: string;
  /** `metered`: the overage price for a credit unit, never a grant. `recurring`: may grant, never prices overage. */
  kind: 'recurring' | 'metered';
  billing: BillingFrequency;
  /** Ascending by version; a subscription pins one, as it pins a plan version. Empty for a metered add-on. */
  versions: AddOnVersion[];
  overage: { unit: string; pricePerCredit: Decimal; currency: string } | undefined;
}

export interface ChargeGrant {
  unit: string;
  quantity: Decimal;
  /** The block expires this long after the charge is applied … */
  expiresAfter: Duration | undefined;
  /** … or, instead, follows this rule at the end of the billing term it was applied in (settlement/README.md). */
  rollover: Rollover | undefined;
}

export interface Charge {
  id: string;
  name: string;
  grant: ChargeGrant | undefined;
}

const idPattern = /^[A-Za-z0-9._:@-]{1,128}$/;

function object(problems: Problems, raw: unknown, at: string, fields: readonly string[]): Record<string, unknown> {
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object`);
    return {};
  }
  refuseUnknownFields(problems, raw, at, fields);
  return raw;
}

function parseOverage(
  problems: Problems,
  raw: unknown,
  at: string,
  units: ReadonlyMap<string, { archived: boolean }>,
): AddOn['overage'] {
  const o = object(problems, raw, at, catalogFields.overage);
  const unit = readString(problems, o.unit, `${at}.unit`, { max: 64 });
  const price = object(problems, o.price_per_credit, `${at}.price_per_credit`, catalogFields.money);
  const currency = readString(problems, price.currency, `${at}.price_per_credit.currency`, { pattern: /^[A-Z]{3}$/ });
  const amount = readDecimalText(problems, price.amount, `${at}.price_per_credit.amount`);
  if (unit !== undefined && !units.has(unit))
    problems.add(`${at}.unit`, 'unknown', `credit unit ${unit} is not defined`);
  return unit && currency && amount ? { unit, currency, pricePerCredit: money(amount) } : undefined;
}

export function parseAddOn(
  problems: Problems,
  raw: unknown,
  at: string,
  units: ReadonlyMap<string, { archived: boolean }>,
): AddOn | undefined {
  const o = object(problems, raw, at, catalogFields.addOn);
  const id = readString(problems, o.id, `${at}.id`, { pattern: idPattern });
  const name = readString(problems, o.name ?? o.id, `${at}.name`, { max: 128 });
  const kind = o.kind ?? 'recurring';
  if (kind !== 'recurring' && kind !== 'metered')
    problems.add(`${at}.kind`, 'enum', `${at}.kind must be recurring or metered`);
  const billing = o.billing;
  if (billing !== 'monthly' && billing !== 'yearly')
    problems.add(`${at}.billing`, 'enum', `${at}.billing must be monthly or yearly`);
  let overage: AddOn['overage'];
  if (kind === 'metered') {
    if (o.overage === undefined)
      problems.add(`${at}.overage`, 'required', `${at}.overage is required: a metered add-on is an overage price`);
    else overage = parseOverage(problems, o.overage, `${at}.overage`, units);
  } else if (o.overage !== undefined) {
    problems.add(
      `${at}.overage`,
      'metered',
      `${at}.overage: an add-on with an overage price must be "kind": "metered"`,
    );
  }
  const rawVersions = o.versions === undefined ? [] : Array.isArray(o.versions) ? o.versions : undefined;
  if (rawVersions === undefined) problems.add(`${at}.versions`, 'type', `${at}.versions must be an array`);
  if (kind === 'recurring' && rawVersions?.length === 0)
    problems.add(`${at}.versions`, 'required', `${at}.versions must list at least one version`);
  const versions: AddOnVersion[] = [];
  let grantUnit: string | undefined;
  (rawVersions ?? []).forEach((v, i) => {
    const vat = `${at}.versions[${i}]`;
    const version = object(problems, v, vat, catalogFields.addOnVersion);
    if (version.version !== i + 1)
      problems.add(
        `${vat}.version`,
        'sequence',
        `${vat}.version must be ${i + 1}: versions are numbered 1, 2, … and never removed`,
      );
    if (version.grant === undefined) return versions.push({ version: i + 1, grant: undefined });
    // The overage price is what a metered add-on sells; credits granted against it would be credits sold twice.
    if (kind === 'metered')
      problems.add(
        `${vat}.grant`,
        'metered',
        `${vat}.grant: a metered add-on is the overage price for a credit unit and cannot carry a credit grant`,
      );
    const gat = `${vat}.grant`;
    const g = object(problems, version.grant, gat, catalogFields.addOnGrant);
    const { unit, quantity, frequency, rollover } = readGrantTerms(
      problems,
      g,
      gat,
      units,
      billing,
      `the add-on's ${String(billing)} billing`,
    );
    // As for plan grants: the unit is fixed once saved.
    if (unit !== undefined && grantUnit !== undefined && unit !== grantUnit)
      problems.add(`${gat}.unit`, 'immutable', `add-on ${id} grants ${grantUnit}; its unit cannot change`);
    grantUnit ??= unit;
    versions.push({
      version: i + 1,
      grant:
        unit && quantity && frequency && rollover
          ? { unit, quantity: money(quantity), frequency, rollover }
          : undefined,
    });
  });
  if (!id || !name || (billing !== 'monthly' && billing !== 'yearly') || (kind !== 'recurring' && kind !== 'metered'))
    return undefined;
  return { id, name, kind, billing, versions, overage };
}

export function parseCharge(
  problems: Problems,
  raw: unknown,
  at: string,
  units: ReadonlyMap<string, { archived: boolean }>,
): Charge | undefined {
  const o = object(problems, raw, at, catalogFields.charge);
  const id = readString(problems, o.id, `${at}.id`, { pattern: idPattern });
  const name = readString(problems, o.name ?? o.id, `${at}.name`, { max: 128 });
  let grant: ChargeGrant | undefined;
  if (o.grant !== undefined) {
    const gat = `${at}.grant`;
    const g = object(problems, o.grant, gat, catalogFields.chargeGrant);
    const unit = readString(problems, g.unit, `${gat}.unit`, { max: 64 });
    const quantity = readDecimalText(problems, g.quantity, `${gat}.quantity`, { positive: true });
    let expiresAfter: Duration | undefined;
    if (g.expires_after !== undefined) {
      expiresAfter = typeof g.expires_after === 'string' ? parseDuration(g.expires_after) : undefined;
      if (expiresAfter === undefined)
        problems.add(
          `${gat}.expires_after`,
          'format',
          `${gat}.expires_after must be an ISO-8601 duration such as P60D`,
        );
    }
    const rollover = g.rollover === undefined ? undefined : parseRollover(problems, g.rollover, `${gat}.rollover`);
    // One block, one rule: an expiry after a fixed time, or a rollover at the term end — not both.
    if (g.expires_after !== undefined && g.rollover !== undefined)
      problems.add(`${gat}.rollover`, 'exclusive', `${gat} takes expires_after or rollover, not both`);
    if (unit !== undefined && !units.has(unit))
      problems.add(`${gat}.unit`, 'unknown', `credit unit ${unit} is not defined`);
    if (unit && quantity) grant = { unit, quantity: money(quantity), expiresAfter, rollover };
  }
  if (!id || !name) return undefined;
  return { id, name, grant };
}
