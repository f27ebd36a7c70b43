/**
 * A credit unit's names over time (SPEC §4 "Names"): renaming a unit changes
 * what new subscriptions show; a subscription keeps showing the names in
 * force when it started.
 *
 * The catalog keeps the history on the unit itself: `name` and
 * `internal_name` are the names in force now, and `previous_names` lists the
 * earlier ones, oldest first, each with `until`, the instant it stopped
 * being in force (the rename). The store writes that entry: a write that
 * changes a unit's names appends the old ones with `until` = the write's
 * time (`carryNameHistory`), and a document that leaves `previous_names` out
 * keeps the stored history, so a catalog file need not carry it. Entries
 * are never changed or removed (catalog/rules.ts).
 *
 * `namesFor` is the one place anything shown to a customer — balances,
 * ledger, statements, and notices once they exist — takes a unit's names
 * from.
 */
import type { Subscription } from './plans.js';
import type { CatalogDocument } from './document.js';
import { Problems, isPlainObject, readInstant, readString, refuseUnknownFields } from '../shared/validate.js';
import { catalogFields } from './fields.js';

export interface UnitNames {
  name: string;
  internalName: string;
}

/** What names need of a credit unit (model.ts CreditUnit). */
export interface NamedUnit extends UnitNames {
  previousNames: readonly (UnitNames & { untilMs: number })[];
}

/** What names need of a catalog (model.ts Catalog). */
export interface NamedCatalog {
  creditUnits: ReadonlyMap<string, NamedUnit>;
  subscriptions: readonly Pick<Subscription, 'customer' | 'startMs' | 'endMs'>[];
}

/** Bounds a unit's document; a unit renamed more often than this wants a new unit. */
const nameHistoryMax = 100;

export function parseNameHistory(problems: Problems, raw: unknown, at: string): (UnitNames & { untilMs: number })[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    problems.add(at, 'type', `${at} must be an array`);
    return [];
  }
  if (raw.length > nameHistoryMax) problems.add(at, 'too_many', `${at} may list at most ${nameHistoryMax} names`);
  const out: (UnitNames & { untilMs: number })[] = [];
  raw.slice(0, nameHistoryMax).forEach((entry, i) => {
    const eat = `${at}[${i}]`;
    if (!isPlainObject(entry)) return problems.add(eat, 'type', `${eat} must be an object`);
    refuseUnknownFields(problems, entry, eat, catalogFields.previousName);
    const name = readString(problems, entry.name, `${eat}.name`, { max: 128 });
    const internalName = readString(problems, entry.internal_name ?? entry.name, `${eat}.internal_name`, { max: 128 });
    const untilMs = readInstant(problems, entry.until, `${eat}.until`);
    const previous = out.at(-1)?.untilMs;
    if (untilMs !== undefined && previous !== undefined && untilMs < previous)
      problems.add(`${eat}.until`, 'order', `${eat}.until must not be before the previous name's until`);
    if (name && internalName && untilMs !== undefined) out.push({ name, internalName, untilMs });
  });
  return out;
}

/** The unit's names in force at `atMs`: the first earlier name still in force then, else the current ones. */
export function unitNamesAt(unit: NamedUnit, atMs: number): UnitNames {
  for (const previous of unit.previousNames)
    if (atMs < previous.untilMs) return { name: previous.name, internalName: previous.internalName };
  return { name: unit.name, internalName: unit.internalName };
}

/**
 * The names a customer sees for a unit: as of the start of `subscription`
 * (a statement's), else of the customer's earliest-started subscription in
 * force at `nowMs` (balances and the ledger are per customer, not per
 * subscription), else the current names — a customer with no subscription
 * in force is not an existing subscriber.
 */
export function namesFor(
  catalog: NamedCatalog,
  unitId: string,
  who: { subscription: Pick<Subscription, 'startMs'> } | { customer: string; nowMs: number },
): UnitNames | undefined {
  const unit = catalog.creditUnits.get(unitId);
  if (unit === undefined) return undefined;
  if ('subscription' in who) return unitNamesAt(unit, who.subscription.startMs);
  const current = { name: unit.name, internalName: unit.internalName };
  if (unit.previousNames.length === 0) return current;
  let startMs: number | undefined;
  for (const s of catalog.subscriptions)
    if (
      s.customer === who.customer &&
      s.startMs <= who.nowMs &&
      (s.endMs === undefined || s.endMs > who.nowMs) &&
      (startMs === undefined || s.startMs < startMs)
    )
      startMs = s.startMs;
  return startMs === undefined ? current : unitNamesAt(unit, startMs);
}

function textOf(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/**
 * `next` with each credit unit's name history carried from `previous`: the
 * stored history where `next` leaves it out, plus the old names (until
 * `nowMs`) where `next` renames the unit. A copy; shapes are checked later
 * by parseCatalog, so anything unexpected is passed through untouched.
 */
export function carryNameHistory(previous: CatalogDocument | undefined, next: unknown, nowMs: number): unknown {
  if (previous === undefined || !isPlainObject(next) || !Array.isArray(next.credit_units)) return next;
  const stored = new Map<string, Record<string, unknown>>();
  for (const u of Array.isArray(previous.credit_units) ? previous.credit_units : [])
    if (isPlainObject(u) && typeof u.id === 'string') stored.set(u.id, u);
  const units = next.credit_units.map((u: unknown) => {
    if (!isPlainObject(u) || typeof u.id !== 'string') return u;
    const before = stored.get(u.id);
    if (before === undefined) return u;
    const kept = Array.isArray(before.previous_names) ? (before.previous_names as unknown[]) : [];
    const history = Array.isArray(u.previous_names) ? [...(u.previous_names as unknown[])] : [...kept];
    const oldName = textOf(before.name);
    const oldInternal = textOf(before.internal_name) ?? oldName;
    const newName = textOf(u.name);
    const newInternal = textOf(u.internal_name) ?? newName;
    const renamed =
      oldName !== undefined && newName !== undefined && (oldName !== newName || oldInternal !== newInternal);
    // A document that recorded this rename itself (restoring a history) is taken as it is.
    const last = history.length > kept.length ? history.at(-1) : undefined;
    const recorded = isPlainObject(last) && last.name === oldName && (last.internal_name ?? last.name) === oldInternal;
    if (renamed && !recorded)
      history.push({ name: oldName, internal_name: oldInternal, until: new Date(nowMs).toISOString() });
    if (history.length === 0) return u;
    return { ...u, previous_names: history };
  });
  return { ...next, credit_units: units };
}
