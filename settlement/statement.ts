/**
 * Per-customer statements of closed billing terms (SPEC §5: settlement runs
 * "to close a billing period"). Runs are global windows; a subscription's
 * billing term is closed by the run whose window contains the term's end.
 * A statement is computed from the ledger and the catalog, never stored:
 * the ledger is the record, so a statement always agrees with it.
 *
 * Which entries belong to a term [start, end): those effective in it, except
 * that expiries effective exactly at a term boundary belong to the term that
 * ends there (unused credits of a term expire at its end — the first thing
 * that happens at that instant, before the next term's grants). So each
 * term's closing balance is the next term's opening balance.
 */
import type { Decimal } from 'decimal.js';
import type { Catalog } from '../catalog/model.js';
import type { Store } from '../shared/clickhouse/store.js';
import { formatAmount, money, parseStoredDecimal } from '../shared/money.js';
import { termsAt, termStart, type Plan, type Subscription } from '../catalog/plans.js';
import { sqlString, sqlStringList, sqlUInt } from '../shared/sql.js';
import { periodIndexAt } from '../catalog/periods.js';
import { queryChunks } from './ledger.js';
import { outstandingAsOf, outstandingJson, type OutstandingLine } from './unpriced.js';
import { overagePricesAt } from './credit/schedule.js';
import { namesFor, type UnitNames } from '../catalog/names.js';
import type { GrantSource } from './ledger.js';

/** Credits granted in a term by one plan, add-on or charge. */
export interface GrantLine {
  source: GrantSource;
  /** The plan, add-on or charge id; undefined for grants posted before ids were recorded. */
  id: string | undefined;
  granted: Decimal;
}

/** One billing term of one subscription. */
export interface Term {
  customer: string;
  subscription: string;
  plan: string;
  planVersion: number;
  startSec: number;
  endSec: number;
}

/** A credit unit's movement over a term; amounts are credits, exact. */
export interface UnitStatement {
  opening: Decimal;
  granted: Decimal;
  purchased: Decimal;
  /** Usage plus adjustments (late usage), as a positive amount. */
  used: Decimal;
  expired: Decimal;
  /** Credits used past the balance and billed at the plan's overage price. */
  overage: Decimal;
  /** overage × the price per credit of the terms in force when it was posted, per currency. */
  overageMoney: Map<string, Decimal>;
  /** Credits still in blocks at the term's end: what the next term starts with. */
  carried: Decimal;
  /** opening + granted + purchased − used − expired + overage. */
  closing: Decimal;
  /** `granted` by who granted it: the plan, each add-on, each charge. */
  grants: GrantLine[];
  /** The unit's names as of the subscription's start (catalog/names.ts). */
  names: UnitNames | undefined;
}

export interface Statement extends Term {
  /** True once settlement has passed the term's end; late usage then lands in a later term. */
  final: boolean;
  units: Map<string, UnitStatement>;
  /**
   * Usage of the term (its first minute in the term) that no rate prices yet, outstanding as of the settled time:
   * not in any figure above until a run bills it, which posts it in a later term, like late usage.
   */
  unpriced: OutstandingLine[];
}

/** Terms in one run's report are bounded: older ones are read with GET /v1/customers/{id}/statements. */
export const runReportTermsMax = 12;
export const statementsLimitMax = 120;

/** A statement query names each customer three times (IN list, two lookups) and two instants. */
const termChars = (term: Term): number => 3 * (term.customer.length + 4) + 2 * 12;

/**
 * The terms of a subscription that end in [loMs, hiMs), newest first, at
 * most `limit`. Terms count from the billing anchor by the plan's billing
 * frequency (month-end clamped); the first starts at the subscription start
 * and the last ends at its end.
 */
