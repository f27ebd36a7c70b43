/**
 * The command line as a user meets it: the demo (the README's first command)
 * and start-up configuration errors.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cliPath, tempDir } from './harness.js';

function runCli(
  args: string[],
  env: Record<string, string> = {},
): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [cliPath, ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('drawdown CLI', () => {
  it('demo streams SPEC examples 1 and 2 through the all-in-one and prints balances 88 and 0, then a credit hold', () => {
    const dir = tempDir('demo');
    try {
      const result = runCli(['demo', '--data-dir', dir.path]);
      expect(result.status, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toMatch(/acme[\s\S]*balance {2}credits: settled 88, pending 0, available 88\.00/);
      expect(result.stdout).toMatch(/studio[\s\S]*balance {2}credits: settled 0, pending 0, available 0\.00/);
      expect(result.stdout).toContain('demo OK');
      expect(result.stdout).toMatch(/reserved 10 credits +pending 0, held 10, available 78/);
      expect(result.stdout).toMatch(/asks for 200 +→ 402 insufficient_credits \(available 78\)/);
      expect(result.stdout).toMatch(/released: the unspent 7 return +pending 3, held 0, available 85/);
      expect(result.stdout).toContain('holds OK');
    } finally {
      dir.remove();
    }
  });

  it('refuses to start with every configuration problem listed, and exits 1', () => {
    const result = runCli(['rater'], {
      DRAWDOWN_PARTITIONS: '0',
      DRAWDOWN_FLUSH_INTERVAL_MS: 'soon',
      DRAWDOWN_NATS_URL: '',
      DRAWDOWN_CLICKHOUSE_URL: '',
      DRAWDOWN_CATALOG: '',
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('DRAWDOWN_NATS_URL (or --nats-url) is required');
    expect(result.stderr).toContain('DRAWDOWN_CLICKHOUSE_URL (or --clickhouse-url) is required');
    expect(result.stderr).toContain('DRAWDOWN_PARTITIONS must be 1–256, got 0');
    expect(result.stderr).toContain('DRAWDOWN_FLUSH_INTERVAL_MS must be a whole number, got "soon"');
  });

  it('names an unknown flag instead of ignoring it', () => {
    const result = runCli([
      'ingest',
      '--nats-url',
      'nats://127.0.0.1:4222',
      '--catalog',
      'deploy/demo-catalog.json',
      '--htp-port',
      '1',
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('unknown flag --htp-port');
  });

  it('refuses an invalid catalog with every problem and its path', () => {
    const dir = tempDir('catalog');
    try {
      const path = `${dir.path}/catalog.json`;
      const catalog = {
        meters: [{ key: 'tokens' }],
        rate_card: {
          versions: [
            {
              version: 'v1',
              effective_from: '2026-01-01T00:00:30Z',
              rows: [{ meter: 'tokenz', unit: 'credits', price: { model: 'unit', amount: '1' } }],
            },
          ],
        },
      };
      writeFileSync(path, JSON.stringify(catalog));
      const result = runCli(['ingest', '--nats-url', 'nats://127.0.0.1:4222', '--catalog', path]);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain(
        'rate_card.versions[0].effective_from: rate_card.versions[0].effective_from must fall on a whole minute',
      );
      expect(result.stderr).toContain('rate_card.versions[0].rows[0].meter: meter tokenz is not defined');
      expect(result.stderr).toContain('rate_card.versions[0].rows[0].unit: credit unit credits is not defined');
    } finally {
      dir.remove();
    }
  });
});
