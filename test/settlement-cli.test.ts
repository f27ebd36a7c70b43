/**
 * `drawdown settle` as an operator runs it (the k8s CronJob), a child process
 * of the compiled build against chDB: every line it writes is one JSON object.
 * A run over a few hundred customers tells how far it has come in pino lines
 * on stderr (not a terminal here), and stdout holds the report alone, one JSON
 * line, so `drawdown settle > report.json` keeps a clean report; with
 * `--output FILE` the report goes to the file and stdout gets one log line
 * naming it; `settle --close-period` reports the billing terms a run closed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
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
      env: { ...process.env, DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl, DRAWDOWN_CATALOG: '', DRAWDOWN_LOG_LEVEL: 'info' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  /** Every line of `text`, parsed: fails the test if any line is not one JSON object. */
  const jsonLines = (text: string): Record<string, any>[] =>
    text
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => {
        const parsed: unknown = JSON.parse(line);
        expect(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed), line).toBe(true);
        return parsed as Record<string, any>;
      });

  it('given stderr is not a terminal, then progress is pino lines on stderr: accounts done of the total and entries so far, ending at the total', () => {
    expect(result.status, result.stderr).toBe(0);
    const lines = jsonLines(result.stderr);
    expect(
      lines.every((l) => typeof l.level === 'number' && typeof l.time === 'number' && l.service === 'drawdown-settle'),
    ).toBe(true);
    const progress = lines.filter((l) => l.msg === 'settlement progress');
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(progress[0]).toMatchObject({ accountsDone: 100, accountsTotal: 300 });
    expect(progress.at(-1)).toMatchObject({ accountsDone: 300, accountsTotal: 300, entries: 300 });
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'settlement run starting',
        until: '2026-01-01T01:00:00.000Z',
        catalogRevision: 1,
      }),
    );
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'settlement phase done', phase: 'write ledger' }));
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'settlement run finished', entriesPosted: 300 }));
  });

  it('prints the report alone on stdout as one JSON line, with every customer and the catalog revision', () => {
    expect(result.stdout.split('\n')).toHaveLength(2);
    const [report] = jsonLines(result.stdout);
    expect(report).toMatchObject({ until: '2026-01-01T01:00:00.000Z', entries_posted: customers, catalog_revision: 1 });
    expect(Object.keys(report!.customers)).toHaveLength(customers);
    // 5.00 credits per 1,000,000 input tokens.
    expect(report!.customers['c-299'].deducted).toEqual({ credits: '1500' });
  });

  it('given --output FILE, then the report is that file and stdout is one pino line naming it', () => {
    const path = `${dir.path}/report.json`;
    expect(existsSync(path)).toBe(false);
    const run = spawnSync(process.execPath, [cliPath, 'settle', '--until', '2026-01-01T01:00:00Z', '--output', path], {
      env: { ...process.env, DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl, DRAWDOWN_CATALOG: '', DRAWDOWN_LOG_LEVEL: 'info' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(run.status, run.stderr).toBe(0);
    jsonLines(run.stderr);
    expect(jsonLines(run.stdout)).toEqual([
      expect.objectContaining({ level: 30, msg: 'settlement report written', path }),
    ]);
    const written = readFileSync(path, 'utf8');
    expect(written.split('\n')).toHaveLength(2);
    // The same window again: already settled, so nothing new is posted and every entry is found posted.
    expect(JSON.parse(written)).toMatchObject({
      until: '2026-01-01T01:00:00.000Z',
      entries_posted: 0,
      catalog_revision: 1,
    });
  });

  it('given stderr is a terminal, then phases are a progress bar redrawn in place, and the log and report lines stay whole', () => {
    // `script` (util-linux, in every Debian) gives the run a pseudo-terminal for stdout and stderr.
    const command = `'${process.execPath}' '${cliPath}' settle --until 2026-01-01T01:00:00Z`;
    const run = spawnSync('script', ['-qec', command, '/dev/null'], {
      env: { ...process.env, DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl, DRAWDOWN_CATALOG: '', DRAWDOWN_LOG_LEVEL: 'info' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(run.status, run.stdout).toBe(0);
    const screen = run.stdout.replace(/\r\n/g, '\n');
    // The bar: drawn, then erased with a carriage return and erase-line before the next thing is written.
    expect(screen).toMatch(/settle: [a-z ]+ done \([\d.]+ s\)\r\x1b\[2K/);
    expect(screen).toContain('\r\x1b[2K');
    expect(screen).not.toContain('"msg":"settlement phase done"');
    // What is left once each erased bar is taken out: whole JSON lines only.
    const lines = screen
      .split('\n')
      .map((line) => line.replace(/^[^\n]*\x1b\[2K/, ''))
      .filter((line) => line !== '');
    const parsed = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(parsed.map((l) => l.msg ?? 'report')).toEqual([
      'settlement run starting',
      'settlement run finished',
      'report',
    ]);
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
    const logged = jsonLines(closing.stderr);
    expect(logged).toContainEqual(expect.objectContaining({ msg: 'settlement run finished', closedTerms: 2 }));
    expect(logged.filter((l) => l.msg === 'billing term closed').map((l) => [l.customer, l.subscription])).toEqual([
      ['c-sub', 'sub-1'],
      ['c-sub', 'sub-1'],
    ]);

    // Closed once: a second run closes nothing more.
    const again = cli(['settle', '--close-period']);
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).closed_terms).toEqual([]);
    expect(cli(['settle', '--close-period', '--until', '2026-01-01T00:00:00Z']).status).toBe(1);
  });

  it('lists past runs and shows one, as the API does, with `drawdown settlements`', () => {
    const env = { ...process.env, DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl, DRAWDOWN_LOG_LEVEL: 'warn' };
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [cliPath, ...args], { env, encoding: 'utf8', timeout: 60_000 });
    const listed = cli(['settlements', 'list', '--limit', '1']);
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout.trim().split('\n')).toHaveLength(1);
    const page = JSON.parse(listed.stdout);
    const report = JSON.parse(result.stdout);
    const newest = page.runs[0];
    expect(newest).toMatchObject({ status: 'completed' });
    const all = JSON.parse(cli(['settlements', 'list']).stdout).runs;
    const first = all.find((r: any) => r.run_id === report.run_id);
    expect(first).toMatchObject({ until: '2026-01-01T01:00:00.000Z', customer_count: customers });
    const one = cli(['settlements', 'get', report.run_id]);
    expect(one.status, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ run_id: report.run_id, report: { run_id: report.run_id } });
    expect(cli(['settlements', 'get', 'run:1:2']).status).toBe(1);
    expect(cli(['settlements', 'list', '--limit', '0']).status).toBe(2);
  });
});
