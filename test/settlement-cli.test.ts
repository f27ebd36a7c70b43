/**
 * `drawdown settle` as an operator runs it, a child process of the compiled
 * build against chDB: a run over a few hundred customers tells how far it
 * has come on stderr, and stdout holds the report JSON alone, so
 * `drawdown settle > report.json` keeps a clean report; `settle
 * --close-period` prints the billing terms a run closed.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteColumns } from '../shared/clickhouse/usage-minute.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { catalogPath, cliPath, tempDir } from './harness.js';

const customers = 300;
const usageAtSec = Date.parse('2026-01-01T00:05:00Z') / 1000;
// A subscription that started 75 days ago: two monthly terms have ended since, the third has not.
const subscriptionStartMs = Math.floor((Date.now() - 75 * 86_400_000) / 60_000) * 60_000;
const subscriptionUsageSec = subscriptionStartMs / 1000 + 86_400;

describe('drawdown settle over a few hundred customers', () => {
  const dir = tempDir('settlement-cli');
  const clickhouseUrl = `chdb:${dir.path}/chdb`;
  let result: { status: number | null; stdout: string; stderr: string };

  beforeAll(async () => {
    // Usage as the rater commits it: one row per customer, one flush.
    const store = await openStore(clickhouseUrl);
    await ensureSchema(store);
    const rows = Array.from({ length: customers }, (_, i) => [
      `c-${String(i).padStart(3, '0')}`,
      'gpt-4o.input_tokens',
      '{}',
      tsvDateTime(usageAtSec),
      String(1_000_000 * (i + 1)),
      '1',
      '0',
      '1',
      tsvDateTime(usageAtSec),
    ]);
    await store.insert('usage_minute', usageMinuteColumns, encodeTsv(rows));
    // For --close-period: 4,000,000 tokens = 20 credits a day into the subscription's first term (not taken by the
    // first run).
    await store.insert(
      'usage_minute',
      usageMinuteColumns,
      encodeTsv([
        [
          'c-sub',
          'gpt-4o.input_tokens',
          '{}',
          tsvDateTime(subscriptionUsageSec),
          '4000000',
          '1',
          '0',
          '2',
          tsvDateTime(subscriptionUsageSec),
        ],
      ]),
    );
    await store.close();
    const run = spawnSync(process.execPath, [cliPath, 'settle', '--until', '2026-01-01T01:00:00Z'], {
      env: {
        ...process.env,
        DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl,
        DRAWDOWN_CATALOG: catalogPath,
        DRAWDOWN_LOG_LEVEL: 'info',
      },
      encoding: 'utf8',
      timeout: 120_000,
    });
    result = { status: run.status, stdout: run.stdout, stderr: run.stderr };
  }, 150_000);

  afterAll(() => dir.remove());

  const cli = (args: string[]): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [cliPath, ...args], {
      env: { ...process.env, DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl, DRAWDOWN_CATALOG: '', DRAWDOWN_LOG_LEVEL: 'warn' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('prints progress lines to stderr: accounts done of the total and entries so far, ending at the total', () => {
    expect(result.status, result.stderr).toBe(0);
    const progress = result.stderr
      .split('\n')
      .filter((line) => /^settle: \d+\/\d+ accounts settled, \d+ entries so far/.test(line));
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(progress[0]).toMatch(/^settle: 100\/300 accounts settled/);
    expect(progress.at(-1)).toMatch(/^settle: 300\/300 accounts settled, 300 entries so far/);
    expect(result.stderr).toContain('settle: settling up to 2026-01-01T01:00:00.000Z with catalog revision 1');
    expect(result.stderr).toContain('settle: 300 entries posted');
  });

  it('prints the report JSON alone on stdout, with every customer and the catalog revision', () => {
    const report = JSON.parse(result.stdout);
    expect(report).toMatchObject({ until: '2026-01-01T01:00:00.000Z', entries_posted: customers, catalog_revision: 1 });
    expect(Object.keys(report.customers)).toHaveLength(customers);
    // 5.00 credits per 1,000,000 input tokens.
    expect(report.customers['c-299'].deducted).toEqual({ credits: '1500' });
  });

  it('given a subscription whose terms ended, when settle --close-period runs, then it settles to the last whole minute and prints the terms it closed', () => {
    const catalog = JSON.parse(readFileSync(catalogPath, 'utf8'));
    catalog.plans = [
      {
        id: 'pro',
        billing: 'monthly',
        versions: [
          {
            version: 1,
            grants: [{ id: 'monthly', unit: 'credits', quantity: '10', frequency: 'monthly' }],
            overage: { unit: 'credits', price_per_credit: { currency: 'USD', amount: '0.02' } },
          },
        ],
      },
    ];
    catalog.subscriptions = [
      { id: 'sub-1', customer: 'c-sub', plan: 'pro', start: new Date(subscriptionStartMs).toISOString() },
    ];
    writeFileSync(`${dir.path}/catalog.json`, JSON.stringify(catalog));
    expect(cli(['catalog', 'apply', `${dir.path}/catalog.json`]).status).toBe(0);
    const beforeMs = Date.now();
    const closing = cli(['settle', '--close-period']);
    expect(closing.status, closing.stderr).toBe(0);
    const out = JSON.parse(closing.stdout);
    expect(Date.parse(out.until)).toBeGreaterThan(beforeMs - 120_000);
    expect(out.catalog_revision).toBe(2);
    expect(out.closed_terms.map((t: any) => [t.customer, t.subscription, t.final])).toEqual([
      ['c-sub', 'sub-1', true],
      ['c-sub', 'sub-1', true],
    ]);
    const [first, second] = out.closed_terms;
    expect(first.term_start).toBe(new Date(subscriptionStartMs).toISOString());
    expect(second.term_start).toBe(first.term_end);
    // 20 credits used: 10 granted, 10 billed as overage at 0.02 USD; the second term's 10 expire unused at its end.
    expect(first.units.credits).toMatchObject({
      granted: '10',
      used: '20',
      overage_credits: '10',
      overage_money: { USD: '0.2' },
      closing_balance: '0',
    });
    expect(second.units.credits).toMatchObject({
      opening_balance: '0',
      granted: '10',
      used: '0',
      expired: '10',
      closing_balance: '0',
    });
    expect(closing.stderr).toContain('settle: 2 billing terms closed');

    // Closed once: a second run closes nothing more.
    const again = cli(['settle', '--close-period']);
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).closed_terms).toEqual([]);
    expect(cli(['settle', '--close-period', '--until', '2026-01-01T00:00:00Z']).status).toBe(1);
  });
});
