/**
 * The shapes a grant's rules take in a catalog document — frequency and
 * rollover — shared by plan grants (plans.ts) and add-on and charge grants
 * (add-ons.ts), validated once into typed values.
 */
import { money } from '../shared/money.js';
import { Problems, isPlainObject, readDecimalText, readString, refuseUnknownFields } from '../shared/validate.js';
import { catalogFields } from './fields.js';
import { frequencyRank, parseDuration, type Duration, type Frequency } from './periods.js';
import type { Decimal } from 'decimal.js';

export type BillingFrequency = 'monthly' | 'yearly';

export type Rollover =
  | { kind: 'none' }
  | { kind: 'unlimited' }
  | { kind: 'time_limited'; duration: Duration }
  /** `percent` is 0–100. */
  | { kind: 'capped'; percent: Decimal; maximum: Decimal };

export function parseRollover(problems: Problems, raw: unknown, at: string): Rollover | undefined {
  if (raw === undefined) return { kind: 'none' };
  if (!isPlainObject(raw)) {
    problems.add(at, 'type', `${at} must be an object such as {"kind": "capped", "percent": "50", "maximum": "250"}`);
    return undefined;
  }
  const fields =
    raw.kind === 'none' || raw.kind === 'unlimited'
      ? catalogFields.rolloverNone
      : raw.kind === 'time_limited'
        ? catalogFields.rolloverTimeLimited
        : raw.kind === 'capped'
          ? catalogFields.rolloverCapped
          : [...new Set([...catalogFields.rolloverTimeLimited, ...catalogFields.rolloverCapped])];
  refuseUnknownFields(problems, raw, at, fields);
  switch (raw.kind) {
    case 'none':
    case 'unlimited':
      return { kind: raw.kind };
    case 'time_limited': {
      const duration = typeof raw.duration === 'string' ? parseDuration(raw.duration) : undefined;
      if (duration === undefined)
        problems.add(`${at}.duration`, 'format', `${at}.duration must be an ISO-8601 duration such as P2M or P30D`);
      return duration && { kind: 'time_limited', duration };
    }
    case 'capped': {
      const percent = readDecimalText(problems, raw.percent, `${at}.percent`);
      const maximum = readDecimalText(problems, raw.maximum, `${at}.maximum`);
      if (percent !== undefined && money(percent).greaterThan(100))
        problems.add(`${at}.percent`, 'range', `${at}.percent must be 0–100`);
      return percent !== undefined && maximum !== undefined
        ? { kind: 'capped', percent: money(percent), maximum: money(maximum) }
        : undefined;
    }
    default:
      problems.add(`${at}.kind`, 'enum', `${at}.kind must be none, unlimited, time_limited or capped`);
      return undefined;
  }
}

export function parseFrequency(problems: Problems, raw: unknown, at: string): Frequency | undefined {
  if (raw === 'daily' || raw === 'monthly' || raw === 'yearly') return raw;
  problems.add(at, 'enum', `${at} must be daily, monthly or yearly`);
  return undefined;
}

/** What every grant states, plan, add-on or charge alike: read, each field checked, the unit known. */
export interface GrantTerms {
  unit: string | undefined;
  quantity: string | undefined;
  frequency: Frequency | undefined;
  rollover: Rollover | undefined;
}

/**
 * Reads a recurring grant's terms from `g` (already checked to be an object
 * with only known fields): the unit must exist, and the grant may not be
 * longer than what bills it (`billing`, named in the message as `billedBy`).
 */
export function readGrantTerms(
  problems: Problems,
  g: Record<string, unknown>,
  at: string,
  units: ReadonlyMap<string, unknown>,
  billing: unknown,
  billedBy: string,
): GrantTerms {
  const unit = readString(problems, g.unit, `${at}.unit`, { max: 64 });
  const quantity = readDecimalText(problems, g.quantity, `${at}.quantity`, { positive: true });
  const frequency = parseFrequency(problems, g.frequency, `${at}.frequency`);
  const rollover = parseRollover(problems, g.rollover, `${at}.rollover`);
  if (unit !== undefined && !units.has(unit))
    problems.add(`${at}.unit`, 'unknown', `credit unit ${unit} is not defined`);
  if (
    frequency !== undefined &&
    (billing === 'monthly' || billing === 'yearly') &&
    frequencyRank[frequency] > frequencyRank[billing]
  )
    problems.add(`${at}.frequency`, 'range', `a ${frequency} grant is longer than ${billedBy}`);
  return { unit, quantity, frequency, rollover };
}
