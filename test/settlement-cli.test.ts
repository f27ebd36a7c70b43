/**
 * `drawdown settle` as an operator runs it, a child process of the compiled
 * build against chDB: a run over a few hundred customers tells how far it
 * has come on stderr, and stdout holds the report JSON alone, so
 * `drawdown settle > report.json` keeps a clean report.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema, usageMinuteColumns } from '../shared/clickhouse/schema.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { catalogPath, cliPath, tempDir } from './harness.js';

const customers = 300;
const usageAtSec = Date.parse('2026-01-01T00:05:00Z') / 1000;

describe('drawdown settle over a few hundred customers', () => {
  const dir = tempDir('settlement-cli');
  const clickhouseUrl = `chdb:${dir.path}/chdb`;
  let result: { status: number | null; stdout: string; stderr: string };

  beforeAll(async () => {
    // Usage as the rater commits it: one row per customer, one flush.
    const store = openStore(clickhouseUrl);
    await ensureSchema(store);
    const rows = Array.from({ length: customers }, (_, i) => [`c-${String(i).padStart(3, '0')}`, 'gpt-4o.input_tokens', '{}', tsvDateTime(usageAtSec), String(1_000_000 * (i + 1)), '1', '0', '1', tsvDateTime(usageAtSec)]);
    await store.insert('usage_minute', usageMinuteColumns, encodeTsv(rows));
    await store.close();
    const run = spawnSync(process.execPath, [cliPath, 'settle', '--until', '2026-01-01T01:00:00Z'], {
      env: { ...process.env, DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl, DRAWDOWN_CATALOG: catalogPath, DRAWDOWN_LOG_LEVEL: 'info' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    result = { status: run.status, stdout: run.stdout, stderr: run.stderr };
  }, 150_000);

  afterAll(() => dir.remove());

  it('prints progress lines to stderr: accounts done of the total and entries so far, ending at the total', () => {
    expect(result.status, result.stderr).toBe(0);
    const progress = result.stderr.split('\n').filter((line) => /^settle: \d+\/\d+ accounts settled, \d+ entries so far/.test(line));
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
});
