/**
 * What applying a catalog would change: entities added, removed and changed,
 * by kind and id, with field-level detail for changes. Shown by
 * `drawdown catalog apply` (text) and returned by every admin write (JSON).
 */
import { canonicalText, entityKinds, entityList, type CatalogDocument, type EntityKind } from './document.js';

export interface FieldChange {
  /** Path inside the entity, e.g. `price.amount` or `versions[1].grants[0].quantity`. */
  path: string;
  /** Absent when the field is new. */
  before?: unknown;
  /** Absent when the field was removed. */
  after?: unknown;
}

export interface EntityChange {
  kind: EntityKind | 'document';
  id: string;
  change: 'added' | 'removed' | 'changed';
  /** Only for `changed`. */
  fields: FieldChange[];
}

const knownTopLevel = new Set(['credit_units', 'meters', 'rate_card', 'packages', 'plans', 'subscriptions']);

/** Leaf values by path; empty objects and arrays below the root are leaves, so adding the first element shows. */
function flatten(value: unknown, path: string, out: Map<string, unknown>): Map<string, unknown> {
  if (Array.isArray(value) && value.length > 0) value.forEach((v, i) => flatten(v, `${path}[${i}]`, out));
  else if (
    value !== null &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    (path === '' || Object.keys(value).length > 0)
  ) {
    for (const [k, v] of Object.entries(value)) flatten(v, path === '' ? k : `${path}.${k}`, out);
  } else out.set(path, value);
  return out;
}

export function fieldChanges(before: unknown, after: unknown): FieldChange[] {
  const a = flatten(before, '', new Map());
  const b = flatten(after, '', new Map());
  const changes: FieldChange[] = [];
  for (const path of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const had = a.has(path);
    const has = b.has(path);
    if (had && has && canonicalText(a.get(path)) === canonicalText(b.get(path))) continue;
    changes.push({
      path: path === '' ? '(value)' : path,
      ...(had ? { before: a.get(path) } : {}),
      ...(has ? { after: b.get(path) } : {}),
    });
  }
  return changes;
}

/** Differences from `before` (undefined: an empty store) to `after`; kinds in document order, ids sorted. */
export function diffDocuments(before: CatalogDocument | undefined, after: CatalogDocument): EntityChange[] {
  const changes: EntityChange[] = [];
  for (const { kind, list, key } of entityKinds) {
    const old = new Map(entityList(before ?? {}, list).map((e) => [String(e[key]), e]));
    const now = new Map(entityList(after, list).map((e) => [String(e[key]), e]));
    for (const id of [...new Set([...old.keys(), ...now.keys()])].sort()) {
      const a = old.get(id);
      const b = now.get(id);
      if (a === undefined) changes.push({ kind, id, change: 'added', fields: [] });
      else if (b === undefined) changes.push({ kind, id, change: 'removed', fields: [] });
      else if (canonicalText(a) !== canonicalText(b))
        changes.push({ kind, id, change: 'changed', fields: fieldChanges(a, b) });
    }
  }
  // Keys the catalog does not know are kept verbatim; a change to them still shows.
  const others = (d: CatalogDocument | undefined) =>
    Object.fromEntries(Object.entries(d ?? {}).filter(([k]) => !knownTopLevel.has(k)));
  const rateCardRest = (d: CatalogDocument | undefined) => {
    const card = d?.rate_card;
    return card !== null && typeof card === 'object'
      ? Object.fromEntries(Object.entries(card).filter(([k]) => k !== 'versions'))
      : {};
  };
  const fields = [
    ...fieldChanges(others(before), others(after)),
    ...fieldChanges(rateCardRest(before), rateCardRest(after)).map((f) => ({ ...f, path: `rate_card.${f.path}` })),
  ];
  if (fields.length > 0) changes.push({ kind: 'document', id: '(top level)', change: 'changed', fields });
  return changes;
}

export function changeJson(change: EntityChange): Record<string, unknown> {
  return {
    kind: change.kind,
    id: change.id,
    change: change.change,
    ...(change.change === 'changed' ? { fields: change.fields } : {}),
  };
}

const labels: Record<EntityChange['kind'], string> = {
  credit_unit: 'credit unit',
  meter: 'meter',
  rate_card_version: 'rate card version',
  package: 'package',
  plan: 'plan',
  add_on: 'add-on',
  charge: 'charge',
  subscription: 'subscription',
  document: 'document',
};

function show(value: unknown): string {
  return value === undefined ? '(none)' : JSON.stringify(value);
}

/** For people: one line per entity (+ added, - removed, ~ changed), one indented line per changed field. */
export function formatDiff(changes: readonly EntityChange[]): string {
  if (changes.length === 0) return 'no changes\n';
  let out = '';
  for (const c of changes) {
    const sign = c.change === 'added' ? '+' : c.change === 'removed' ? '-' : '~';
    out += `${sign} ${labels[c.kind]} ${c.id}${c.change === 'changed' ? '' : ` (${c.change})`}\n`;
    for (const f of c.fields) out += `    ${f.path}: ${show(f.before)} → ${show(f.after)}\n`;
  }
  const count = (what: EntityChange['change']) => changes.filter((c) => c.change === what).length;
  out += `${count('added')} added, ${count('changed')} changed, ${count('removed')} removed\n`;
  return out;
}
