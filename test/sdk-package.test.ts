/**
 * @drawdown/sdk as a user gets it: `npm pack` of the workspace, installed into
 * a fresh project (≤ 5 MiB with msgpackr), and the example in sdk/README.md
 * — the doc is the test — compiled with `tsc --strict` under `tsc --init`'s
 * defaults and under DOM libs, then run against a real all-in-one
 * (`drawdown start`), printing the balance the demo catalog's prices give.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../deploy/free-port.js';
import { api, catalogPath, repoRoot, spawnDrawdown, tempDir, type ChildService } from './harness.js';

const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
const npmFlags = ['--prefer-offline', '--no-audit', '--no-fund'];
/** The URL the example names: `npm start`'s. The test's server is on a free port instead. */
const exampleUrl = 'http://127.0.0.1:8080';

function run(command: string, args: string[], cwd: string): string {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8' });
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} exited ${result.status}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/** Bytes on disk under a directory, each file once (symlinks not followed). */
function treeBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += treeBytes(path);
    else total += lstatSync(path).size;
  }
  return total;
}

/** The first ```ts block of the SDK's README: the example a user copies. */
function readmeExample(): string {
  const readme = readFileSync(join(repoRoot, 'sdk', 'README.md'), 'utf8');
  const block = /```ts\n([\s\S]*?)```/.exec(readme);
  if (block === null) throw new Error('sdk/README.md has no ```ts block');
  return block[1]!;
}

describe('@drawdown/sdk as an npm package', () => {
  const dir = tempDir('sdk-package');
  const project = join(dir.path, 'project');
  let drawdown: ChildService | undefined;

  beforeAll(() => {
    run('npm', ['pack', '--workspace', '@drawdown/sdk', '--pack-destination', dir.path, '--silent'], repoRoot);
    const tarball = readdirSync(dir.path).find((f) => f.endsWith('.tgz'));
    if (tarball === undefined) throw new Error('npm pack wrote no tarball');
    execFileSync('mkdir', [project]);
    run('npm', ['init', '-y'], project);
    run('npm', ['pkg', 'set', 'type=module'], project);
    run('npm', ['install', join(dir.path, tarball), ...npmFlags], project);
  });

  afterAll(async () => {
    await drawdown?.stop();
    dir.remove();
  });

  it('installs with msgpackr alone, in at most 5 MiB, types from built .d.ts files', () => {
    const modules = join(project, 'node_modules');
    // What the install pulled: the SDK and, under it, msgpackr alone (no pino, NATS, ClickHouse, chDB…).
    const tree = JSON.parse(run('npm', ['ls', '--all', '--json'], project));
    expect(Object.keys(tree.dependencies)).toEqual(['@drawdown/sdk']);
    expect(Object.keys(tree.dependencies['@drawdown/sdk'].dependencies)).toEqual(['msgpackr']);
    const bytes = treeBytes(modules);
    expect(bytes).toBeLessThanOrEqual(5 * 1024 * 1024);
    const sdk = join(modules, '@drawdown', 'sdk');
    const manifest = JSON.parse(readFileSync(join(sdk, 'package.json'), 'utf8'));
    expect(manifest.private).toBeUndefined();
    expect(manifest.exports['.'].types).toMatch(/\.d\.ts$/);
    const shipped = readdirSync(join(sdk, 'dist'));
    expect(shipped).toContain('index.d.ts');
    expect(shipped.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
  });

  it('compiles the README example with tsc --strict under tsc --init defaults and under DOM libs, and it prints the balance the demo prices give', async () => {
    const example = readmeExample();
    expect(example).toContain("from '@drawdown/sdk'");
    expect(example.split(exampleUrl)).toHaveLength(2);

    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    writeFileSync(join(project, 'example.ts'), example.replace(exampleUrl, url));
    // (a) whatever `tsc --init` writes (strict is on in it), emitting example.js beside the source.
    run(process.execPath, [tsc, '--init'], project);
    const initConfig = readFileSync(join(project, 'tsconfig.json'), 'utf8');
    expect(initConfig).toMatch(/^\s*"strict": true/m);
    run(process.execPath, [tsc, '-p', 'tsconfig.json', '--strict'], project);
    // (b) the same with the DOM lib, as a front-end or edge project has it.
    writeFileSync(
      join(project, 'tsconfig.dom.json'),
      JSON.stringify({ extends: './tsconfig.json', compilerOptions: { lib: ['ES2022', 'DOM'], noEmit: true } }),
    );
    run(process.execPath, [tsc, '-p', 'tsconfig.dom.json', '--strict'], project);

    drawdown = spawnDrawdown('start', {
      DRAWDOWN_HTTP_PORT: String(port),
      DRAWDOWN_DATA_DIR: join(dir.path, 'data'),
    });
    await waitReady(url, drawdown);

    // The quickstart's purchase, then the example.
    const catalog = JSON.parse(readFileSync(catalogPath, 'utf8'));
    const pkg = catalog.packages.find((p: { id: string }) => p.id === 'credits-100');
    const purchase = await api(
      url,
      'POST',
      '/v1/customers/acme/purchases',
      { package: 'credits-100' },
      {
        'idempotency-key': 'order-1',
      },
    );
    expect(purchase.status).toBe(201);

    const printed = run(process.execPath, ['example.js'], project);
    const line = /^acme credits available: (\S+) → (\S+)$/m.exec(printed);
    expect(line, printed).not.toBeNull();

    // What the demo catalog charges for what the example tracks.
    const rows: Array<{ meter: string; match?: Record<string, string>; price: Record<string, string> }> =
      catalog.rate_card.versions.at(-1).rows;
    const tokens = rows.find((r) => r.meter === 'gpt-4o.input_tokens')!.price;
    const image = rows.find(
      (r) =>
        r.meter === 'images' &&
        r.match?.model === 'Nano Banana' &&
        r.match.resolution === '1K' &&
        r.match.input === 'prompt',
    )!.price;
    const cost = (1_000_000 / Number(tokens.size)) * Number(tokens.amount) + 2 * Number(image.amount);
    expect(Number(line![1])).toBe(Number(pkg.credits));
    expect(Number(line![2])).toBe(Number(pkg.credits) - cost);

    // The HTTP API agrees with what the SDK printed.
    const balance = await api(url, 'GET', '/v1/customers/acme/balance');
    const credits = balance.body.units.find((u: { unit: string }) => u.unit === 'credits');
    expect(Number(credits.available)).toBe(Number(pkg.credits) - cost);
  });
});

async function waitReady(url: string, service: ChildService): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt++) {
    if (service.child.exitCode !== null) throw new Error(`drawdown start exited:\n${service.output()}`);
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`drawdown start was not ready within a minute:\n${service.output()}`);
}
