/**
 * The catalog a running process uses, kept current: from the catalog store
 * (polled off the hot path every DRAWDOWN_CATALOG_REFRESH_MS, and refreshed
 * at once after a write in this process or when settlement starts a run), or
 * fixed from the catalog file when the process has no ClickHouse.
 *
 * Consumers read `current()` (a consistent snapshot: revision, document and
 * parsed catalog together) and may subscribe with `onChange`.
 */
import { readFileSync } from 'node:fs';
import { Gauge, Counter, type Registry } from 'prom-client';
import {
  loadCatalogFile,
  meterDefinitions,
  parseCatalog,
  parseStoredCatalog,
  type Catalog,
  type MeterDefinitions,
} from './model.js';
import { DrawdownError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { canonicalDocument, documentText, sha256Hex, type CatalogDocument } from './document.js';
import { archivedMeters } from './rules.js';
import { eventMappings, type EventMappings } from './event-mapping.js';
import type { CatalogStore } from './store.js';

export interface CatalogSnapshot {
  /** The store revision; 0 for a catalog read from a file. */
  revision: number;
  sha256: string;
  document: CatalogDocument;
  catalog: Catalog;
}

export interface CatalogSource {
  current(): CatalogSnapshot;
  /**
   * Calls `listener` with each new snapshot after it replaces the current one
   * (never for the snapshot current at subscription). Returns an unsubscribe
   * function. A listener that throws is logged and does not stop the others.
   */
  onChange(listener: (snapshot: CatalogSnapshot) => void): () => void;
  /** Checks for a newer revision now; resolves with the snapshot then current. */
  refresh(): Promise<CatalogSnapshot>;
  close(): void;
}

/** Reads the catalog file as its raw JSON and parsed catalog; problems are catalog_invalid, as at start-up. */
export function readCatalogFile(path: string): { raw: CatalogDocument; catalog: Catalog } {
  const catalog = loadCatalogFile(path);
  // loadCatalogFile has read and parsed the same file already; this cannot fail differently.
  const raw = JSON.parse(readFileSync(path, 'utf8')) as CatalogDocument;
  return { raw, catalog };
}

function snapshotOf(revision: number, document: CatalogDocument, catalog: Catalog): CatalogSnapshot {
  const canonical = canonicalDocument(document);
  return { revision, sha256: sha256Hex(documentText(canonical)), document: canonical, catalog };
}

class Listeners {
  readonly #list = new Set<(snapshot: CatalogSnapshot) => void>();
  constructor(private readonly log: Logger | undefined) {}
  add(listener: (snapshot: CatalogSnapshot) => void): () => void {
    this.#list.add(listener);
    return () => this.#list.delete(listener);
  }
  emit(snapshot: CatalogSnapshot): void {
    for (const listener of this.#list) {
      try {
        listener(snapshot);
      } catch (error) {
        this.log?.error({ err: error, revision: snapshot.revision }, 'catalog change listener failed');
      }
    }
  }
}

/** A catalog that never changes (ingest without ClickHouse, tests). */
export function staticCatalogSource(
  document: CatalogDocument,
  catalog: Catalog = parseCatalog(document),
): CatalogSource {
  const snapshot = snapshotOf(0, document, catalog);
  return {
    current: () => snapshot,
    onChange: () => () => {},
    refresh: async () => snapshot,
    close: () => {},
  };
}

export interface StoreSourceOptions {
  /** How often to ask the store for its latest revision, in ms; 0 = only on refresh(). */
  refreshMs: number;
  log: Logger;
  registry?: Registry;
  /** Seeds an empty store with revision 1. */
  seed?: { raw: CatalogDocument; appliedBy: string };
}

/**
 * Opens the store's latest revision (seeding an empty store from `seed`), then
 * keeps it current. Start-up fails if the store is empty and there is no seed.
 */
export async function openStoreCatalogSource(
  catalogs: CatalogStore,
  options: StoreSourceOptions,
): Promise<CatalogSource> {
  const { log } = options;
  const latest =
    options.seed === undefined
      ? await catalogs.latest()
      : (await catalogs.seed(options.seed.raw, options.seed.appliedBy)).latest;
  if (latest === undefined) {
    throw new DrawdownError(
      'config_invalid',
      'the catalog store is empty: give DRAWDOWN_CATALOG (or --catalog) to seed it, or run drawdown catalog apply FILE',
    );
  }
  if (options.seed !== undefined) {
    const fileSha = sha256Hex(documentText(canonicalDocument(options.seed.raw)));
    if (fileSha !== latest.sha256)
      log.warn(
        { revision: latest.revision },
        'DRAWDOWN_CATALOG differs from the catalog store; the store wins (change the catalog with drawdown catalog apply or the admin API)',
      );
  }
  let snapshot: CatalogSnapshot = {
    revision: latest.revision,
    sha256: latest.sha256,
    document: latest.document,
    catalog: parseStoredCatalog(latest.document),
  };
  const listeners = new Listeners(log);
  const revisionGauge =
    options.registry &&
    new Gauge({
      name: 'drawdown_catalog_revision',
      help: 'Catalog revision this process is using',
      registers: [options.registry],
    });
  const failures =
    options.registry &&
    new Counter({
      name: 'drawdown_catalog_refresh_failures_total',
      help: 'Catalog refreshes that failed (the previous revision stays in use)',
      registers: [options.registry],
    });
  revisionGauge?.set(snapshot.revision);

  // One refresh at a time: a poll and a run's refresh share the same query.
  let inFlight: Promise<CatalogSnapshot> | undefined;
  const check = async (): Promise<CatalogSnapshot> => {
    const head = await catalogs.head();
    if (head === undefined || (head.revision === snapshot.revision && head.sha256 === snapshot.sha256)) return snapshot;
    const revision = await catalogs.get(head.revision);
    if (revision === undefined) return snapshot;
    // A stored revision was valid when written; if it no longer parses, keep serving the last good one.
    const catalog = parseStoredCatalog(revision.document);
    snapshot = { revision: revision.revision, sha256: revision.sha256, document: revision.document, catalog };
    revisionGauge?.set(snapshot.revision);
    log.info({ revision: snapshot.revision, appliedBy: revision.appliedBy }, 'catalog revision now in use');
    listeners.emit(snapshot);
    return snapshot;
  };
  const refresh = (): Promise<CatalogSnapshot> => {
    inFlight ??= check().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  const timer =
    options.refreshMs > 0
      ? setInterval(() => {
          refresh().catch((error: unknown) => {
            failures?.inc();
            log.warn(
              { err: error, revision: snapshot.revision },
              'catalog refresh failed; keeping the revision in use',
            );
          });
        }, options.refreshMs)
      : undefined;
  timer?.unref();

  return {
    current: () => snapshot,
    onChange: (listener) => listeners.add(listener),
    refresh,
    close: () => clearInterval(timer),
  };
}

/**
 * A Catalog whose every field reads the source's current snapshot: for code
 * that takes a Catalog once (balances, purchases, usage) but should follow
 * changes. Code that needs one consistent catalog for a whole computation
 * (a settlement run) takes `source.current().catalog` instead.
 */
export function liveCatalog(source: CatalogSource): Catalog {
  return {
    get creditUnits() {
      return source.current().catalog.creditUnits;
    },
    get meters() {
      return source.current().catalog.meters;
    },
    get rateCard() {
      return source.current().catalog.rateCard;
    },
    get packages() {
      return source.current().catalog.packages;
    },
    get plans() {
      return source.current().catalog.plans;
    },
    get addOns() {
      return source.current().catalog.addOns;
    },
    get charges() {
      return source.current().catalog.charges;
    },
    get subscriptions() {
      return source.current().catalog.subscriptions;
    },
  };
}

/** Meter definitions for accepting new events: archived meters are left out. */
export function acceptedMeters(snapshot: CatalogSnapshot): MeterDefinitions {
  const all = meterDefinitions(snapshot.catalog);
  for (const key of archivedMeters(snapshot.document)) delete all[key];
  return all;
}

/**
 * One MeterDefinitions object kept current in place, for code that holds on
 * to the object it was given (the gateway looks meters up per request).
 * `includeArchived` is for the rater, which must still aggregate events
 * the gateway accepted before a meter was archived.
 */
export function liveMeterDefinitions(source: CatalogSource, options: { includeArchived: boolean }): MeterDefinitions {
  const select = (snapshot: CatalogSnapshot): MeterDefinitions =>
    options.includeArchived ? meterDefinitions(snapshot.catalog) : acceptedMeters(snapshot);
  const target = select(source.current());
  source.onChange((snapshot) => {
    const next = select(snapshot);
    for (const key of Object.keys(target)) if (!Object.hasOwn(next, key)) delete target[key];
    Object.assign(target, next);
  });
  return target;
}

/**
 * The CloudEvents type table of the source's current snapshot, rebuilt once
 * per new snapshot: archived meters take no new CloudEvents, as they take no
 * new events.
 */
export function liveEventMappings(source: CatalogSource): () => EventMappings {
  let built: { snapshot: CatalogSnapshot; table: EventMappings } | undefined;
  return () => {
    const snapshot = source.current();
    if (built?.snapshot !== snapshot)
      built = { snapshot, table: eventMappings(snapshot.catalog.meters.values(), archivedMeters(snapshot.document)) };
    return built.table;
  };
}
