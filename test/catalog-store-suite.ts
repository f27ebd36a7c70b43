/**
 * The catalog store against real ClickHouse: defined once, run on
 * clickhouse-server (store-server.test.ts) and chDB (store-chdb.test.ts).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCatalog } from '../catalog/model.js';
import { catalogCommitColumns, catalogRevisionColumns, ensureSchema } from '../shared/clickhouse/schema.js';
import { encodeTsv } from '../shared/tsv.js';
import type { Store } from '../shared/clickhouse/store.js';
import type { DrawdownError } from '../shared/errors.js';
import {
  catalogPath,
  openTestStore,
  startClickHouse,
  tempDir,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';
import { settle } from '../settlement/settle.js';
import { CatalogStore, proposalTtlSec, type ApplyOptions } from '../catalog/store.js';

const demo = (): any => JSON.parse(readFileSync(catalogPath, 'utf8'));
const by = (who: string, extra: Partial<ApplyOptions> = {}): ApplyOptions => ({ appliedBy: who, ...extra });

async function refusal(promise: Promise<unknown>): Promise<DrawdownError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e as DrawdownError,
  );
  if (error === undefined) throw new Error('expected the write to be refused');
  return error;
}

export function defineCatalogStore(backend: Backend): void {
  describe(`catalog store on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`catalog-store-${backend}`);
    let clickhouse: ClickHouseTarget;
    let store: Store;
    let catalogs: CatalogStore;

    beforeAll(async () => {
      clickhouse = await startClickHouse(backend, dir.path);
      store = await openTestStore(clickhouse.url);
      await ensureSchema(store);
      catalogs = new CatalogStore(store);
    });

    afterAll(async () => {
      await store?.close();
      await clickhouse?.stop();
      dir.remove();
    });

    it('given an empty store, when a catalog is applied twice, then the second apply writes nothing', async () => {
      const first = await catalogs.apply(demo(), by('test'));
      expect(first).toMatchObject({ revision: 1, previousRevision: 0, changed: true });
      expect(first.changes.map((c) => `${c.change} ${c.kind} ${c.id}`)).toContain('added meter gpt-4o.input_tokens');

      // The same catalog with its lists in another order is the same catalog.
      const reordered = demo();
      reordered.meters.reverse();
      const second = await catalogs.apply(reordered, by('test'));
      expect(second).toMatchObject({ revision: 1, previousRevision: 1, changed: false, changes: [] });
      expect((await catalogs.history(10)).map((r) => r.revision)).toEqual([1]);
      const latest = await catalogs.latest();
      expect(latest).toMatchObject({ revision: 1, appliedBy: 'test', sha256: first.sha256 });
      expect(parseCatalog(latest!.document).meters.size).toBe(3);
    });

    it('given a dry run, then it shows field-level changes and writes no revision', async () => {
      const next = demo();
      next.packages[0].price.amount = '90.00';
      const dry = await catalogs.apply(next, by('test', { dryRun: true }));
      expect(dry).toMatchObject({ revision: 1, changed: true, dryRun: true });
      expect(dry.changes).toEqual([
        {
          kind: 'package',
          id: 'credits-100',
          change: 'changed',
          fields: [{ path: 'price.amount', before: '100.00', after: '90.00' }],
        },
      ]);
      expect((await catalogs.latest())!.revision).toBe(1);
    });

    it('given invalid definitions, then every problem is named by its field and no revision is written', async () => {
      const bad = demo();
      bad.meters[0].aggregation = 'avg';
      bad.packages[0].unit = 'no-such-unit';
      bad.meters[1].archived = 'yes';
      const error = await refusal(catalogs.apply(bad, by('test')));
      expect(error.code).toBe('catalog_definition_invalid');
      expect(error.status).toBe(422);
      expect(error.problems.map((p) => p.field).sort()).toEqual([
        'meters[0].aggregation',
        'meters[1].archived',
        'packages[0].unit',
      ]);
      expect((await catalogs.latest())!.revision).toBe(1);
    });

    it('given saved meters, units, plan versions and rates in force, then changing them is refused, naming the field', async () => {
      const withPlan = demo();
      withPlan.plans = [
        {
          id: 'pro',
          billing: 'monthly',
          versions: [{ version: 1, grants: [{ id: 'g', unit: 'credits', quantity: '100', frequency: 'monthly' }] }],
        },
      ];
      withPlan.subscriptions = [{ id: 'sub-1', customer: 'acme', plan: 'pro', start: '2026-01-01T00:00:00Z' }];
      expect((await catalogs.apply(withPlan, by('test'))).revision).toBe(2);

      const changed = JSON.parse(JSON.stringify(withPlan));
      changed.meters[1].aggregation = 'max';
      changed.meters[1].dimensions = ['quality'];
      // The images meter removed, with its rate rows; one price changed in the version in force.
      changed.meters.splice(2, 1);
      const rows = changed.rate_card.versions[0].rows.filter((r: any) => r.meter !== 'images');
      rows[0].price.amount = '6.00';
      changed.rate_card.versions[0].rows = rows;
      changed.credit_units[0].name = 'Renamed'; // allowed
      changed.plans[0].versions[0].grants[0].quantity = '200';
      changed.subscriptions = [];
      const error = await refusal(catalogs.apply(changed, by('test')));
      expect(error.code).toBe('catalog_conflict');
      expect(error.status).toBe(409);
      expect(error.problems.map((p) => `${p.field} ${p.code}`).sort()).toEqual([
        'meters removed',
        'meters[1].aggregation immutable',
        'meters[1].dimensions immutable',
        'plans[0].versions[0] immutable',
        'rate_card.versions[0] immutable',
        'subscriptions removed',
      ]);
      expect((await catalogs.latest())!.revision).toBe(2);
    });

    it('given an archived credit unit, then a new plan version may not grant it, while saved versions stay', async () => {
      const next = (await catalogs.latest())!.document as any;
      next.credit_units.push({ id: 'old', name: 'Old credits', archived: true });
      next.plans[0].versions.push({
        version: 2,
        grants: [
          { id: 'g', unit: 'credits', quantity: '100', frequency: 'monthly' },
          { id: 'h', unit: 'old', quantity: '1', frequency: 'monthly' },
        ],
      });
      const error = await refusal(catalogs.apply(next, by('test')));
      expect(error.problems.map((p) => p.field)).toEqual(['plans[0].versions[1].grants[1].unit']);
      expect((await catalogs.latest())!.revision).toBe(2);
    });

    it('given settled time, then a new rate card version may start at or after it, not before', async () => {
      const nowMs = Date.now();
      const settledUntilSec = Math.floor(nowMs / 60_000) * 60 - 3600;
      const latest = (await catalogs.latest())!;
      await settle(store, parseCatalog(latest.document), { untilSec: settledUntilSec });

      const early = latest.document as any;
      early.rate_card.versions.push({
        ...early.rate_card.versions[0],
        version: 'too-early',
        effective_from: new Date((settledUntilSec - 60) * 1000).toISOString(),
      });
      const error = await refusal(catalogs.apply(early, by('test', { nowMs })));
      expect(error.problems).toEqual([
        expect.objectContaining({ field: 'rate_card.versions[1].effective_from', code: 'settled' }),
      ]);

      const onTime = (await catalogs.latest())!.document as any;
      onTime.rate_card.versions.push({
        ...onTime.rate_card.versions[0],
        version: 'on-time',
        effective_from: new Date(settledUntilSec * 1000).toISOString(),
      });
      const applied = await catalogs.apply(onTime, by('test', { nowMs }));
      expect(applied).toMatchObject({ revision: 3, changed: true });
      expect(applied.changes).toEqual([{ kind: 'rate_card_version', id: 'on-time', change: 'added', fields: [] }]);
    });

    it('given a write based on an older revision, then it is refused as stale', async () => {
      const next = demo();
      const error = await refusal(catalogs.apply(next, by('test', { expectedRevision: 2 })));
      expect(error.code).toBe('catalog_revision_stale');
      expect(error.status).toBe(412);
    });

    it('given another writer proposes the same revision number meanwhile, then this write is refused as stale, and succeeds once the other withdraws', async () => {
      const latest = (await catalogs.latest())!;
      const next = latest.document as any;
      next.packages[0].name = 'Raced';
      const rival = { ...(latest.document as any), packages: [{ ...next.packages[0], name: 'Rival' }] };
      const revision = latest.revision + 1;
      // Between this writer's read and its proposal, another process proposes the same number.
      const rivalRow = [
        String(revision),
        '2026-01-01 00:00:00',
        'rival',
        'f'.repeat(64),
        JSON.stringify(rival),
        'rival-attempt',
      ];
      const error = await refusal(
        catalogs.apply(
          next,
          by('test', {
            expectedRevision: latest.revision,
            onDiff: () => store.insert('catalog_revisions', catalogRevisionColumns, encodeTsv([rivalRow])),
          }),
        ),
      );
      expect(error.code).toBe('catalog_revision_stale');
      expect(error.message).toContain(`another write proposed revision ${revision}`);
      // Neither is in force: the rival, checking after this proposal, withdraws too.
      expect((await catalogs.latest())!.revision).toBe(latest.revision);
      await store.insert(
        'catalog_commits',
        catalogCommitColumns,
        encodeTsv([[String(revision), 'f'.repeat(64), 'rival-attempt', 'withdrawn']]),
      );
      const retried = await catalogs.apply(next, by('test', { expectedRevision: latest.revision }));
      expect(retried).toMatchObject({ revision, changed: true });
      expect(await catalogs.latest()).toMatchObject({ revision, appliedBy: 'test', sha256: retried.sha256 });
    });

    it('given a proposal left by a writer that died before committing, then it stops blocking its number after the TTL', async () => {
      const latest = (await catalogs.latest())!;
      const revision = latest.revision + 1;
      const stale = new Date(Date.now() - (proposalTtlSec + 60) * 1000).toISOString().slice(0, 19).replace('T', ' ');
      const dead = [
        String(revision),
        stale,
        'dead',
        'e'.repeat(64),
        JSON.stringify(latest.document),
        'dead-attempt',
        stale,
      ];
      await store.insert('catalog_revisions', [...catalogRevisionColumns, 'proposed_at'], encodeTsv([dead]));
      const next = latest.document as any;
      next.packages[0].name = 'After a crash';
      expect(await catalogs.apply(next, by('test'))).toMatchObject({ revision, changed: true });
    });

    it('keeps every committed revision readable, newest first, page by page', async () => {
      const all = await catalogs.history(100);
      expect(all.map((r) => r.revision)).toEqual([5, 4, 3, 2, 1]);
      expect(all[0]).toMatchObject({ appliedBy: 'test' });
      const page = await catalogs.history(2, 3);
      expect(page.map((r) => r.revision)).toEqual([2, 1]);
      const first = await catalogs.get(1);
      expect(parseCatalog(first!.document).plans.size).toBe(0);
      expect(await catalogs.get(99)).toBeUndefined();
    });

    it('given a seed file and a store with revisions, then the store wins', async () => {
      const seeded = await catalogs.seed(demo(), 'seed:test');
      expect(seeded).toMatchObject({ seeded: false, latest: { revision: 5 } });
    });

    it('given two processes writing at once, round after round, then no write that was told it succeeded is lost', async () => {
      // A second CatalogStore on its own connection stands for another process: no shared lock.
      const other = await openTestStore(clickhouse.url);
      const rivals = new CatalogStore(other);
      try {
        const successes: { revision: number; sha256: string }[] = [];
        for (let round = 0; round < 6; round++) {
          const base = (await catalogs.latest())!.document as any;
          const a = { ...base, packages: [{ ...base.packages[0], name: `a-${round}` }] };
          const b = { ...base, packages: [{ ...base.packages[0], name: `b-${round}` }] };
          const outcomes = await Promise.allSettled([catalogs.apply(a, by('a')), rivals.apply(b, by('b'))]);
          for (const o of outcomes) {
            if (o.status === 'fulfilled') successes.push({ revision: o.value.revision, sha256: o.value.sha256 });
            else expect((o.reason as DrawdownError).code).toBe('catalog_revision_stale');
          }
        }
        // Each success is the revision readers see at its number, and no number has two.
        for (const s of successes) expect((await catalogs.get(s.revision))?.sha256).toBe(s.sha256);
        expect(new Set(successes.map((s) => s.revision)).size).toBe(successes.length);
        expect((await catalogs.history(1))[0]?.revision).toBe(Math.max(5, ...successes.map((s) => s.revision)));
      } finally {
        await other.close();
      }
    });
  });
}
