/**
 * The catalog's source of truth: append-only revisions in ClickHouse
 * (catalog_revisions), each the whole validated catalog as canonical JSON.
 * Writing is read latest → validate → check the transition rules → propose
 * latest + 1 → commit it only if no other writer proposed that number
 * (catalog/README.md, "Concurrency").
 */
import { carryNameHistory } from './names.js';
import { randomUUID } from 'node:crypto';
import { parseCatalog, parseStoredCatalog, type Catalog } from './model.js';
import { catalogCommitColumns, catalogRevisionColumns } from '../shared/clickhouse/schema.js';
import type { Store } from '../shared/clickhouse/store.js';
import { DrawdownError, isDrawdownError, type FieldProblem } from '../shared/errors.js';
import { crashPoint } from '../shared/fault.js';
import { sqlString, sqlUInt } from '../shared/sql.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { settledUntil } from '../shared/clickhouse/settlement-runs.js';
import { diffDocuments, type EntityChange } from './diff.js';
import { canonicalDocument, cloneDocument, documentText, sha256Hex, type CatalogDocument } from './document.js';
import { extraDefinitionProblems, transitionProblems } from './rules.js';

export interface RevisionSummary {
  revision: number;
  appliedAtSec: number;
  appliedBy: string;
  sha256: string;
}

export interface Revision extends RevisionSummary {
  document: CatalogDocument;
}

export interface ApplyOptions {
  /** Who applied it: an API key id, `cli:user@host`, `seed:path`. */
  appliedBy: string;
  /** The revision this write was based on (0 = the store is empty); a different latest is refused as stale. */
  expectedRevision?: number;
  dryRun?: boolean;
  nowMs?: number;
  /** Progress lines for people watching a long apply (the CLI prints them). */
  progress?: (line: string) => void;
  /**
   * Called with the diff before the transition rules run, so a refused change can still be shown (awaited: it may ask
   * for confirmation).
   */
  onDiff?: (changes: EntityChange[]) => void | Promise<void>;
}

export interface ApplyResult {
  /** The revision in force after the call: the new one, or the unchanged latest. */
  revision: number;
  previousRevision: number;
  changed: boolean;
  dryRun: boolean;
  sha256: string;
  changes: EntityChange[];
  document: CatalogDocument;
  catalog: Catalog;
}

/** Whole documents up to this size; a bigger catalog would make every revision row heavy. */
export const catalogDocumentBytesMax = 8 * 1024 * 1024;

/** Start-up tries to seed an empty store before giving up (each try waits 50–250 ms after a collision). */
const seedAttemptsMax = 5;

/** History pages hold at most this many revisions. */
export const historyPageMax = 1000;

const summaryColumns = 'revision, toUnixTimestamp(applied_at), applied_by, sha256';

function toSummary(row: string[]): RevisionSummary {
  return { revision: Number(row[0]), appliedAtSec: Number(row[1]), appliedBy: row[2]!, sha256: row[3]! };
}

function toRevision(row: string[]): Revision {
  return { ...toSummary(row), document: JSON.parse(row[4]!) as CatalogDocument };
}

