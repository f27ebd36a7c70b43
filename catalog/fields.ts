/**
 * The fields each catalog object may carry, their one home: the parsers
 * (model.ts, plans.ts) refuse any other with 422 `catalog_invalid`, code
 * `unknown_field`, naming it; test/catalog-fields.test.ts tries a
 * misspelling of each. Maps keyed by data (a rate row's `match`, a
 * subscription's `overrides`) are checked against the meter or plan instead.
 */
export const catalogFields = {
  catalog: ['credit_units', 'meters', 'rate_card', 'packages', 'plans', 'subscriptions'],
  creditUnit: ['id', 'name', 'internal_name', 'fiat', 'precision', 'allowed_negative_balance', 'archived', 'notices'],
  creditUnitNotices: ['low'],
  fiat: ['currency', 'value'],
  meter: ['key', 'name', 'unit', 'aggregation', 'dimensions', 'archived', 'event_type', 'value_property', 'group_by'],
  meterUnit: ['singular', 'plural'],
  rateCard: ['versions'],
  rateCardVersion: ['version', 'effective_from', 'rows'],
  rateRow: ['meter', 'match', 'unit', 'price'],
  unitPrice: ['model', 'amount'],
  packagePrice: ['model', 'amount', 'size', 'rounding'],
  graduatedPrice: ['model', 'tiers'],
  tier: ['up_to', 'amount', 'per'],
  package: ['id', 'name', 'price', 'credits', 'unit'],
  money: ['currency', 'amount'],
  plan: ['id', 'name', 'billing', 'versions'],
  planVersion: ['version', 'grants', 'overage'],
  grant: ['id', 'unit', 'quantity', 'frequency', 'rollover'],
  overage: ['unit', 'price_per_credit'],
  rolloverNone: ['kind'],
  rolloverTimeLimited: ['kind', 'duration'],
  rolloverCapped: ['kind', 'percent', 'maximum'],
  subscription: ['id', 'customer', 'plan', 'plan_version', 'start', 'billing_anchor', 'end', 'overrides', 'changes'],
  subscriptionChange: ['effective_from', 'plan_version', 'overrides'],
  grantOverride: ['quantity', 'frequency', 'rollover'],
} as const;