export function termsEndingIn(
  subscription: Subscription,
  plan: Plan,
  loMs: number,
  hiMs: number,
  limit: number,
): Term[] {
  const out: Term[] = [];
  const lastMs = Math.min(hiMs, subscription.endMs === undefined ? hiMs : subscription.endMs + 1);
  if (lastMs <= subscription.startMs + 1) return out;
  const firstIndex = periodIndexAt(subscription.anchorMs, plan.billing, subscription.startMs);
  // The term that contains the last instant that may be an end, minus one.
  for (
    let index = periodIndexAt(subscription.anchorMs, plan.billing, lastMs - 2);
    index >= firstIndex && out.length < limit;
    index--
  ) {
    const startMs = Math.max(subscription.startMs, termStart(plan, subscription.anchorMs, index));
    const nextMs = termStart(plan, subscription.anchorMs, index + 1);
    const endMs = subscription.endMs === undefined ? nextMs : Math.min(nextMs, subscription.endMs);
    if (endMs >= hiMs) continue;
    if (endMs < loMs) break;
    if (endMs <= startMs) continue;
    out.push({
      customer: subscription.customer,
      subscription: subscription.id,
      plan: plan.id,
      planVersion: termsAt(subscription, startMs).planVersion,
      startSec: Math.floor(startMs / 1000),
      endSec: Math.floor(endMs / 1000),
    });
  }
  return out;
}

/** Every subscription's terms that end in [loMs, hiMs), at most `perSubscription` each (the newest). */
export function closedTerms(
  catalog: Catalog,
  loMs: number,
  hiMs: number,
  perSubscription: number,
  customer?: string,
): Term[] {
  const out: Term[] = [];
  for (const subscription of catalog.subscriptions) {
    if (customer !== undefined && subscription.customer !== customer) continue;
    const plan = catalog.plans.get(subscription.plan);
    if (plan === undefined || subscription.startMs >= hiMs) continue;
    out.push(...termsEndingIn(subscription, plan, loMs, hiMs, perSubscription));
  }
  return out;
}

interface Sums {
  byKind: Map<string, Decimal>;
  opening: Decimal;
  /** −(entries on the negative balance) up to the term's end. */
  debt: Decimal;
  /** Overage credits per run id, to price each by the terms of its run. */
  overageByRun: Map<string, Decimal>;
  /** Granted credits per `${source}\u0000${origin}`. */
  grants: Map<string, Decimal>;
}

/**
 * Ledger sums per (term, unit): one query per round and chunk of customers.
 * A round takes at most one term per customer, so each customer's term
 * bounds are a lookup (`transform`) in the query itself; a customer with
 * several terms to state takes several rounds.
 */
async function termSums(store: Store, terms: readonly Term[]): Promise<Map<Term, Map<string, Sums>>> {
  const out = new Map<Term, Map<string, Sums>>();
  const rounds: Term[][] = [];
  const seen = new Map<string, number>();
  for (const term of terms) {
    const round = seen.get(term.customer) ?? 0;
    seen.set(term.customer, round + 1);
    (rounds[round] ??= []).push(term);
  }
  for (const round of rounds) {
    for (const chunk of queryChunks(round, termChars)) {
      const byCustomer = new Map(chunk.map((t) => [t.customer, t]));
      const customers = sqlStringList(chunk.map((t) => t.customer));
      const keys = `[${chunk.map((t) => sqlString(t.customer)).join(', ')}]`;
      const starts = `[${chunk.map((t) => sqlUInt(t.startSec)).join(', ')}]`;
      const ends = `[${chunk.map((t) => sqlUInt(t.endSec)).join(', ')}]`;
      // t: the instant an entry counts at — an expiry one second earlier, so one at a term's end is the ending term's.
      const rows = await store.query(
        `SELECT who, what, how, debt, run, t < transform(who, ${keys}, ${starts}, toUInt32(0)) AS before, sum(amount_),
           granted_by, granted_from
         FROM (
           SELECT entry_id, any(customer) AS who, any(unit) AS what, any(kind) AS how, any(amount) AS amount_,
             any(block_id) = '' AS debt, if(how = 'overage', any(run_id), '') AS run,
             if(how = 'grant', any(grant_source), '') AS granted_by, if(how = 'grant', any(grant_origin), '') AS granted_from,
             toInt64(toUnixTimestamp(any(effective_at))) - if(how = 'expiry', 1, 0) AS t
           FROM ledger_entries WHERE customer IN ${customers} GROUP BY entry_id
         )
         WHERE t < transform(who, ${keys}, ${ends}, toUInt32(0))
         GROUP BY who, what, how, debt, run, before, granted_by, granted_from`,
      );
      for (const [customer, unit, kind, debt, run, before, sum, grantedBy, grantedFrom] of rows) {
        const term = byCustomer.get(customer!)!;
        const units = out.get(term) ?? new Map<string, Sums>();
        out.set(term, units);
        let s = units.get(unit!);
        if (s === undefined)
          units.set(
            unit!,
            (s = { byKind: new Map(), opening: money(0), debt: money(0), overageByRun: new Map(), grants: new Map() }),
          );
        const amount = parseStoredDecimal(sum!);
        if (debt === '1') s.debt = s.debt.minus(amount);
        if (before === '1') {
          s.opening = s.opening.plus(amount);
          continue;
        }
        s.byKind.set(kind!, (s.byKind.get(kind!) ?? money(0)).plus(amount));
        if (kind === 'overage') s.overageByRun.set(run!, (s.overageByRun.get(run!) ?? money(0)).plus(amount));
        if (kind === 'grant') {
          // Grants posted before sources were recorded were all a plan's.
          const key = `${grantedBy || 'plan'}\u0000${grantedFrom!}`;
          s.grants.set(key, (s.grants.get(key) ?? money(0)).plus(amount));
        }
      }
    }
  }
  return out;
}

