/**
 * The alerting rules in deploy/compose/alerts.yml: Prometheus's own checker
 * (`promtool check rules`, Debian's `prometheus` package) accepts them,
 * prometheus.yml loads them, and every drawdown metric they name is one
 * docs/metrics.md documents (which test/prometheus.test.ts keeps equal to
 * what /metrics serves).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { findBinary } from '../deploy/server-process.js';
import { repoRoot } from './harness.js';

const composeDir = join(repoRoot, 'deploy', 'compose');

describe('alerting rules', () => {
  it('given deploy/compose/alerts.yml, when promtool checks it, then it passes', () => {
    const check = spawnSync(findBinary('promtool'), ['check', 'rules', join(composeDir, 'alerts.yml')], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('is loaded by the compose Prometheus and names only documented metrics, the dead-letter one included', () => {
    const config = parse(readFileSync(join(composeDir, 'prometheus.yml'), 'utf8')) as { rule_files: string[] };
    expect(config.rule_files).toContain('alerts.yml');
    const rules = parse(readFileSync(join(composeDir, 'alerts.yml'), 'utf8')) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    const all = rules.groups.flatMap((g) => g.rules);
    expect(all.map((r) => r.alert)).toContain('DrawdownDeadLetters');
    const documented = readFileSync(join(repoRoot, 'docs', 'metrics.md'), 'utf8');
    for (const rule of all)
      for (const [metric] of rule.expr.matchAll(/drawdown_[a-z_]+/g)) expect(documented).toContain(`\`${metric}\``);
  });
});
