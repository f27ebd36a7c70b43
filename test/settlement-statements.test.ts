/**
 * Closing billing periods (SPEC §5): settlement runs are global windows; the
 * run whose window contains a subscription's term end closes that term and
 * its report lists the term's statement, which GET
 * /v1/customers/{id}/statements also serves, marked final once settlement
 * has passed the end. Through chDB with a fixed clock: a monthly plan with
 * overage in two terms (the second on a new plan version with another
 * price), a purchase, late usage, and unused credits expiring at a term end.
 * On chDB and on clickhouse-server 18.16 (the statement query must run on both).
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import { parseCatalog } from '../catalog/model.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteColumns } from '../shared/clickhouse/usage-minute.js';
import type { Store } from '../shared/clickhouse/store.js';
import { formatAmount, money } from '../shared/money.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { purchasePackage } from '../settlement/purchases.js';
import { reportJson } from '../settlement/report.js';
import { settle } from '../settlement/settle.js';
import { api, startClickHouse, tempDir, testConfig, type ClickHouseTarget } from './harness.js';

const sec = (iso: string): number => Date.parse(iso) / 1000;

const catalogDocument = {
  credit_units: [{ id: 'credits', name: 'Credits' }],
  meters: [{ key: 'tokens', aggregation: 'sum' }],
  rate_card: {
    versions: [
      {
        version: 'v1',
        effective_from: '2026-01-01T00:00:00Z',
        rows: [{ meter: 'tokens', unit: 'credits', price: { model: 'unit', amount: '0.5' } }],
      },
    ],
  },
  packages: [{ id: 'credits-100', price: { currency: 'USD', amount: '1.00' }, credits: '100', unit: 'credits' }],
  plans: [
    {
      id: 'pro',
      billing: 'monthly',
      versions: [
        {
          version: 1,
          grants: [{ id: 'monthly', unit: 'credits', quantity: '1000', frequency: 'monthly' }],
          overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.013' } },
        },
        {
          version: 2,
          grants: [{ id: 'monthly', unit: 'credits', quantity: '500', frequency: 'monthly' }],
          overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.02' } },
        },
      ],
    },
  ],
  subscriptions: [
    // Terms from the 15th: Jan 15 – Feb 15 on version 1, then version 2 from Feb 15.
    {
      id: 'sub-acme',
      customer: 'acme',
      plan: 'pro',
      plan_version: 1,
      start: '2026-01-15T00:00:00Z',
      changes: [{ effective_from: '2026-02-15T00:00:00Z', plan_version: 2 }],
    },
    { id: 'sub-light', customer: 'light', plan: 'pro', plan_version: 1, start: '2026-01-15T00:00:00Z' },
  ],
};
const catalog = parseCatalog(catalogDocument);

describe.each(['chdb', 'server'] as const)(
  'closing billing periods on %s: per-customer statements of closed terms',
  (backend) => {
    const dir = tempDir('settlement-statements');
    let clickhouse: ClickHouseTarget;
    let store: Store;
    let drawdown: Running;
    let base: string;
    let nowMs = Date.parse('2026-02-15T00:01:00Z');
    let seq = 0;
    const reports: Record<string, any> = {};

    async function usage(customer: string, atIso: string, tokens: string): Promise<void> {
      seq++;
      await store.insert(
        'usage_minute',
        usageMinuteColumns,
        encodeTsv([
          [customer, 'tokens', '{}', tsvDateTime(sec(atIso)), tokens, '1', '0', String(seq), tsvDateTime(sec(atIso))],
        ]),
      );
    }
    async function run(untilIso: string): Promise<any> {
      nowMs = Date.parse(untilIso) + 60_000;
      const report = reportJson(await settle(store, catalog, { untilSec: sec(untilIso), nowSec: nowMs / 1000 }));
      reports[untilIso] = report;
      return report;
    }
    const statements = async (customer: string, query = ''): Promise<any[]> => {
      const response = await api(base, 'GET', `/v1/customers/${customer}/statements${query}`);
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      return response.body.statements;
    };

    beforeAll(async () => {
      clickhouse = await startClickHouse(backend, dir.path);
      store = await openStore(clickhouse.url);
      await ensureSchema(store);
      const path = `${dir.path}/catalog.json`;
      writeFileSync(path, JSON.stringify(catalogDocument));
      drawdown = await startDrawdown(
        testConfig({ catalog: path, clickhouseUrl: clickhouse.url }),
        { ingest: false, rater: false, settlement: true },
        { store, now: () => nowMs },
      );
      base = drawdown.url!;

      // Term 1 (Jan 15 – Feb 15): acme uses 3,001 tokens = 1,500.5 credits (1,000 granted, 500.5 overage); light uses
      // 50 credits.
      await usage('acme', '2026-01-20T10:00:00Z', '2000');
      await usage('acme', '2026-02-10T10:00:00Z', '1001');
      await usage('light', '2026-01-25T10:00:00Z', '100');
      await run('2026-01-20T00:00:00Z');
      await run('2026-02-01T00:00:00Z');
      // Ends exactly at the term end: the end instant (when unused credits expire) belongs to the next window.
      await run('2026-02-15T00:00:00Z');
    }, 120_000);

    afterAll(async () => {
      await drawdown?.stop();
      await store?.close();
      await clickhouse?.stop();
      dir.remove();
    });

    it('given settlement up to exactly the term end, then the term is not closed yet: no report lists it and its statement is not final', async () => {
      expect(Object.values(reports['2026-02-15T00:00:00Z'].customers).flatMap((c: any) => c.closed_terms)).toEqual([]);
      const [term] = await statements('light');
      expect(term).toMatchObject({
        subscription: 'sub-light',
        term_start: '2026-01-15T00:00:00.000Z',
        term_end: '2026-02-15T00:00:00.000Z',
        final: false,
      });
      // The 950 unused credits expire at the end instant, which no run has settled yet.
      expect(term.units.credits).toMatchObject({ granted: '1000', used: '50', expired: '0', closing_balance: '950' });
    });

    it('given the run whose window contains the term end, then its report lists the closed term with granted, used, expired, overage and balances', async () => {
      // Term 2 (Feb 15 – Mar 15, version 2: 500 granted, overage at 0.02 USD): 400 credits on Feb 16.
      await usage('acme', '2026-02-16T10:00:00Z', '800');
      const report = await run('2026-02-20T00:00:00Z');
      expect(report.customers.acme.closed_terms).toEqual([
        {
          subscription: 'sub-acme',
          plan: 'pro',
          plan_version: 1,
          term_start: '2026-01-15T00:00:00.000Z',
          term_end: '2026-02-15T00:00:00.000Z',
          final: true,
          units: {
            credits: {
              name: 'Credits',
              internal_name: 'Credits',
              opening_balance: '0',
              granted: '1000',
              grants: [{ source: 'plan', id: 'pro', granted: '1000' }],
              purchased: '0',
              used: '1500.5',
              expired: '0',
              carried: '0',
              overage_credits: '500.5',
              // 500.5 × 0.013, exact.
              overage_money: { USD: '6.5065' },
              closing_balance: '0',
            },
          },
          unpriced: [],
        },
      ]);
      expect(report.customers.light.closed_terms[0]).toMatchObject({
        final: true,
        units: {
          credits: {
            granted: '1000',
            used: '50',
            expired: '950',
            carried: '0',
            closing_balance: '0',
            overage_money: {},
          },
        },
      });
      // The stored report keeps them too.
      const stored = await store.query(
        `SELECT report FROM settlement_runs WHERE run_id = '${report.run_id}' AND status = 'completed'`,
      );
      expect(JSON.parse(stored[0]![0]!).customers.acme.closed_terms).toEqual(report.customers.acme.closed_terms);
    });

    it('given late usage for a closed term, then it lands as an adjustment in the next term and the final statement does not change', async () => {
      const before = (await statements('acme')).find((s) => s.term_end === '2026-02-15T00:00:00.000Z');
      // A minute of term 1, committed after the run that closed it.
      await usage('acme', '2026-02-14T23:00:00Z', '100');
      await purchasePackage(store, catalog, {
        customer: 'acme',
        packageId: 'credits-100',
        idempotencyKey: 'march',
        nowSec: sec('2026-03-01T00:00:00Z'),
        effectiveAtSec: sec('2026-03-01T00:00:00Z'),
      });
      await usage('acme', '2026-03-05T10:00:00Z', '1600');
      await run('2026-03-10T00:00:00Z');
      const report = await run('2026-03-20T00:00:00Z');
      const after = (await statements('acme')).find((s) => s.term_end === '2026-02-15T00:00:00.000Z');
      expect(after).toEqual(before);
      // Term 2: 500 granted + 100 purchased; used 400 + 50 (late) + 800 = 1,250; 650 past the blocks billed at
      // version 2's 0.02 USD.
      expect(report.customers.acme.closed_terms).toEqual([
        expect.objectContaining({
          plan_version: 2,
          term_start: '2026-02-15T00:00:00.000Z',
          term_end: '2026-03-15T00:00:00.000Z',
          final: true,
          units: {
            credits: {
              name: 'Credits',
              internal_name: 'Credits',
              opening_balance: '0',
              granted: '500',
              grants: [{ source: 'plan', id: 'pro', granted: '500' }],
              purchased: '100',
              used: '1250',
              expired: '0',
              carried: '0',
              overage_credits: '650',
              overage_money: { USD: '13' },
              closing_balance: '0',
            },
          },
        }),
      ]);
      const ledger = await api(base, 'GET', '/v1/customers/acme/ledger?limit=1000');
      expect(
        (ledger.body.entries as any[])
          .filter((e) => e.kind === 'adjustment' && e.effective_at === '2026-02-20T00:00:00.000Z')
          .map((e) => e.amount),
      ).toContain('-50');
    });

    it('given the ledger, then every statement is its sums: entries effective in the term (an expiry at the end counted in the ending term), the opening balance everything before', async () => {
      for (const customer of ['acme', 'light']) {
        const entries = (await api(base, 'GET', `/v1/customers/${customer}/ledger?limit=1000`)).body.entries as any[];
        const list = await statements(customer);
        expect(list.length).toBeGreaterThan(0);
        for (const statement of list) {
          const [start, end] = [Date.parse(statement.term_start), Date.parse(statement.term_end)];
          const at = (e: any): number => Date.parse(e.effective_at) - (e.kind === 'expiry' ? 1 : 0);
          const sum = (filter: (e: any) => boolean): string =>
            formatAmount(entries.filter(filter).reduce((s, e) => s.plus(e.amount), money(0)));
          const inTerm = (kind: string) => (e: any) => e.kind === kind && at(e) >= start && at(e) < end;
          const u = statement.units.credits;
          expect(u.opening_balance).toBe(sum((e) => at(e) < start));
          expect(u.closing_balance).toBe(sum((e) => at(e) < end));
          expect(u.granted).toBe(sum(inTerm('grant')));
          expect(u.purchased).toBe(sum(inTerm('purchase')));
          expect(u.expired).toBe(formatAmount(money(sum(inTerm('expiry'))).negated()));
          expect(u.overage_credits).toBe(sum(inTerm('overage')));
          expect(u.used).toBe(
            formatAmount(
              money(sum(inTerm('usage')))
                .plus(sum(inTerm('adjustment')))
                .negated(),
            ),
          );
        }
      }
    });

    it('serves the newest closed terms first, final once settled past their end, bounded by ?limit, refusing a bad limit', async () => {
      nowMs = Date.parse('2026-04-16T00:00:00Z');
      const list = await statements('acme');
      // Mar 15 – Apr 15 has ended but no run has passed its end yet.
      expect(list.map((s) => [s.term_end, s.final])).toEqual([
        ['2026-04-15T00:00:00.000Z', false],
        ['2026-03-15T00:00:00.000Z', true],
        ['2026-02-15T00:00:00.000Z', true],
      ]);
      expect((await statements('acme', '?limit=1')).map((s) => s.term_end)).toEqual(['2026-04-15T00:00:00.000Z']);
      const bad = await api(base, 'GET', '/v1/customers/acme/statements?limit=0');
      expect(bad.status).toBe(400);
      expect(await statements('nobody')).toEqual([]);
    });

    it('given thousands of customers with long ids whose terms end in one run, then each gets its statement (the statement query is cut to fit max_query_size)', async () => {
      const many = Array.from({ length: 3_000 }, (_, i) => `customer-${String(i).padStart(5, '0')}-${'x'.repeat(90)}`);
      const big = parseCatalog({
        ...catalogDocument,
        subscriptions: [
          ...catalogDocument.subscriptions,
          ...many.map((customer, i) => ({
            id: `sub-many-${i}`,
            customer,
            plan: 'pro',
            plan_version: 1,
            start: '2026-03-20T00:00:00Z',
            end: '2026-04-10T00:00:00Z',
          })),
        ],
      });
      const report = await settle(store, big, {
        untilSec: sec('2026-04-20T00:00:00Z'),
        nowSec: sec('2026-04-20T00:01:00Z'),
      });
      const closed = many.map((customer) => report.customers[customer]?.closedTerms ?? []);
      expect(
        closed.every(
          (terms) =>
            terms.length === 1 && terms[0]!.final && formatAmount(terms[0]!.units.get('credits')!.granted) === '1000',
        ),
      ).toBe(true);
      // Each subscription's only term ends with the subscription, on April 10; its grant is left unused.
      expect(new Date(closed[0]![0]!.endSec * 1000).toISOString()).toBe('2026-04-10T00:00:00.000Z');
      expect(formatAmount(closed[2_999]![0]!.units.get('credits')!.closing)).toBe('1000');
    });
  },
);