/**
 * The overage price settlement applied to a customer's unit in the run
 * window [fromMs, untilMs): the terms in force at the window start of the
 * last of the customer's subscriptions that bills overage in that unit —
 * the rule of credit/schedule.ts, for one customer.
 */
function overagePrice(
  subscriptions: readonly Subscription[],
  catalog: Catalog,
  unit: string,
  fromMs: number,
  untilMs: number,
): { pricePerCredit: Decimal; currency: string } | undefined {
  let price: { pricePerCredit: Decimal; currency: string } | undefined;
  for (const subscription of subscriptions) {
    if (subscription.startMs >= untilMs || (subscription.endMs !== undefined && subscription.endMs <= fromMs)) continue;
    price = overagePricesAt(catalog, subscription, fromMs).get(unit) ?? price;
  }
  return price;
}

/**
 * Statements of these terms from the ledger; `settledUntilSec` decides which are final. `outstanding`: the
 * unpriced usage outstanding at `settledUntilSec` (a run passes what it leaves; read here otherwise).
 */
export async function statementsOf(
  store: Store,
  catalog: Catalog,
  terms: readonly Term[],
  settledUntilSec: number,
  outstanding?: readonly OutstandingLine[],
): Promise<Statement[]> {
  const sums = await termSums(store, terms);
  const unpriced =
    outstanding ?? (await outstandingAsOf(store, settledUntilSec, [...new Set(terms.map((t) => t.customer))]));
  const unpricedOf = new Map<string, OutstandingLine[]>();
  for (const line of unpriced)
    (unpricedOf.get(line.customer) ?? unpricedOf.set(line.customer, []).get(line.customer)!).push(line);
  const subscriptionsOf = new Map<string, Subscription[]>();
  const wanted = new Set(terms.map((t) => t.customer));
  for (const s of catalog.subscriptions)
    if (wanted.has(s.customer))
      (subscriptionsOf.get(s.customer) ?? subscriptionsOf.set(s.customer, []).get(s.customer)!).push(s);
  return terms.map((term) => {
    const units = new Map<string, UnitStatement>();
    const version = catalog.plans.get(term.plan)?.versions[term.planVersion - 1];
    const planUnits = new Set([
      ...(version?.grants.map((g) => g.unit) ?? []),
      ...(version?.overage ? [version.overage.unit] : []),
    ]);
    const found = sums.get(term) ?? new Map<string, Sums>();
    for (const unit of [...new Set([...planUnits, ...found.keys()])].sort()) {
      const s = found.get(unit);
      const kind = (k: string): Decimal => s?.byKind.get(k) ?? money(0);
      const moved = s === undefined ? money(0) : [...s.byKind.values()].reduce((a, b) => a.plus(b), money(0));
      const opening = s?.opening ?? money(0);
      // A unit the plan does not grant, untouched in the term and empty: nothing to state.
      if (!planUnits.has(unit) && (s === undefined || (s.byKind.size === 0 && opening.isZero()))) continue;
      const overageMoney = new Map<string, Decimal>();
      for (const [runId, credits] of s?.overageByRun ?? []) {
        // Run ids are run:<from>:<until> (epoch s): the window whose terms priced the overage.
        const [, from, until] = runId.split(':');
        const price = overagePrice(
          subscriptionsOf.get(term.customer) ?? [],
          catalog,
          unit,
          Number(from) * 1000,
          Number(until) * 1000,
        );
        if (price !== undefined)
          overageMoney.set(
            price.currency,
            (overageMoney.get(price.currency) ?? money(0)).plus(credits.times(price.pricePerCredit)),
          );
      }
      const closing = opening.plus(moved);
      const subscription = subscriptionsOf.get(term.customer)?.find((x) => x.id === term.subscription);
      const grants = [...(s?.grants ?? [])]
        .map(([key, granted]) => {
          const [source, id] = key.split('\u0000') as [GrantSource, string];
          return { source, id: id === '' ? undefined : id, granted };
        })
        .sort(
          (a, b) => grantSourceOrder[a.source] - grantSourceOrder[b.source] || ((a.id ?? '') < (b.id ?? '') ? -1 : 1),
        );
      units.set(unit, {
        opening,
        granted: kind('grant'),
        purchased: kind('purchase'),
        used: kind('usage').plus(kind('adjustment')).negated(),
        expired: kind('expiry').negated(),
        overage: kind('overage'),
        overageMoney,
        carried: closing.plus(s?.debt ?? money(0)),
        closing,
        grants,
        names: subscription === undefined ? undefined : namesFor(catalog, unit, { subscription }),
      });
    }
    const inTerm = (unpricedOf.get(term.customer) ?? []).filter(
      (line) => line.sinceSec >= term.startSec && line.sinceSec < term.endSec,
    );
    return { ...term, final: settledUntilSec > term.endSec, units, unpriced: inTerm };
  });
}

