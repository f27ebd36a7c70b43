/**
 * Routes a validated batch to stream partitions by customer: every event of
 * a customer lands on one partition, so that partition's rater sees all of
 * that customer's event ids and can drop repeats (rater/dedupe/). A batch
 * whose events all map to one partition is published unchanged; otherwise it
 * is cut into one part per partition by copying each event's bytes (no
 * re-encoding), keeping the events' order within each part.
 */
import { Packr } from 'msgpackr';
import { decodedElementOffsets, type BatchFormat } from '../shared/events/batch.js';
import { arrayElementOffsets, arrayHeader, type ScannedBatch } from './msgpack-split.js';
import { partitionOfCustomer } from '../shared/events/partition.js';

export interface BatchPart {
  partition: number;
  body: Uint8Array;
  events: number;
}

// Standard MessagePack for the rare body that used msgpackr's records.
const standardPackr = new Packr({ useRecords: false });

function customerOf(event: unknown): string {
  return (event as { customer: string }).customer;
}

/** `raw` is the decoded batch; every element has already passed validation. */
export function routeBatch(
  body: Uint8Array,
  format: BatchFormat,
  raw: readonly unknown[],
  partitions: number,
): BatchPart[] {
  const count = raw.length;
  const first = partitionOfCustomer(customerOf(raw[0]), partitions);
  const partitionOf = new Uint16Array(count);
  let single = true;
  for (let i = 0; i < count; i++) {
    const p = i === 0 ? first : partitionOfCustomer(customerOf(raw[i]), partitions);
    partitionOf[i] = p;
    if (p !== first) single = false;
  }
  if (single) return [{ partition: first, body, events: count }];

  const groups = new Map<number, number[]>();
  for (let i = 0; i < count; i++) {
    const p = partitionOf[i]!;
    const group = groups.get(p);
    if (group) group.push(i);
    else groups.set(p, [i]);
  }
  const ordered = [...groups].sort(([a], [b]) => a - b);

  if (format === 'json') {
    // JSON is the slow path anyway; what JSON.parse produced stringifies back to the same values.
    return ordered.map(([partition, indexes]) => ({
      partition,
      body: Buffer.from(`[${indexes.map((i) => JSON.stringify(raw[i])).join(',')}]`, 'utf8'),
      events: indexes.length,
    }));
  }

  const offsets = decodedElementOffsets(raw, body) ?? arrayElementOffsets(body).offsets;
  if (offsets === undefined) {
    return ordered.map(([partition, indexes]) => ({
      partition,
      body: standardPackr.pack(indexes.map((i) => raw[i])),
      events: indexes.length,
    }));
  }
  return sliceParts(body, offsets, partitionOf, count);
}

/** Routes a batch the gateway's fast path (msgpack-split.ts scanValidBatch) proved valid. */
export function routeScanned(body: Uint8Array, scanned: ScannedBatch): BatchPart[] {
  if (scanned.single) return [{ partition: scanned.partitionOf[0]!, body, events: scanned.count }];
  return sliceParts(body, scanned.offsets, scanned.partitionOf, scanned.count);
}

/** Partition numbers fit a Uint16Array; config caps them at 256. */
const partitionsMax = 256;

/**
 * One part per partition, in partition order, each event's bytes copied in
 * the batch's order. Sizes are counted first, so all parts share one
 * allocation (one external buffer for the GC to track, not one per part),
 * filled in one pass over the events.
 */
function sliceParts(body: Uint8Array, offsets: Uint32Array, partitionOf: Uint16Array, count: number): BatchPart[] {
  const source = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const events = new Uint32Array(partitionsMax);
  const sizes = new Uint32Array(partitionsMax);
  for (let i = 0; i < count; i++) {
    const p = partitionOf[i]!;
    events[p]!++;
    sizes[p]! += offsets[i + 1]! - offsets[i]!;
  }
  const used: number[] = [];
  let total = 0;
  for (let p = 0; p < partitionsMax; p++) {
    if (events[p] === 0) continue;
    used.push(p);
    total += arrayHeader(events[p]!).length + sizes[p]!;
  }
  const out = Buffer.allocUnsafe(total);
  // Where each partition's next event goes.
  const at = new Uint32Array(partitionsMax);
  const parts: BatchPart[] = [];
  let start = 0;
  for (const p of used) {
    const header = arrayHeader(events[p]!);
    out.set(header, start);
    at[p] = start + header.length;
    const end = start + header.length + sizes[p]!;
    parts.push({ partition: p, body: out.subarray(start, end), events: events[p]! });
    start = end;
  }
  for (let i = 0; i < count;) {
    // Runs of consecutive events bound for one partition are copied at once.
    const p = partitionOf[i]!;
    let j = i + 1;
    while (j < count && partitionOf[j] === p) j++;
    at[p]! += source.copy(out, at[p]!, offsets[i]!, offsets[j]!);
    i = j;
  }
  return parts;
}
