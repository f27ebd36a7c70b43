/**
 * `node dist/bench/hot-path.js`: CPU cost per event of each step of the
 * gateway's and the rater's hot paths, in one thread, no I/O. It says where
 * a core's time goes before the end-to-end bench says how fast the whole is.
 */
import { Unpackr } from 'msgpackr';
import { decodeBatch, expectEventArray, validateEvents } from '../shared/events/batch.js';
import { meterDefinitions } from '../catalog/model.js';
import { readCatalogFile } from '../catalog/source.js';
import { routeBatch, routeScanned } from '../ingest/route.js';
import { arrayElementOffsets, scanValidBatch } from '../ingest/msgpack-split.js';
import { Aggregator, ScannedAggregator, ScannedEvents, scanBatch } from '../rater/aggregate.js';
import { hashEventId } from '../rater/dedupe/id-hash.js';
import { flushPayload } from '../rater/flush.js';
import { join } from 'node:path';
import { repoRoot } from './children.js';
import { makeBatch } from './workload.js';

const { catalog } = readCatalogFile(join(repoRoot, 'deploy', 'demo-catalog.json'));
const meters = meterDefinitions(catalog);
const events = Number(process.argv[2] ?? 1000);
const batch = makeBatch(events, Date.now() - 60_000);
const bodies = Array.from({ length: 64 }, () => batch.nextBody());
const window = { receivedMs: Date.now(), lateMs: 7 * 86_400_000, skewMs: 300_000 };

function time(name: string, fn: (body: Buffer) => unknown): void {
  for (let i = 0; i < 200; i++) fn(bodies[i % bodies.length]!);
  const iterations = Math.max(50, Math.round(2_000_000 / events));
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn(bodies[i % bodies.length]!);
  const ns = Number(process.hrtime.bigint() - start) / iterations / events;
  process.stdout.write(
    `${name.padEnd(44)} ${ns.toFixed(0).padStart(6)} ns/event  → ${(1e9 / ns).toLocaleString('en', { maximumFractionDigits: 0 })} events/s per core\n`,
  );
}

const decoded = bodies.map((b) => decodeBatch(b, 'msgpack') as unknown[]);
let k = 0;
const plain = new Unpackr({ mapsAsObjects: true });
time('msgpackr unpack (gateway settings)', (b) => decodeBatch(b, 'msgpack'));
time('msgpackr unpack (plain)', (b) => plain.unpack(b));
time('validateEvents (gateway, window)', () => validateEvents(decoded[k++ % decoded.length]!, meters, window));
time('arrayElementOffsets', (b) => arrayElementOffsets(b));
time('routeBatch (4 partitions)', (b) => routeBatch(b, 'msgpack', decoded[k++ % decoded.length]!, 4));
time('gateway CPU total (decode+validate+route)', (b) => {
  const raw = expectEventArray(decodeBatch(b, 'msgpack'), 10_000);
  validateEvents(raw, meters, window);
  return routeBatch(b, 'msgpack', raw, 4);
});
time('gateway scan alone (scanValidBatch)', (b) => scanValidBatch(b, meters, window, 10_000, 4));
time('gateway fast path (scan+route)', (b) => {
  const scanned = scanValidBatch(b, meters, window, 10_000, 4);
  if (scanned === undefined) throw new Error('fast path refused the bench batch');
  return routeScanned(b, scanned);
});
const parsed = decoded.map((d) => validateEvents(d, meters, undefined));
const ids = new Uint32Array(3 * events);
time('hashEventId', () => {
  const list = parsed[k++ % parsed.length]!;
  for (let i = 0; i < list.length; i++) hashEventId(list[i]!.customer, list[i]!.id, ids, 3 * i);
});
time('Aggregator.addEvent', () => {
  const a = new Aggregator(meters);
  for (const e of parsed[k++ % parsed.length]!) a.addEvent(e);
  return a.drain();
});
time('rater worker total (decode+validate+hash+agg)', (b) => {
  const list = validateEvents(expectEventArray(decodeBatch(b, 'msgpack'), 1e9), meters, undefined);
  const a = new Aggregator(meters);
  for (let i = 0; i < list.length; i++) {
    hashEventId(list[i]!.customer, list[i]!.id, ids, 3 * i);
    a.addEvent(list[i]!);
  }
  return a.drain();
});
const rows = (() => {
  const a = new Aggregator(meters);
  for (const e of parsed[0]!) a.addEvent(e);
  return a.drain();
})();
time(`flushPayload (${rows.length} rows per ${events} events)`, () => flushPayload(rows, 0, 1, 1_700_000_000));
const scanned = new ScannedEvents();
time('rater worker fast path (scan+hash+agg)', (b) => {
  if (!scanBatch(b, meters, scanned, true)) throw new Error('fast path refused the bench batch');
  const sums = new ScannedAggregator();
  for (let i = 0; i < scanned.count; i++) sums.add(scanned, i);
  return sums.drain();
});
