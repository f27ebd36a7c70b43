/**
 * Catalog-as-code from the command line: `drawdown catalog apply FILE
 * [--dry-run]` and `drawdown catalog get`, as real child processes of the
 * compiled build against chDB, and `settle` pricing with the store's catalog.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { catalogPath, cliPath, tempDir } from './harness.js';

describe('drawdown catalog apply and get', () => {
  const dir = tempDir('catalog-apply');
  const clickhouseUrl = `chdb:${dir.path}/chdb`;
  const file = `${dir.path}/catalog.json`;
  const demo = (): any => JSON.parse(readFileSync(catalogPath, 'utf8'));

  function cli(
    args: string[],
    env: Record<string, string> = {},
  ): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync(process.execPath, [cliPath, ...args], {
      env: {
        ...process.env,
        DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl,
        DRAWDOWN_CATALOG: '',
        DRAWDOWN_LOG_LEVEL: 'warn',
        ...env,
      },
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  afterAll(() => dir.remove());

  it('given an empty store, a dry run shows every entity as added and writes nothing', () => {
    writeFileSync(file, JSON.stringify(demo()));
    const dry = cli(['catalog', 'apply', file, '--dry-run']);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('+ meter gpt-4o.input_tokens (added)');
    expect(dry.stdout).toContain('+ package credits-100 (added)');
    expect(dry.stdout).toContain('dry run: nothing written (revision 0 is in force)');
    const get = cli(['catalog', 'get']);
    expect(get.status).toBe(1);
    expect(get.stderr).toContain('the catalog store is empty');
  });

  it('applies a file as revision 1 with progress lines, and applying it again is a no-op', () => {
    const first = cli(['catalog', 'apply', file]);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain('applied: revision 1 (was 0)');
    expect(first.stderr).toContain(`reading ${file}`);
    expect(first.stderr).toContain('writing revision 1');
    const again = cli(['catalog', 'apply', file]);
    expect(again.status).toBe(0);
    expect(again.stdout).toContain('no changes\n');
    expect(again.stdout).toContain('no changes: revision 1 is in force');
  });

  it('given a changed price, a dry run shows the field that changes and the apply writes revision 2', () => {
    const next = demo();
    next.packages[0].price.amount = '90.00';
    next.meters.push({ key: 'tts.seconds', name: 'TTS seconds' });
    writeFileSync(file, JSON.stringify(next));
    // The flag may come first, too.
    const dry = cli(['catalog', 'apply', '--dry-run', file]);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('~ package credits-100\n    price.amount: "100.00" → "90.00"\n');
    expect(dry.stdout).toContain('+ meter tts.seconds (added)');
    expect(dry.stdout).toContain('1 added, 1 changed, 0 removed');
    expect(JSON.parse(cli(['catalog', 'get']).stdout).packages[0].price.amount).toBe('100.00');

    const applied = cli(['catalog', 'apply', file]);
    expect(applied.stdout).toContain('applied: revision 2 (was 1)');
    const get = cli(['catalog', 'get']);
    expect(get.stderr).toMatch(/^revision 2, applied .* by cli:/m);
    expect(JSON.parse(get.stdout).packages[0].price.amount).toBe('90.00');
    expect(JSON.parse(cli(['catalog', 'get', '--revision', '1']).stdout).packages[0].price.amount).toBe('100.00');
  });

  it('given an invalid file, exits 1 listing every problem with its path, and writes nothing', () => {
    const bad = demo();
    bad.meters[0].aggregation = 'avg';
    bad.packages[0].credits = '-5';
    // A CloudEvents mapping with no quantity path for a sum meter, grouping by an undeclared dimension.
    bad.meters[1].event_type = 'image.generated';
    bad.meters[1].group_by = { style: '$.style' };
    writeFileSync(file, JSON.stringify(bad));
    const result = cli(['catalog', 'apply', file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('meters[0].aggregation');
    expect(result.stderr).toContain('packages[0].credits');
    expect(result.stderr).toContain('meters[1].value_property');
    expect(result.stderr).toContain('meters[1].group_by.style');
    writeFileSync(file, '{"meters": [');
    const broken = cli(['catalog', 'apply', file]);
    expect(broken.status).toBe(1);
    expect(broken.stderr).toContain('is not valid JSON');
    expect(cli(['catalog', 'get']).stderr).toMatch(/^revision 2,/m);
  });

  it('given a change to data in use, exits 1 naming each field, and writes nothing', () => {
    const next = demo();
    next.packages[0].price.amount = '90.00';
    next.meters[0].aggregation = 'max';
    // tts.seconds is left out: meters are archived, not removed.
    writeFileSync(file, JSON.stringify(next));
    const result = cli(['catalog', 'apply', file, '--dry-run']);
    expect(result.status).toBe(1);
    // What the file would change is still shown, then why it is refused.
    expect(result.stdout).toContain('~ meter gpt-4o.input_tokens\n    aggregation: "sum" → "max"\n');
    expect(result.stdout).toContain('- meter tts.seconds (removed)');
    expect(result.stderr).toContain('meters[0].aggregation');
    expect(result.stderr).toContain('meter tts.seconds cannot be removed');
    expect(cli(['catalog', 'get']).stderr).toMatch(/^revision 2,/m);
  });

  it('settle prices with the latest revision in the store, without a catalog file, and says which', () => {
    const result = cli(['settle', '--until', '2026-01-01T00:00:00Z']);
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ catalog_revision: 2 });
  });

  it('given an apply killed between proposing and committing, then the catalog stays as it was, and applying the file again commits it', () => {
    const next = demo();
    next.packages[0].price.amount = '80.00';
    next.meters.push({ key: 'tts.seconds', name: 'TTS seconds' });
    writeFileSync(file, JSON.stringify(next));
    const killed = spawnSync(process.execPath, [cliPath, 'catalog', 'apply', file], {
      env: { ...process.env, DRAWDOWN_CLICKHOUSE_URL: clickhouseUrl, DRAWDOWN_FAULT: 'catalog-after-proposal' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(killed.signal, killed.stderr).toBe('SIGKILL');
    expect(cli(['catalog', 'get']).stderr).toMatch(/^revision 2,/m);
    expect(JSON.parse(cli(['catalog', 'get']).stdout).packages[0].price.amount).toBe('90.00');
    // The dead proposal holds the same document, so it does not block this one.
    const again = cli(['catalog', 'apply', file]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toContain('applied: revision 3 (was 2)');
  });

  it('shows its usage for a malformed command', () => {
    const result = cli(['catalog', 'apply']);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('usage: drawdown catalog apply FILE [--dry-run]');
  });
});
