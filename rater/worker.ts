/**
 * Piscina worker: decode, validate, drop repeated event ids and aggregate a
 * task's batches off the main thread. Meter definitions arrive with each
 * task and are parsed again only when their catalog revision changes; a
 * partition's id set arrives as shared memory with each of its tasks.
 */
import { workerData } from 'node:worker_threads';
import { decodeBatch, expectEventArray, validateEvents } from '../shared/events/batch.js';
import type { MeterDefinitions } from '../catalog/model.js';
import { crashPoint } from '../shared/fault.js';
import {
  Aggregator,
  internedCustomers,
  internedDimensions,
  ScannedAggregator,
  ScannedEvents,
  scanBatch,
} from './aggregate.js';
import { hashEventId } from './dedupe/id-hash.js';
import { IdSet } from './dedupe/id-set.js';
import type { AggregateResult, AggregateTask } from './task.js';
import { timestampBounds } from './window.js';

let meters = (workerData as { meters: MeterDefinitions }).meters;
let metersRevision = -1;
// Per-event scratch of the fast path, reused by every task of this thread.
const scanned = new ScannedEvents();
// One view per partition's set, made once per thread.
const idSets = new WeakMap<SharedArrayBuffer, IdSet>();

function idSetOf(buffer: SharedArrayBuffer): IdSet {
  let set = idSets.get(buffer);
  if (set === undefined) {
    set = IdSet.attach(buffer);
    idSets.set(buffer, set);
  }
  return set;
}

export default function aggregateTask(task: AggregateTask): AggregateResult {
  if (task.meters.revision !== metersRevision) {
    meters = JSON.parse(task.meters.json) as MeterDefinitions;
    metersRevision = task.meters.revision;
  }
  const aggregator = new Aggregator(meters);
  internedCustomers.bound();
  internedDimensions.bound();
  const sums = new ScannedAggregator();
  const rejected: AggregateResult['rejected'] = [];
  const set = task.dedupe === undefined ? undefined : idSetOf(task.dedupe.buffer);
  set?.acquire(task.dedupe!.epoch);
  let ids = new Uint32Array(set === undefined ? 0 : 3 * 1024);
  let idWords = 0;
  let events = 0;
  let duplicates = 0;
  try {
    const count = task.formats.length;
    const data = Buffer.from(task.data.buffer, task.data.byteOffset, task.data.byteLength);
    for (let i = 0; i < count; i++) {
      const bytes = data.subarray(task.offsets[i]!, task.offsets[i + 1]!);
      const arrivedMs = task.arrivedMs[i]!;
      const bounds = timestampBounds(arrivedMs, task.window);
      scanned.oldestMs = bounds.oldestMs;
      scanned.newestMs = bounds.newestMs;
      // Fast path: the common MessagePack shapes, scanned from the bytes (rater/aggregate.ts).
      if (task.formats[i] === 0 && scanBatch(bytes, meters, scanned, set !== undefined)) {
        crashPoint('in-worker');
        // The whole message's id lookups, loaded at once (see IdSet.prefetch).
        set?.prefetch(scanned.ids, scanned.count);
        for (let e = 0; e < scanned.count; e++) {
          if (set !== undefined) {
            if (idWords + 3 > ids.length) {
              const grown = new Uint32Array(ids.length * 2);
              grown.set(ids);
              ids = grown;
            }
            const fingerprints = scanned.ids;
            if (!set.add(fingerprints[3 * e]!, fingerprints[3 * e + 1]!, fingerprints[3 * e + 2]!)) {
              duplicates++;
              continue;
            }
            ids[idWords] = fingerprints[3 * e]!;
            ids[idWords + 1] = fingerprints[3 * e + 1]!;
            ids[idWords + 2] = fingerprints[3 * e + 2]!;
            idWords += 3;
          }
          sums.add(scanned, e);
          events++;
        }
        continue;
      }
      let batch;
      try {
        const raw = expectEventArray(
          decodeBatch(bytes, task.formats[i] === 1 ? 'json' : 'msgpack'),
          Number.MAX_SAFE_INTEGER,
        );
        // The gateway's time window around the message's arrival (rater/window.ts), then ClickHouse's DateTime range.
        batch = validateEvents(raw, meters, { receivedMs: arrivedMs, ...task.window });
        for (const [index, event] of batch.entries())
          if (event.timestampMs < bounds.oldestMs || event.timestampMs > bounds.newestMs)
            throw new Error(
              `event ${index} field timestamp: ${event.timestampMs} is outside what ClickHouse's DateTime stores (1970-01-01 to 2105-12-31 UTC)`,
            );
        // Test-only: a worker thread killing the process dies with the whole rater, mid-decode.
        crashPoint('in-worker');
      } catch (error) {
        // Nothing of this message was remembered or counted: it is dead-lettered whole (rater/dead-letter.ts).
        rejected.push({ message: i, reason: (error as Error).message });
        continue;
      }
      for (const event of batch) {
        if (set !== undefined) {
          if (idWords + 3 > ids.length) {
            const grown = new Uint32Array(ids.length * 2);
            grown.set(ids);
            ids = grown;
          }
          hashEventId(event.customer, event.id, ids, idWords);
          if (!set.add(ids[idWords]!, ids[idWords + 1]!, ids[idWords + 2]!)) {
            duplicates++;
            continue;
          }
          idWords += 3;
        }
        aggregator.addEvent(event);
        events++;
      }
    }
  } finally {
    set?.release();
  }
  const rows = aggregator.drain();
  // Rows of the two paths may share a key; the partition loop's merge (addRow) adds them up.
  for (const row of sums.drain()) rows.push(row);
  return { rows, events, duplicates, ids: ids.slice(0, idWords), rejected };
}
