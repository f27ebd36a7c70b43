/**
 * The command line as a user meets it: the demo (the README's first command),
 * start-up configuration errors (one JSON line, like everything a service
 * writes), --help for every command and --version.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { flagName, settings } from '../shared/config.js';
import { cliPath, repoRoot, tempDir } from './harness.js';

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

/** A service's start-up failure: exactly one line on stderr, a pino fatal line; returns it parsed. */
function fatalLine(stderr: string): {
  level: number;
  code: string;
  msg: string;
  problems: { field: string; message: string }[];
} {
  const lines = stderr.split('\n').filter((line) => line !== '');
  expect(lines, stderr).toHaveLength(1);
  const line = JSON.parse(lines[0]!);
  expect(line).toMatchObject({ level: 60, time: expect.any(Number), msg: expect.stringMatching(/^drawdown: /) });
  return line;
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
    expect(result.stdout).toBe('');
    const failure = fatalLine(result.stderr);
    expect(failure.code).toBe('config_invalid');
    for (const problem of [
      'DRAWDOWN_NATS_URL (or --nats-url) is required',
      'DRAWDOWN_CLICKHOUSE_URL (or --clickhouse-url) is required',
      'DRAWDOWN_PARTITIONS must be 1–256, got 0',
      'DRAWDOWN_FLUSH_INTERVAL_MS must be a whole number, got "soon"',
    ]) {
      expect(failure.msg).toContain(problem);
      expect(failure.problems.some((p) => p.message.startsWith(problem))).toBe(true);
    }
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
    expect(fatalLine(result.stderr).problems).toContainEqual(
      expect.objectContaining({ field: '--htp-port', message: 'unknown flag --htp-port' }),
    );
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
      expect(fatalLine(result.stderr).problems).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            field: 'rate_card.versions[0].effective_from',
            message: 'rate_card.versions[0].effective_from must fall on a whole minute',
          }),
          expect.objectContaining({
            field: 'rate_card.versions[0].rows[0].meter',
            message: 'meter tokenz is not defined',
          }),
          expect.objectContaining({
            field: 'rate_card.versions[0].rows[0].unit',
            message: 'credit unit credits is not defined',
          }),
        ]),
      );
    } finally {
      dir.remove();
    }
  });

  describe('--help and --version', () => {
    // Each command's own usage line, and flags its help must name (its own flags and the settings it needs).
    const commands: Record<string, { usage: string; names: string[] }> = {
      start: {
        usage: 'usage: drawdown start',
        names: Object.keys(settings).map(flagName),
      },
      ingest: { usage: 'usage: drawdown ingest', names: ['--nats-url', 'DRAWDOWN_API_KEYS', '--batch-events-max'] },
      rater: { usage: 'usage: drawdown rater', names: ['--nats-url', '--clickhouse-url', '--rater-partitions'] },
      settlement: { usage: 'usage: drawdown settlement', names: ['--clickhouse-url', '--settle-every-ms'] },
      settle: { usage: 'usage: drawdown settle', names: ['--until', '--close-period', '--output', '--clickhouse-url'] },
      demo: { usage: 'usage: drawdown demo', names: ['--data-dir'] },
      keys: { usage: 'usage: drawdown keys new', names: ['--scopes', '--id'] },
      catalog: { usage: 'usage: drawdown catalog apply FILE', names: ['--dry-run', '--revision', '--clickhouse-url'] },
    };

    it.each(Object.entries(commands))(
      "drawdown %s --help prints that command's usage and flags, starts nothing, and exits 0",
      (command, { usage, names }) => {
        // No settings at all: a command that tried to run would fail for want of them.
        const result = runCli([command, '--help'], { DRAWDOWN_NATS_URL: '', DRAWDOWN_CLICKHOUSE_URL: '' });
        expect(result.status, result.stderr).toBe(0);
        expect(result.stderr).toBe('');
        expect(result.stdout.startsWith(usage)).toBe(true);
        for (const name of names) expect(result.stdout).toContain(name);
        expect(result.stdout).not.toContain('unknown flag');
      },
    );

    it('drawdown --help (and help <command>) lists every command; an unknown command exits 2', () => {
      const overall = runCli(['--help']);
      expect(overall.status).toBe(0);
      for (const command of Object.keys(commands)) expect(overall.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
      const viaHelp = runCli(['help', 'settle']);
      expect(viaHelp.status).toBe(0);
      expect(viaHelp.stdout).toBe(runCli(['settle', '--help']).stdout);
      const unknown = runCli(['stat']);
      expect(unknown.status).toBe(2);
      expect(unknown.stderr).toContain('unknown command stat');
    });

    it('drawdown --version prints the version in package.json and exits 0', () => {
      const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
      const result = runCli(['--version']);
      expect(result.status).toBe(0);
      expect(result.stdout).toBe(`drawdown ${version}\n`);
    });
  });
});
