/**
 * The README's quickstart, run as written: the shell blocks marked for this
 * test go through bash against a real all-in-one (`npm start` is the one line
 * replaced, by a `drawdown start` on a free port and a temp data dir), and
 * the balances they print are the ones the README's comments promise.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../deploy/free-port.js';
import { repoRoot, spawnDrawdown, tempDir, type ChildService } from './harness.js';

const marker = /<!-- test\/readme\.test\.ts runs[^>]*-->\n```sh\n([\s\S]*?)```/g;

/** The marked blocks, in order, without the `npm start` line the test stands in for. */
function quickstartScript(readme: string): string {
  const blocks = [...readme.matchAll(marker)].map((m) => m[1]!);
  const lines = blocks.flatMap((block) => block.split('\n')).filter((line) => !/^npm start\b/.test(line));
  return ['set -euo pipefail', ...lines].join('\n');
}

interface Balance {
  unit: string;
  settled: string;
  pending: string;
  held: string;
  available: string;
}

function balanceOf(line: string): Balance {
  const body = JSON.parse(line) as { customer: string; units: Balance[] };
  expect(body.customer).toBe('acme');
  return body.units.find((u) => u.unit === 'credits')!;
}

describe('README quickstart, as written', () => {
  let dir: ReturnType<typeof tempDir>;
  let server: ChildService;
  let url: string;

  beforeAll(async () => {
    dir = tempDir('readme');
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    server = spawnDrawdown('start', {
      DRAWDOWN_DATA_DIR: join(dir.path, 'data'),
      DRAWDOWN_HTTP_PORT: String(port),
      DRAWDOWN_LOG_LEVEL: 'warn',
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const ready = await fetch(`${url}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) break;
      if (Date.now() > deadline || server.child.exitCode !== null) throw new Error(`start failed:\n${server.output()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }, 90_000);

  afterAll(async () => {
    await server?.stop();
    dir?.remove();
  });

  it('marks two blocks, and the script they make is what the README shows', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    expect([...readme.matchAll(marker)]).toHaveLength(2);
    const script = quickstartScript(readme);
    expect(script).toContain('curl -s -X POST $url/v1/events');
    expect(script).not.toContain('npm start');
  });

  it('buys 100 credits, spends 10 and 0.4 through a hold, and prints the balances its comments promise', () => {
    const script = quickstartScript(readFileSync(join(repoRoot, 'README.md'), 'utf8'));
    // curl prints bodies without a trailing newline; a .curlrc only for this run
    // puts one after each, so the output splits into one response per line.
    const curlHome = join(dir.path, 'curl');
    spawnSync('mkdir', ['-p', curlHome]);
    writeFileSync(join(curlHome, '.curlrc'), 'write-out = "\\n"\n');
    const run = spawnSync('bash', ['-c', script], {
      env: { ...process.env, DRAWDOWN_URL: url, CURL_HOME: curlHome },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n');
    // Every response the README shows is JSON, and none is an error.
    for (const line of lines) {
      const body = JSON.parse(line) as { code?: string };
      expect(body.code, line).toBeUndefined();
    }
    const balances = lines.filter((l) => l.includes('"settled_until"')).map(balanceOf);
    expect(balances).toHaveLength(3);
    expect(balances[0]).toMatchObject({ settled: '100', pending: '10', available: '90' });
    expect(balances[1]).toMatchObject({ settled: '90', pending: '0', available: '90' });
    expect(balances[2]).toMatchObject({ settled: '90', pending: '0.4', held: '0', available: '89.6' });
    const hold = JSON.parse(lines.find((l) => l.startsWith('{"hold"'))!) as {
      hold: { status: string };
      available: string;
    };
    expect(hold.hold.status).toBe('open');
    expect(hold.available).toBe('89.5');
    const entitlement = JSON.parse(lines.find((l) => l.includes('"allowed"'))!) as { allowed: boolean };
    expect(entitlement.allowed).toBe(true);
  }, 90_000);
});