/** A customer's terms closed by `nowMs`, newest first, at most `limit`. */
export async function customerStatements(
  store: Store,
  catalog: Catalog,
  customer: string,
  nowMs: number,
  limit: number,
  settledUntilSec: number,
): Promise<Statement[]> {
  const terms = closedTerms(catalog, 0, nowMs + 1, limit, customer)
    .sort(
      (a, b) =>
        b.endSec - a.endSec ||
        b.startSec - a.startSec ||
        (a.subscription < b.subscription ? -1 : a.subscription > b.subscription ? 1 : 0),
    )
    .slice(0, limit);
  return statementsOf(store, catalog, terms, settledUntilSec);
}

const grantSourceOrder: Record<GrantSource, number> = { plan: 0, add_on: 1, charge: 2 };

/** As the API, the run report and the CLI show it (snake_case, instants as ISO-8601, decimals as text). */
export function statementJson(s: Statement): Record<string, unknown> {
  return {
    subscription: s.subscription,
    plan: s.plan,
    plan_version: s.planVersion,
    term_start: new Date(s.startSec * 1000).toISOString(),
    term_end: new Date(s.endSec * 1000).toISOString(),
    final: s.final,
    units: Object.fromEntries(
      [...s.units].map(([unit, u]) => [
        unit,
        {
          name: u.names?.name ?? null,
          internal_name: u.names?.internalName ?? null,
          opening_balance: formatAmount(u.opening),
          granted: formatAmount(u.granted),
          purchased: formatAmount(u.purchased),
          used: formatAmount(u.used),
          expired: formatAmount(u.expired),
          carried: formatAmount(u.carried),
          overage_credits: formatAmount(u.overage),
          overage_money: Object.fromEntries(
            [...u.overageMoney].map(([currency, amount]) => [currency, formatAmount(amount)]),
          ),
          closing_balance: formatAmount(u.closing),
          grants: u.grants.map((g) => ({ source: g.source, id: g.id ?? null, granted: formatAmount(g.granted) })),
        },
      ]),
    ),
    unpriced: s.unpriced.map(outstandingJson),
  };
}