function summarize(code: 'catalog_definition_invalid' | 'catalog_conflict', problems: FieldProblem[]): DrawdownError {
  const first = problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem(s) listed)` : '';
  return new DrawdownError(code, `${first.field}: ${first.message}${more}`, { problems });
}

/**
 * Validates a raw document with parseCatalog (the one validator) and the
 * extra fields the store keeps; every problem is collected.
 */
export function validateDocument(raw: unknown): { catalog: Catalog; raw: CatalogDocument } {
  let catalog: Catalog | undefined;
  let problems: FieldProblem[] = [];
  try {
    catalog = parseCatalog(raw);
  } catch (error) {
    if (!isDrawdownError(error) || error.code !== 'catalog_invalid') throw error;
    problems =
      error.problems.length > 0 ? [...error.problems] : [{ field: 'catalog', code: 'invalid', message: error.message }];
  }
  const document = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? (raw as CatalogDocument) : {};
  problems.push(...extraDefinitionProblems(document));
  if (problems.length > 0 || catalog === undefined) throw summarize('catalog_definition_invalid', problems);
  return { catalog, raw: document };
}

/**
 * A proposal older than this (by ClickHouse's clock) without an outcome is
 * from a writer that died between proposing and committing; it stops
 * blocking its revision number. Writers take milliseconds between the two.
 */
export const proposalTtlSec = 30;
/** A writer later than this since its own proposal withdraws rather than commit: it may no longer block rivals. */
const proposalCommitWithinSec = 10;
/** Of several commits of one revision number (only possible past the TTL), the first recorded wins. */
const commitOrder = 'recorded_at ASC, sha256 ASC';

export class CatalogStore {
  readonly #store: Store;
  /** Writes from this process go one at a time, so they never race each other. */
  #writes: Promise<unknown> = Promise.resolve();

  constructor(store: Store) {
    this.#store = store;
  }

  /** The latest committed revision's number and hash only: what pollers ask every few seconds. */
  async head(): Promise<{ revision: number; sha256: string } | undefined> {
    const rows = await this.#store.query(
      `SELECT revision, sha256 FROM catalog_commits WHERE outcome = 'committed' ORDER BY revision DESC, ${commitOrder} LIMIT 1`,
    );
    return rows[0] === undefined ? undefined : { revision: Number(rows[0][0]), sha256: rows[0][1]! };
  }

  async #proposal(revision: number, sha256: string): Promise<Revision | undefined> {
    const rows = await this.#store.query(
      `SELECT ${summaryColumns}, document FROM catalog_revisions WHERE revision = ${sqlUInt(revision)} AND sha256 = ${sqlString(sha256)} LIMIT 1`,
    );
    return rows[0] === undefined ? undefined : toRevision(rows[0]);
  }

  /** The revision in force, or undefined for an empty store. */
  async latest(): Promise<Revision | undefined> {
    const head = await this.head();
    return head === undefined ? undefined : this.#proposal(head.revision, head.sha256);
  }

  async get(revision: number): Promise<Revision | undefined> {
    const sha256 = await this.#committedSha(revision);
    return sha256 === undefined ? undefined : this.#proposal(revision, sha256);
  }

  async #committedSha(revision: number): Promise<string | undefined> {
    const rows = await this.#store.query(
      `SELECT sha256 FROM catalog_commits WHERE outcome = 'committed' AND revision = ${sqlUInt(revision)} ORDER BY ${commitOrder} LIMIT 1`,
    );
    return rows[0]?.[0];
  }

  /** Committed revisions, newest first, below `before` (all when absent). */
  async history(limit: number, before?: number): Promise<RevisionSummary[]> {
    const below = before === undefined ? '' : `AND revision < ${sqlUInt(before)}`;
    const commits = await this.#store.query(
      `SELECT revision, sha256 FROM catalog_commits WHERE outcome = 'committed' ${below} ORDER BY revision DESC, ${commitOrder} LIMIT 1 BY revision LIMIT ${sqlUInt(limit)}`,
    );
    if (commits.length === 0) return [];
    const rows = await this.#store.query(
      `SELECT ${summaryColumns} FROM catalog_revisions WHERE revision IN (${commits.map((c) => sqlUInt(Number(c[0]))).join(', ')})`,
    );
    const summaries = new Map(rows.map((r) => [`${r[0]}|${r[3]}`, toSummary(r)]));
    return commits.flatMap(([revision, sha]) => summaries.get(`${revision}|${sha}`) ?? []);
  }

  /**
   * Validates `raw`, shows what it would change, and (unless a dry run or unchanged) writes it as the next revision.
   */
  apply(raw: unknown, options: ApplyOptions): Promise<ApplyResult> {
    return this.#serially(() => this.#apply(raw, options));
  }

  /**
   * Read-modify-write of the latest document (entity routes): `modify` gets a
   * copy of the latest document (empty for an empty store) and returns the
   * whole new one. Runs inside this process's write lock, so entity writes
   * from different clients never turn each other stale; a write from another
   * process in between is refused as stale.
   */
  update(modify: (latest: CatalogDocument, revision: number) => unknown, options: ApplyOptions): Promise<ApplyResult> {
    return this.#serially(async () => {
      const latest = await this.latest();
      const revision = latest?.revision ?? 0;
      if (options.expectedRevision !== undefined && options.expectedRevision !== revision) {
        throw new DrawdownError(
          'catalog_revision_stale',
          `this write was based on revision ${options.expectedRevision}, but the latest is ${revision}; re-read the catalog and retry`,
        );
      }
      const raw = modify(cloneDocument(latest?.document ?? {}), revision);
      return this.#apply(raw, { ...options, expectedRevision: revision });
    });
  }

  #serially<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#writes.then(work);
    this.#writes = next.catch(() => undefined);
    return next;
  }

  async #apply(raw: unknown, options: ApplyOptions): Promise<ApplyResult> {
    const progress = options.progress ?? (() => {});
    const nowMs = options.nowMs ?? Date.now();
    progress('reading the latest revision');
    const latest = await this.latest();
    const latestRevision = latest?.revision ?? 0;
    progress('validating the catalog');
    // Name history is the store's to keep (catalog/names.ts): a file without it keeps it, a rename adds to it.
    const { catalog, raw: submitted } = validateDocument(carryNameHistory(latest?.document, raw, nowMs));
    const document = canonicalDocument(submitted);
    const text = documentText(document);
    if (Buffer.byteLength(text) > catalogDocumentBytesMax) {
      throw new DrawdownError(
        'catalog_definition_invalid',
        `the catalog is ${Buffer.byteLength(text)} bytes; at most ${catalogDocumentBytesMax} are stored per revision`,
      );
    }
    const sha256 = sha256Hex(text);

    if (options.expectedRevision !== undefined && options.expectedRevision !== latestRevision) {
      throw new DrawdownError(
        'catalog_revision_stale',
        `this write was based on revision ${options.expectedRevision}, but the latest is ${latestRevision}; re-read the catalog and retry`,
      );
    }
    const result = (revision: number, changed: boolean, changes: EntityChange[]): ApplyResult => ({
      revision,
      previousRevision: latestRevision,
      changed,
      dryRun: options.dryRun === true,
      sha256,
      changes,
      document,
      catalog,
    });
    if (latest !== undefined && latest.sha256 === sha256) return result(latestRevision, false, []);

    progress('comparing with the latest revision');
    const changes = diffDocuments(latest?.document, document);
    await options.onDiff?.(changes);
    if (latest !== undefined) {
      const previous = { document: latest.document, catalog: parseStoredCatalog(latest.document) };
      const settledUntilMs = (await settledUntil(this.#store)) * 1000;
      const problems = transitionProblems(previous, { document: submitted, catalog }, { nowMs, settledUntilMs });
      if (problems.length > 0) throw summarize('catalog_conflict', problems);
    }
    if (options.dryRun) return result(latestRevision, changes.length > 0, changes);

    const revision = latestRevision + 1;
    progress(`writing revision ${revision}`);
    await this.#commit(revision, sha256, options.appliedBy, nowMs, text);
    return result(revision, true, changes);
  }

  /**
   * Proposes `revision` and commits it only if no other live proposal holds
   * that number (README "Concurrency"). Of two writers racing for one number
   * at most one commits: each checks after its own proposal is stored, so the
   * later checker sees the earlier proposal. Both may withdraw; neither is
   * ever silently lost.
   */
  async #commit(revision: number, sha256: string, appliedBy: string, nowMs: number, text: string): Promise<void> {
    const at = sqlUInt(revision);
    // Names this proposal apart from an earlier one of the same document at the same number.
    const attempt = randomUUID();
    const stale = (why: string) => new DrawdownError('catalog_revision_stale', `${why}; re-read the catalog and retry`);
    // recorded_at is left to its DEFAULT now(), like proposed_at.
    const outcome = (what: 'committed' | 'withdrawn') =>
      this.#store.insert(
        'catalog_commits',
        catalogCommitColumns,
        encodeTsv([[String(revision), sha256, attempt, what]]),
      );
    // proposed_at is left to its DEFAULT now(): ages are measured on one clock, ClickHouse's.
    await this.#store.insert(
      'catalog_revisions',
      catalogRevisionColumns,
      encodeTsv([[String(revision), tsvDateTime(Math.floor(nowMs / 1000)), appliedBy, sha256, text, attempt]]),
    );
    crashPoint('catalog-after-proposal');
    const proposals = await this.#store.query(
      `SELECT sha256, attempt, toUnixTimestamp(now()) - toUnixTimestamp(proposed_at) FROM catalog_revisions WHERE revision = ${at}`,
    );
    const outcomes = await this.#store.query(
      `SELECT sha256, attempt, outcome FROM catalog_commits WHERE revision = ${at}`,
    );
    // The same document proposed twice is no rival: whichever commits, the revision is the same.
    const committed = outcomes.filter(([sha, , what]) => what === 'committed' && sha !== sha256);
    const withdrawn = new Set(outcomes.filter(([, , what]) => what === 'withdrawn').map(([, id]) => id));
    const rivals = proposals.filter(
      ([sha, id, age]) => sha !== sha256 && !withdrawn.has(id!) && Number(age) <= proposalTtlSec,
    );
    const mine = proposals.find(([, id]) => id === attempt);
    const mineAge = mine === undefined ? Number.POSITIVE_INFINITY : Number(mine[2]);
    if (committed.length > 0 || rivals.length > 0 || !(mineAge <= proposalCommitWithinSec)) {
      await outcome('withdrawn');
      throw stale(
        committed.length > 0
          ? `revision ${revision} was committed by another write`
          : rivals.length > 0
            ? `another write proposed revision ${revision} at the same time`
            : `revision ${revision} took too long to commit`,
      );
    }
    await outcome('committed');
    // Only a commit recorded past the TTL can meet another; the first recorded wins and the other hears it lost.
    if ((await this.#committedSha(revision)) !== sha256)
      throw stale(`revision ${revision} was committed by another write`);
  }

  /**
   * Start-up: an empty store is seeded with revision 1 from the catalog file;
   * once the store has revisions, the store wins and the file is ignored.
   */
  async seed(raw: unknown, appliedBy: string): Promise<{ seeded: boolean; latest: Revision }> {
    // Processes starting together with different files may all withdraw once; a few tries settle it.
    for (let attempt = 1; ; attempt++) {
      const existing = await this.latest();
      if (existing !== undefined) return { seeded: false, latest: existing };
      try {
        await this.apply(raw, { appliedBy, expectedRevision: 0 });
        const latest = await this.latest();
        if (latest === undefined)
          throw new DrawdownError('store_unavailable', 'the catalog revision just written cannot be read back');
        return { seeded: true, latest };
      } catch (error) {
        if (!isDrawdownError(error) || error.code !== 'catalog_revision_stale' || attempt >= seedAttemptsMax)
          throw error;
        await new Promise((resolve) => setTimeout(resolve, 50 + Math.floor(Math.random() * 200)));
      }
    }
  }
}
