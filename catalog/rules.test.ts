import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseCatalog } from './model.js';
import { catalogPath } from '../test/harness.js';
import { canonicalDocument } from './document.js';
import { transitionProblems } from './rules.js';

const dayMs = 86_400_000;
const nowMs = Date.parse('2026-06-01T00:00:00Z');

function base(): any {
  const doc = JSON.parse(readFileSync(catalogPath, 'utf8'));
  doc.credit_units.push({ id: 'legacy', name: 'Legacy credits' });
  doc.plans = [
    {
      id: 'pro',
      billing: 'monthly',
      versions: [{ version: 1, grants: [{ id: 'g', unit: 'credits', quantity: '100', frequency: 'monthly' }] }],
    },
  ];
  doc.rate_card.versions.push({
    ...doc.rate_card.versions[0],
    version: 'future',
    effective_from: new Date(nowMs + dayMs).toISOString(),
  });
  return doc;
}

function problems(change: (doc: any) => void, settledUntilMs = 0): string[] {
  const before = base();
  const after = base();
  change(after);
  const state = (doc: any) => ({ document: canonicalDocument(doc), catalog: parseCatalog(doc) });
  return transitionProblems(
    state(before),
    { document: after, catalog: parseCatalog(after) },
    { nowMs, settledUntilMs },
  ).map((p) => `${p.field} ${p.code}`);
}

describe('catalog transition rules', () => {
  it('allows what recorded data does not depend on', () => {
    expect(problems((d) => (d.packages = []))).toEqual([]);
    expect(problems((d) => (d.credit_units[1].archived = true))).toEqual([]);
    expect(problems((d) => (d.meters[0].name = 'Renamed'))).toEqual([]);
    // A version not yet in force may still change or go.
    expect(problems((d) => (d.rate_card.versions[1].rows = d.rate_card.versions[1].rows.slice(1)))).toEqual([]);
    expect(problems((d) => d.rate_card.versions.pop())).toEqual([]);
    expect(problems((d) => d.plans[0].versions.push({ version: 2, grants: [] }))).toEqual([]);
  });

  it('refuses changing a plan billing period, removing a plan or a saved version, and removing a version in force', () => {
    expect(problems((d) => (d.plans[0].billing = 'yearly'))).toEqual(['plans[0].billing immutable']);
    expect(problems((d) => (d.plans = []))).toEqual(['plans removed']);
    expect(problems((d) => d.rate_card.versions.splice(0, 1))).toEqual(['rate_card.versions removed']);
  });

  it('counts settled time as in force: a future version is frozen once settlement has passed it', () => {
    const settledUntilMs = nowMs + 2 * dayMs;
    expect(problems((d) => (d.rate_card.versions[1].rows = []), settledUntilMs)).toEqual([
      'rate_card.versions[1] immutable',
    ]);
  });
});

describe('grants never land in settled time', () => {
  const settledUntilMs = nowMs;
  const withSubscription = (doc: any, extra: Record<string, unknown> = {}) => {
    doc.charges = [{ id: 'bonus', grant: { unit: 'credits', quantity: '20' } }];
    doc.subscriptions = [
      { id: 'sub-1', customer: 'acme', plan: 'pro', start: new Date(nowMs - 40 * dayMs).toISOString(), ...extra },
    ];
  };
  /** Problems of moving from a catalog with sub-1 (no charges) to `change` of it. */
  function chargeProblems(change: (doc: any) => void): string[] {
    const before = base();
    withSubscription(before);
    const after = base();
    withSubscription(after);
    change(after);
    return transitionProblems(
      { document: canonicalDocument(before), catalog: parseCatalog(before) },
      { document: after, catalog: parseCatalog(after) },
      { nowMs, settledUntilMs },
    ).map((p) => `${p.field} ${p.code}`);
  }

  it('refuses a charge applied in settled time, or without `at` on a subscription that started there', () => {
    expect(
      chargeProblems(
        (d) =>
          (d.subscriptions[0].charges = [{ id: 'b1', charge: 'bonus', at: new Date(nowMs - dayMs).toISOString() }]),
      ),
    ).toEqual(['subscriptions[0].charges[0].at settled']);
    expect(chargeProblems((d) => (d.subscriptions[0].charges = [{ charge: 'bonus' }]))).toEqual([
      'subscriptions[0].charges[0].at settled',
    ]);
  });

  it('accepts a charge applied at or after the end of the last run', () => {
    expect(
      chargeProblems(
        (d) => (d.subscriptions[0].charges = [{ id: 'b1', charge: 'bonus', at: new Date(nowMs).toISOString() }]),
      ),
    ).toEqual([]);
  });

  it('keeps charges applied before: only new applications are checked', () => {
    const before = base();
    withSubscription(before, {
      charges: [{ id: 'b0', charge: 'bonus', at: new Date(nowMs - 30 * dayMs).toISOString() }],
    });
    const after = structuredClone(before);
    after.subscriptions[0].end = new Date(nowMs + 30 * dayMs).toISOString();
    const found = transitionProblems(
      { document: canonicalDocument(before), catalog: parseCatalog(before) },
      { document: after, catalog: parseCatalog(after) },
      { nowMs, settledUntilMs },
    );
    expect(found).toEqual([]);
  });

  it('refuses a new subscription that starts in settled time, and accepts one that starts after it', () => {
    expect(
      chargeProblems((d) =>
        d.subscriptions.push({
          id: 'sub-2',
          customer: 'beta',
          plan: 'pro',
          start: new Date(nowMs - dayMs).toISOString(),
        }),
      ),
    ).toEqual(['subscriptions[1].start settled']);
    expect(
      chargeProblems((d) =>
        d.subscriptions.push({ id: 'sub-2', customer: 'beta', plan: 'pro', start: new Date(nowMs).toISOString() }),
      ),
    ).toEqual([]);
  });
});
