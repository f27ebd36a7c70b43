/**
 * The stages' import rules (issue 11), checked on the source as it is:
 * data flows shared → catalog → ingest → rater → settlement, and deploy and
 * bench sit on top. A stage imports only the stages the README's layout
 * table allows — never a later one, and ingest, the rater and settlement
 * never each other (they meet through the stream and ClickHouse contracts in
 * shared/); shared/ imports no stage; and no files import each other in a
 * circle, type-only imports included (a cycle of types is still a knot a
 * reader has to untie). Tests may import anything. The SDK (sdk/, its own
 * package) imports nothing of the server, and nothing of the server imports
 * it. chDB is loaded only where it is used (issue 14): by one dynamic import.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './harness.js';

const stages = ['shared', 'catalog', 'ingest', 'rater', 'settlement', 'deploy', 'bench', 'sdk'] as const;
type Stage = (typeof stages)[number];

/** What each stage may import (README › Layout). */
const mayImport: Record<Stage, readonly Stage[]> = {
  shared: ['shared'],
  catalog: ['shared', 'catalog'],
  ingest: ['shared', 'catalog', 'ingest'],
  rater: ['shared', 'catalog', 'rater'],
  settlement: ['shared', 'catalog', 'settlement'],
  deploy: ['shared', 'catalog', 'ingest', 'rater', 'settlement', 'deploy'],
  bench: stages,
  sdk: ['sdk'],
};

function tsFiles(): string[] {
  return execFileSync('git', ['ls-files', '-co', '--exclude-standard', '*.ts'], {
    cwd: repoRoot,
    encoding: 'utf8',
  }).split('\n');
}

function sourceFiles(): string[] {
  return tsFiles().filter(
    (f) =>
      f !== '' &&
      !f.startsWith('node_modules/') &&
      !f.startsWith('dist/') &&
      !f.startsWith('test/') &&
      !f.endsWith('.test.ts') &&
      !f.endsWith('.d.ts'),
  );
}

/** Relative imports of a file (static, dynamic and `export … from`), as repo paths of .ts files. */
export function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) {
    const target = normalize(join(dirname(file), m[1]!)).replace(/\.js$/, '.ts');
    out.push(target);
  }
  return out;
}

function stageOf(file: string): number {
  const top = file.split('/')[0]!;
  return stages.indexOf(top as (typeof stages)[number]);
}

const graph = new Map<string, string[]>(
  sourceFiles().map((f) => [f, importsOf(f, readFileSync(join(repoRoot, f), 'utf8'))]),
);

describe('the import graph', () => {
  it('reads imports of every kind (a check that finds nothing would pass anything)', () => {
    expect(
      importsOf(
        'a/b.ts',
        "import x from '../c/d.js';\nexport { y } from './e.js';\nconst z = await import('./f.js');\nimport './g.js';",
      ),
    ).toEqual(['c/d.ts', 'a/e.ts', 'a/f.ts', 'a/g.ts']);
    expect(graph.size).toBeGreaterThan(100);
    expect(graph.get('settlement/settle.ts')).toContain('catalog/model.ts');
  });

  it('imports only the stages each stage may: never a later one, ingest/rater/settlement never each other, shared/ no stage at all', () => {
    const wrong: string[] = [];
    for (const [file, imports] of graph) {
      const from = stageOf(file);
      if (from < 0) continue;
      for (const target of imports) {
        const to = stageOf(target);
        if (to < 0) continue;
        if (!mayImport[stages[from]!].includes(stages[to]!)) wrong.push(`${file} → ${target}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('has no circles', () => {
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const path: string[] = [];
    const visit = (file: string): void => {
      state.set(file, 'open');
      path.push(file);
      for (const next of graph.get(file) ?? []) {
        if (!graph.has(next)) continue;
        if (state.get(next) === 'open') circles.push([...path.slice(path.indexOf(next)), next].join(' → '));
        else if (state.get(next) === undefined) visit(next);
      }
      path.pop();
      state.set(file, 'done');
    };
    for (const file of [...graph.keys()].sort()) if (state.get(file) === undefined) visit(file);
    expect(circles).toEqual([]);
  });

  it('keeps test code out of the build: no source file outside test/ imports vitest or the test harness', () => {
    const leaks = [...graph].filter(
      ([file, imports]) =>
        imports.some((t) => t.startsWith('test/')) ||
        /from ['"]vitest['"]/.test(readFileSync(join(repoRoot, file), 'utf8')),
    );
    expect(leaks.map(([f]) => relative('.', f))).toEqual([]);
  });

  it('loads chdb (an optional peer dependency) only where chDB is used: no static import anywhere, tests included; one dynamic import', () => {
    const files = tsFiles().filter((f) => f !== '' && !f.startsWith('node_modules/') && !f.endsWith('.d.ts'));
    const text = (f: string): string => readFileSync(join(repoRoot, f), 'utf8');
    const staticChdb = /(?:\bfrom\s*|\bimport\s+|\brequire\(\s*|\bimport\(\s*)['"]chdb(?:\/[^'"]*)?['"]/;
    expect(files.filter((f) => staticChdb.test(text(f)))).toEqual([]);
    // The one dynamic import of a computed name in shipped code is chdb's: tsc does not resolve it, so a build
    // without chdb compiles. (Tests are left out here: test/traces.test.ts has `import(` in a regular expression.)
    expect(
      files.filter((f) => !f.startsWith('test/') && !f.endsWith('.test.ts') && /\bimport\(\s*(?!['"`])/.test(text(f))),
    ).toEqual(['shared/clickhouse/chdb-store.ts']);
    expect(text('shared/clickhouse/chdb-store.ts')).toMatch(
      /const chdbPackage = 'chdb';[\s\S]*await import\(chdbPackage\)/,
    );
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    expect(manifest.dependencies.chdb).toBeUndefined();
    // A dev and optional peer dependency: `npm ci --omit=dev` (a production install) leaves it out, and msgpackr's
    // native decoder, an optional dependency, stays in.
    expect(manifest.optionalDependencies?.chdb).toBeUndefined();
    expect(manifest.devDependencies.chdb).toBeDefined();
    expect(manifest.peerDependenciesMeta.chdb).toEqual({ optional: true });
  });
});
