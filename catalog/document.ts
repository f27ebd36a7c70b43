/**
 * A catalog document as stored: the JSON the catalog file and the admin API
 * take (snake_case), in one canonical form — object keys sorted, entity lists
 * sorted by id — so the same catalog always has the same text and sha256,
 * whatever order a file lists it in. Applying it again is then a no-op.
 */
import { createHash } from 'node:crypto';
import { parseIsoInstant } from '../shared/validate.js';

/** A catalog document that parseCatalog accepted; shapes are trusted from here on. */
export type CatalogDocument = Record<string, unknown>;

/** The entity lists of a document, their key field, and how the diff and the API name them. */
export const entityKinds = [
  { kind: 'credit_unit', list: 'credit_units', key: 'id' },
  { kind: 'meter', list: 'meters', key: 'key' },
  { kind: 'rate_card_version', list: 'rate_card.versions', key: 'version' },
  { kind: 'package', list: 'packages', key: 'id' },
  { kind: 'plan', list: 'plans', key: 'id' },
  { kind: 'add_on', list: 'add_ons', key: 'id' },
  { kind: 'charge', list: 'charges', key: 'id' },
  { kind: 'subscription', list: 'subscriptions', key: 'id' },
] as const;

export type EntityKind = (typeof entityKinds)[number]['kind'];

/** Objects with their keys sorted, recursively; arrays keep their order. */
export function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys((value as Record<string, unknown>)[key]);
    return out;
  }
  return value;
}

/** The same value as text that does not depend on key order: for equality checks. */
export function canonicalText(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

/** The entity list at `path` ("meters", "rate_card.versions"), or [] when absent. */
export function entityList(document: CatalogDocument, path: string): Record<string, unknown>[] {
  let value: unknown = document;
  for (const part of path.split('.'))
    value = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[part] : undefined;
  return Array.isArray(value) ? (value as Record<string, unknown>[]) : [];
}

/** Sets the entity list at `path`, creating the parent object ("rate_card") if needed. */
export function setEntityList(document: CatalogDocument, path: string, list: unknown[]): void {
  const parts = path.split('.');
  let parent = document;
  for (const part of parts.slice(0, -1)) {
    const next = parent[part];
    parent = parent[part] =
      next !== null && typeof next === 'object' && !Array.isArray(next) ? { ...(next as Record<string, unknown>) } : {};
  }
  parent[parts.at(-1)!] = list;
}

function sortEntities(document: CatalogDocument): void {
  for (const { list, key } of entityKinds) {
    const entities = entityList(document, list);
    if (entities.length === 0) continue;
    const sorted = [...entities].sort((a, b) => {
      // Rate card versions sort by when they take effect (ISO text with zones does not sort as text).
      if (list === 'rate_card.versions') {
        const d = (parseIsoInstant(String(a.effective_from)) ?? 0) - (parseIsoInstant(String(b.effective_from)) ?? 0);
        if (d !== 0) return d;
      }
      const ka = String(a[key]);
      const kb = String(b[key]);
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
    setEntityList(document, list, sorted);
  }
}

/** The canonical form of a document parseCatalog accepted. */
export function canonicalDocument(raw: Record<string, unknown>): CatalogDocument {
  const copy = sortKeys(raw) as CatalogDocument;
  sortEntities(copy);
  return sortKeys(copy) as CatalogDocument;
}

export function documentText(document: CatalogDocument): string {
  return JSON.stringify(document);
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** A deep copy, for building a modified document without touching the one in force. */
export function cloneDocument(document: CatalogDocument): CatalogDocument {
  return JSON.parse(JSON.stringify(document)) as CatalogDocument;
}
