/**
 * `npm run bench:dedupe`: what remembering event ids costs the rater, per
 * window size. For each window N it streams 3N distinct ids (so the set
 * rotates) plus a repeat of every 10th recent id, through
 *   (a) the rater's IdSet: fingerprint + add, fixed SharedArrayBuffer;
 *   (b) a baseline measured in the same run: two JavaScript Set<string> of
 *       `customer\0id` rotated the same way (the obvious implementation).
 * It reports ids/s and bytes per remembered id for each, and the ratios.
 * Memory of (a) is its buffer (allocated once); of (b), the heap growth
 * after a forced GC. Results: bench/results/dedupe.{json,md}.
 *
 * Run with --expose-gc (the npm script does). Flags: --windows 100000,1000000
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hashEventId } from '../rater/dedupe/id-hash.js';
import { IdSet } from '../rater/dedupe/id-set.js';
import { parseArgs } from '../shared/config.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const log = (line: string): void => void process.stdout.write(`[bench:dedupe] ${line}\n`);
const gc = (globalThis as { gc?: () => void }).gc;

interface Row {
  window: number;
  ids: number;
  idSet: { idsPerSecond: number; bytesPerId: number; duplicatesDropped: number };
  baseline: { idsPerSecond: number; bytesPerId: number; duplicatesDropped: number };
}

function customerOf(i: number): string {
  return `customer-${i % 1_000}`;
}

function idOf(i: number): string {
  return `evt-${i.toString(36)}-${(i * 2_654_435_761) >>> 0}`;
}

/** The workload: index i, and every 10th step a repeat of an id from within the window. */
function* workload(window: number): Generator<number> {
  const total = 3 * window;
  for (let i = 0; i < total; i++) {
    yield i;
    if (i % 10 === 0 && i > 0) yield i - 1 - ((i * 7) % Math.min(i, window));
  }
}

function measureIdSet(window: number): Row['idSet'] & { ids: number } {
  const set = IdSet.create(window);
  const out = new Uint32Array(3);
  let ids = 0;
  let duplicates = 0;
  const started = process.hrtime.bigint();
  for (const i of workload(window)) {
    hashEventId(customerOf(i), idOf(i), out, 0);
    if (!set.add(out[0]!, out[1]!, out[2]!)) duplicates++;
    ids++;
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    ids,
    idsPerSecond: Math.round(ids / seconds),
    bytesPerId: Math.round((set.buffer.byteLength / window) * 10) / 10,
    duplicatesDropped: duplicates,
  };
}

function measureBaseline(window: number): Row['baseline'] {
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  let current = new Set<string>();
  let previous = new Set<string>();
  let ids = 0;
  let duplicates = 0;
  let heapPeak = 0;
  const started = process.hrtime.bigint();
  for (const i of workload(window)) {
    const key = `${customerOf(i)}\u0000${idOf(i)}`;
    ids++;
    if (current.has(key) || previous.has(key)) {
      duplicates++;
      continue;
    }
    current.add(key);
    if (current.size >= window) {
      if (gc === undefined) heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
      previous = current;
      current = new Set();
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  // Measured with both generations full, as the IdSet's buffer is sized for.
  gc?.();
  const held = gc === undefined ? heapPeak : process.memoryUsage().heapUsed;
  const bytesPerId = Math.round(((held - heapBefore) / (previous.size + current.size || 1)) * 10) / 10;
  return { idsPerSecond: Math.round(ids / seconds), bytesPerId, duplicatesDropped: duplicates };
}

function main(): void {
  const { flags } = parseArgs(process.argv.slice(2));
  const windows = (flags.get('--windows') ?? '100000,1000000').split(',').map(Number);
  if (windows.some((w) => !Number.isInteger(w) || w < 1 || w > 2 ** 24))
    throw new RangeError('--windows takes whole numbers 1–16777216');
  if (gc === undefined) log('warning: run with node --expose-gc for exact baseline memory');
  const rows: Row[] = [];
  for (const window of windows) {
    log(`window ${window.toLocaleString('en-US')}: IdSet…`);
    const idSet = measureIdSet(window);
    log(`window ${window.toLocaleString('en-US')}: baseline Set<string>…`);
    const baseline = measureBaseline(window);
    if (idSet.duplicatesDropped !== baseline.duplicatesDropped)
      throw new Error(
        `IdSet dropped ${idSet.duplicatesDropped} repeats, the baseline ${baseline.duplicatesDropped}: they must agree`,
      );
    rows.push({
      window,
      ids: idSet.ids,
      idSet: {
        idsPerSecond: idSet.idsPerSecond,
        bytesPerId: idSet.bytesPerId,
        duplicatesDropped: idSet.duplicatesDropped,
      },
      baseline,
    });
  }
  const at = new Date().toISOString();
  const md = [
    `# Event-id dedupe ${at}`,
    '',
    `Node ${process.version}. Each window N: 3N distinct ids (the set rotates) plus a repeat of a recent id every 10th step; both implementations drop exactly the same repeats.`,
    '',
    '| window (ids) | ids streamed | IdSet ids/s | baseline ids/s | speed ÷ baseline | IdSet bytes/id | baseline bytes/id | memory ÷ baseline | repeats dropped |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.window.toLocaleString('en-US')} | ${r.ids.toLocaleString('en-US')} | ${r.idSet.idsPerSecond.toLocaleString('en-US')} | ${r.baseline.idsPerSecond.toLocaleString('en-US')} | ${(r.idSet.idsPerSecond / r.baseline.idsPerSecond).toFixed(2)} | ${r.idSet.bytesPerId} | ${r.baseline.bytesPerId} | ${(r.idSet.bytesPerId / r.baseline.bytesPerId).toFixed(2)} | ${r.idSet.duplicatesDropped.toLocaleString('en-US')} |`,
    ),
    '',
    'IdSet memory is fixed at start (its SharedArrayBuffer) and never grows with volume; the baseline grows with id length and is garbage-collected.',
    '',
  ].join('\n');
  const dir = join(repoRoot, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'dedupe.json'), `${JSON.stringify({ at, node: process.version, rows }, null, 2)}\n`);
  writeFileSync(join(dir, 'dedupe.md'), md);
  process.stdout.write(md);
}

main();
