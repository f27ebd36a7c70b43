/**
 * Aggregation per (customer, meter, declared dimensions, minute). Pure: the
 * workers use it per task and the partition loop uses it to merge tasks into
 * one flush. Quantities are scaled bigints, so sums are exact.
 */
import type { Aggregation, MeterDefinitions } from '../shared/events/meters.js';
import { eventLimits, type UsageEvent } from '../shared/events/event.js';
import { parseQuantity } from '../shared/quantity.js';
import {
  asciiBytes,
  bytesEqual,
  byteKey,
  type ByteKey,
  decimalTextOk,
  F_CUSTOMER,
  F_ID,
  F_METER,
  F_QUANTITY,
  F_TIMESTAMP,
  fieldOf,
  hostileKeyBytes,
  isAscii,
  keyEquals,
  numberAt,
  rangesEqual,
  requiredFields,
  scanCursor,
  strAt,
} from '../shared/events/scan.js';
import { customerByte } from '../shared/events/customer.js';
import { hashCodeUnits } from './dedupe/id-hash.js';

/**
 * [customer, meter, dimensions, minute (epoch s), quantity × 10^9, events, hold] — structured-clone friendly.
 * `hold` is the credit hold the usage names (settlement/holds), absent when none: usage naming a hold is
 * kept in rows of its own so the live balance can tell what each hold's usage cost.
 */
export type AggregateRow = [
  customer: string,
  meter: string,
  dimensions: string,
  minuteSec: number,
  scaled: bigint,
  events: number,
  hold?: string,
];

const oneScaled = 1_000_000_000n;

export class Aggregator {
  readonly #rows = new Map<string, AggregateRow>();
  readonly #meters: MeterDefinitions;

  constructor(meters: MeterDefinitions) {
    this.#meters = meters;
  }

  get size(): number {
    return this.#rows.size;
  }

  #aggregation(meter: string): Aggregation {
    return this.#meters[meter]?.aggregation ?? 'sum';
  }

  addEvent(event: UsageEvent): void {
    const minuteSec = Math.floor(event.timestampMs / 60_000) * 60;
    const aggregation = this.#aggregation(event.meter);
    const scaled = aggregation === 'count' ? oneScaled : event.scaled;
    this.#add(event.customer, event.meter, event.dimensions, minuteSec, scaled, 1, aggregation, event.hold);
  }

  addRow(row: AggregateRow): void {
    this.#add(row[0], row[1], row[2], row[3], row[4], row[5], this.#aggregation(row[1]), row[6] ?? '');
  }

  #add(
    customer: string,
    meter: string,
    dimensions: string,
    minuteSec: number,
    scaled: bigint,
    events: number,
    aggregation: Aggregation,
    hold: string,
  ): void {
    // \u0000 cannot occur in customer, meter or hold (validated), so the key is unambiguous.
    const key = `${customer}\u0000${meter}\u0000${minuteSec}\u0000${hold}\u0000${dimensions}`;
    const row = this.#rows.get(key);
    if (row === undefined) {
      this.#rows.set(
        key,
        hold === ''
          ? [customer, meter, dimensions, minuteSec, scaled, events]
          : [customer, meter, dimensions, minuteSec, scaled, events, hold],
      );
      return;
    }
    row[4] = aggregation === 'max' ? (scaled > row[4] ? scaled : row[4]) : row[4] + scaled;
    row[5] += events;
  }

  /** Returns the rows and empties the aggregator. */
  drain(): AggregateRow[] {
    const rows = [...this.#rows.values()];
    this.#rows.clear();
    return rows;
  }
}

/*
 * The workers' fast path: a MessagePack batch scanned straight from its
 * bytes into per-event fields (no event objects, no bigint per event), for
 * the common shapes the gateway's fast path also takes. scanBatch answers
 * false for anything else — and the worker then decodes and validates the
 * message the full way — so both paths count exactly the same events.
 */

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * A meter as the byte scanner needs it: key bytes, and declared dimensions sorted as the canonical JSON orders them.
 */
interface ScanMeter {
  /** Position in the scan table: part of the numeric aggregation key. */
  index: number;
  key: string;
  bytes: ByteKey;
  aggregation: Aggregation;
  /** Declared dimension names, sorted; with their bytes and JSON-quoted forms. */
  dimensions: { name: string; bytes: Uint8Array; json: string }[];
}

let scanMetersCache: { source: MeterDefinitions; meters: ScanMeter[] } | undefined;

function scanMeters(meters: MeterDefinitions): ScanMeter[] {
  if (scanMetersCache?.source === meters) return scanMetersCache.meters;
  const list: ScanMeter[] = [];
  for (const key of Object.keys(meters)) {
    if (!/^[\x00-\x7f]*$/.test(key)) continue; // never matched: such events take the full path
    const definition = meters[key]!;
    const dimensions = [...definition.dimensions]
      .filter((d) => /^[\x00-\x7f]*$/.test(d))
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
      .map((name) => ({ name, bytes: asciiBytes(name), json: JSON.stringify(name) }));
    // A declared dimension with non-ASCII characters could be present under a key we do not match, and
    // array-index names ("10", "9") come out of JSON.stringify in numeric order: leave such meters to the full path.
    if (
      dimensions.length !== definition.dimensions.length ||
      definition.dimensions.some((d) => /^(0|[1-9]\d*)$/.test(d))
    )
      continue;
    list.push({ index: list.length, key, bytes: byteKey(key), aggregation: definition.aggregation, dimensions });
  }
  scanMetersCache = { source: meters, meters: list };
  return list;
}

/** One message's events as scanned; arrays grow to the largest message seen. */
export class ScannedEvents {
  count = 0;
  /**
   * The timestamps the next scan accepts, in ms (inclusive): the time window
   * (the gateway's, around the message's arrival) clamped to what ClickHouse's
   * DateTime stores. A timestamp outside sends the message to the full path,
   * which names the problem. The defaults accept any non-negative timestamp.
   */
  oldestMs = 0;
  newestMs = Number.MAX_SAFE_INTEGER;
  /** Interned customer of each event (see Interned); strings are made once per distinct customer. */
  customers = new Uint32Array(1024);
  meters: ScanMeter[] = [];
  /** Interned canonical dimensions of each event. */
  dimensions = new Uint32Array(1024);
  minutes = new Float64Array(1024);
  /** Quantity = units + nanos / 10^9, both exact integers (units < 2^53, nanos < 10^9). */
  units = new Float64Array(1024);
  nanos = new Float64Array(1024);
  /** hashEventId's 96-bit fingerprints, 3 words per event. */
  ids = new Uint32Array(3 * 1024);
  /** Byte ranges of each event's id and customer, for hashing. */
  idAt = new Uint32Array(4 * 1024);

  reserve(count: number): void {
    if (this.minutes.length >= count) return;
    const size = Math.max(count, 2 * this.minutes.length);
    this.customers = new Uint32Array(size);
    this.dimensions = new Uint32Array(size);
    this.minutes = new Float64Array(size);
    this.units = new Float64Array(size);
    this.nanos = new Float64Array(size);
    this.ids = new Uint32Array(3 * size);
    this.idAt = new Uint32Array(4 * size);
  }
}

/**
 * Customers and canonical dimension texts seen by this thread, numbered, so
 * events aggregate under a numeric key and a customer's string is made once
 * rather than per event (one table for customers, one for dimension texts).
 * Bounded: emptied between tasks once past `internedMax`.
 */
const internedMax = 65_536;

class Interned {
  readonly strings: string[] = [];
  /** FNV-1a of a customer's bytes → indexes of customers with that hash. */
  readonly #byHash = new Map<number, number[]>();
  readonly #bytes: Uint8Array[] = [];
  readonly #byText = new Map<string, number>();

  /** Index of the customer whose (ASCII) bytes are b[start, start + length). */
  customer(b: Buffer, start: number, length: number, hash: number): number {
    const candidates = this.#byHash.get(hash);
    if (candidates !== undefined) {
      for (const index of candidates) if (bytesEqual(b, start, length, this.#bytes[index]!)) return index;
    }
    const index = this.strings.length;
    this.strings.push(latin1(b, start, start + length));
    this.#bytes.push(Uint8Array.prototype.slice.call(b, start, start + length));
    if (candidates === undefined) this.#byHash.set(hash, [index]);
    else candidates.push(index);
    return index;
  }

  text(value: string): number {
    let index = this.#byText.get(value);
    if (index === undefined) {
      index = this.strings.length;
      this.strings.push(value);
      this.#byText.set(value, index);
    }
    return index;
  }

  /** Called between tasks only: indexes handed out earlier stay valid for the task that got them. */
  bound(): void {
    if (this.strings.length < internedMax) return;
    this.strings.length = 0;
    this.#byHash.clear();
    this.#bytes.length = 0;
    this.#byText.clear();
    this.#first?.(this);
  }

  readonly #first: ((table: Interned) => void) | undefined;

  /** `first` interns what must always hold index 0 (again after each emptying). */
  constructor(first?: (table: Interned) => void) {
    this.#first = first;
    first?.(this);
  }
}

const emptyDimensions = '{}';
export const internedCustomers = new Interned();
// No dimensions (most events) is always index 0, so it needs no lookup.
export const internedDimensions = new Interned((table) => table.text(emptyDimensions));

// Scratch for one event's dimensions: byte ranges of up to 16 (key, value) pairs.
const dimensionRanges = new Uint32Array(4 * 16);
// Code units of `customer \0 id` for hashing: at most 128 + 1 + 128, plus a zero pad.
const hashUnits = new Uint16Array(260);
const hashWords = new Uint32Array(hashUnits.buffer);

/**
 * rater/dedupe/id-hash.ts hashEventId for an ASCII customer and id read from
 * bytes: the same hash over the same code units (on a little-endian machine
 * the Uint16 units read as Uint32 are hashEventId's words), without making
 * either string.
 */
export function hashEventIdBytes(
  b: Uint8Array,
  customerAt: number,
  customerLength: number,
  idAt: number,
  idLength: number,
  out: Uint32Array,
  at: number,
): void {
  const units = customerLength + 1 + idLength;
  for (let i = 0; i < customerLength; i++) hashUnits[i] = b[customerAt + i]!;
  hashUnits[customerLength] = 0;
  for (let i = 0; i < idLength; i++) hashUnits[customerLength + 1 + i] = b[idAt + i]!;
  hashUnits[units] = 0;
  hashCodeUnits(hashWords, units, out, at);
}

// Buffer's own latin1 decoder without toString's argument checks (ASCII was checked: latin1 = UTF-8 here).
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Buffer, start: number, end: number): string })
  .latin1Slice;
function latin1(b: Buffer, start: number, end: number): string {
  return latin1Slice.call(b, start, end);
}

/** Integer digits the fast path keeps in a double exactly (10^15 < 2^53); longer quantities take the full path. */
const unitsDigitsMax = 15;

/**
 * Scans one message into `out`. True when every event is valid and of a
 * shape the fast path takes; false means "use the full path" (nothing in
 * `out` may then be used). `b` must be a Buffer (for latin1 strings).
 */
export function scanBatch(b: Buffer, meters: MeterDefinitions, out: ScannedEvents, withIds: boolean): boolean {
  if (!littleEndian) return false;
  const end = b.length;
  if (end < 1) return false;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const oldestMs = out.oldestMs;
  const newestMs = out.newestMs;
  const head = b[0]!;
  let pos: number;
  let count: number;
  if (head >= 0x90 && head <= 0x9f) {
    count = head & 0x0f;
    pos = 1;
  } else if (head === 0xdc && end >= 3) {
    count = view.getUint16(1);
    pos = 3;
  } else if (head === 0xdd && end >= 5) {
    count = view.getUint32(1);
    pos = 5;
  } else return false;
  if (count > end - pos) return false;
  out.reserve(count);
  const table = scanMeters(meters);
  // The numeric aggregation key has room for this many meters (see ScannedAggregator).
  if (table.length > metersMax) return false;
  const { customers, dimensions, minutes, units, nanos, idAt } = out;
  const meterOf = out.meters;
  for (let i = 0; i < count; i++) {
    if (pos >= end) return false;
    const mapType = b[pos]!;
    let fields: number;
    if (mapType >= 0x81 && mapType <= 0x86) {
      fields = mapType & 0x0f;
      pos++;
    } else if (mapType === 0xde && pos + 3 <= end) {
      fields = view.getUint16(pos + 1);
      if (fields < 1 || fields > 6) return false;
      pos += 3;
    } else return false;
    let seen = 0;
    let meter: ScanMeter | undefined;
    let dimensionPairs = 0;
    units[i] = 1;
    nanos[i] = 0;
    for (let f = 0; f < fields; f++) {
      if (pos >= end) return false;
      const keyType = b[pos]!;
      if (keyType < 0xa0 || keyType > 0xbf) return false;
      const keyLength = keyType & 0x1f;
      if (pos + 1 + keyLength >= end) return false;
      const field = fieldOf(b, view, pos + 1, keyLength);
      if (field === 0 || (seen & field) !== 0) return false;
      seen |= field;
      pos += 1 + keyLength;
      switch (field) {
        case F_ID: {
          const length = strAt(b, view, pos, end);
          if (length < 1 || length > eventLimits.idLengthMax || !isAscii(b, scanCursor.strStart, length)) return false;
          idAt[4 * i] = scanCursor.strStart;
          idAt[4 * i + 1] = length;
          pos = scanCursor.strStart + length;
          break;
        }
        case F_CUSTOMER: {
          const length = strAt(b, view, pos, end);
          if (length < 1 || length > eventLimits.customerLengthMax) return false;
          const start = scanCursor.strStart;
          let hash = 0x811c9dc5; // fnvOffsetBasis
          for (let at = start; at < start + length; at++) {
            const c = b[at]!;
            if (c >= 0x80 || customerByte[c] === 0) return false;
            // fnvStep (shared/events/partition.ts) written out with its literals: a
            // call or a module constant here costs the scan ~5 % (bench/hot-path.ts);
            // partition.test.ts and the routing property tests hold them equal.
            hash = Math.imul(hash ^ c, 0x01000193);
          }
          customers[i] = internedCustomers.customer(b, start, length, hash);
          idAt[4 * i + 2] = start;
          idAt[4 * i + 3] = length;
          pos = start + length;
          break;
        }
        case F_METER: {
          const length = strAt(b, view, pos, end);
          if (length < 0) return false;
          for (const candidate of table) {
            if (keyEquals(b, view, scanCursor.strStart, length, candidate.bytes)) {
              meter = candidate;
              break;
            }
          }
          if (meter === undefined) return false;
          pos = scanCursor.strStart + length;
          break;
        }
        case F_QUANTITY: {
          const length = strAt(b, view, pos, end);
          if (length >= 0) {
            const start = scanCursor.strStart;
            if (!decimalTextOk(b, start, length)) return false;
            let at = start;
            const stop = start + length;
            while (at < stop - 1 && b[at] === 0x30 && b[at + 1] !== 0x2e) at++;
            let whole = 0;
            let digits = 0;
            for (; at < stop && b[at] !== 0x2e; at++, digits++) whole = whole * 10 + (b[at]! - 0x30);
            if (digits > unitsDigitsMax) return false;
            let fraction = 0;
            let scale = 100_000_000;
            for (at++; at < stop && scale >= 1; at++, scale /= 10) fraction += (b[at]! - 0x30) * scale;
            units[i] = whole;
            nanos[i] = fraction;
            pos = stop;
            break;
          }
          const value = numberAt(b, view, pos, end);
          if (Number.isNaN(value)) return false;
          if (b[pos] === 0xcb) {
            // A double takes the rules' own parser (shortest round-trip text), then splits exactly.
            const parsed = parseQuantity(value);
            if (!parsed.ok || parsed.scaled >= 10n ** BigInt(unitsDigitsMax + quantityScaleDigits)) return false;
            units[i] = Number(parsed.scaled / nanosPerUnit);
            nanos[i] = Number(parsed.scaled % nanosPerUnit);
          } else {
            // Integers from 10^15 up would break ScannedAggregator's exactness bound: full path.
            if (value >= 1e15) return false;
            units[i] = value;
          }
          pos = scanCursor.numberEnd;
          break;
        }
        case F_TIMESTAMP: {
          const value = numberAt(b, view, pos, end);
          if (!Number.isSafeInteger(value) || value < oldestMs || value > newestMs) return false;
          minutes[i] = Math.floor(value / 60_000) * 60;
          pos = scanCursor.numberEnd;
          break;
        }
        default: {
          const t = b[pos]!;
          let entries: number;
          if (t >= 0x80 && t <= 0x8f) {
            entries = t & 0x0f;
            pos++;
          } else if (t === 0xde && pos + 3 <= end) {
            entries = view.getUint16(pos + 1);
            pos += 3;
          } else return false;
          if (entries > eventLimits.dimensionKeysMax) return false;
          let keyBits = 0;
          for (let d = 0; d < entries; d++) {
            if (pos >= end) return false;
            const keyLength = strAt(b, view, pos, end);
            const keyStart = scanCursor.strStart;
            if (keyLength < 0 || keyLength > eventLimits.dimensionKeyLengthMax || !isAscii(b, keyStart, keyLength))
              return false;
            for (const hostile of hostileKeyBytes) if (bytesEqual(b, keyStart, keyLength, hostile)) return false;
            // A repeated key, declared or not: the full path refuses the message (shared/events/duplicate-keys.ts), so
            // this path must not count it. Compared only when the key's bit (length, first byte) is already set.
            const bit = 1 << (((keyLength === 0 ? 0 : b[keyStart]!) ^ (keyLength << 2)) & 31);
            if ((keyBits & bit) !== 0) {
              for (let e = 0; e < dimensionPairs; e++)
                if (rangesEqual(b, dimensionRanges[4 * e]!, dimensionRanges[4 * e + 1]!, keyStart, keyLength))
                  return false;
            }
            keyBits |= bit;
            pos = keyStart + keyLength;
            if (pos >= end) return false;
            const valueLength = strAt(b, view, pos, end);
            const valueStart = scanCursor.strStart;
            if (valueLength < 0 || valueLength > eventLimits.dimensionValueLengthMax) return false;
            // Values go into the canonical JSON as they are: only those JSON.stringify leaves unescaped.
            for (let at = valueStart; at < valueStart + valueLength; at++) {
              const c = b[at]!;
              if (c >= 0x80 || c < 0x20 || c === 0x22 || c === 0x5c) return false;
            }
            dimensionRanges[4 * dimensionPairs] = keyStart;
            dimensionRanges[4 * dimensionPairs + 1] = keyLength;
            dimensionRanges[4 * dimensionPairs + 2] = valueStart;
            dimensionRanges[4 * dimensionPairs + 3] = valueLength;
            dimensionPairs++;
            pos = valueStart + valueLength;
          }
        }
      }
    }
    if ((seen & requiredFields) !== requiredFields || meter === undefined) return false;
    if (meter.aggregation === 'max') return false; // kept on the full path: rare, and compares rather than sums
    // Canonical dimensions: the declared ones present, sorted by name, as JSON.
    let canonical = emptyDimensions;
    if (dimensionPairs > 0 && meter.dimensions.length > 0) {
      let text = '';
      for (const declared of meter.dimensions) {
        let found = -1;
        for (let d = 0; d < dimensionPairs; d++) {
          if (bytesEqual(b, dimensionRanges[4 * d]!, dimensionRanges[4 * d + 1]!, declared.bytes)) {
            found = d;
            break;
          }
        }
        if (found === -1) continue;
        const valueStart = dimensionRanges[4 * found + 2]!;
        text += `${text === '' ? '{' : ','}${declared.json}:"${latin1(b, valueStart, valueStart + dimensionRanges[4 * found + 3]!)}"`;
      }
      if (text !== '') canonical = `${text}}`;
    }
    dimensions[i] = canonical === emptyDimensions ? 0 : internedDimensions.text(canonical);
    meterOf[i] = meter;
    if (meter.aggregation === 'count') {
      units[i] = 1;
      nanos[i] = 0;
    }
  }
  if (pos !== end) return false;
  if (withIds) {
    for (let i = 0; i < count; i++)
      hashEventIdBytes(b, idAt[4 * i + 2]!, idAt[4 * i + 3]!, idAt[4 * i]!, idAt[4 * i + 1]!, out.ids, 3 * i);
  }
  out.count = count;
  return true;
}

const nanosPerUnit = 1_000_000_000n;
const quantityScaleDigits = 9;
const unitsSafeMax = Number.MAX_SAFE_INTEGER - 1e15;

interface SumRow {
  customer: string;
  meter: string;
  dimensions: string;
  minuteSec: number;
  units: number;
  nanos: number;
  /** Whole units moved out of `units` before it could lose exactness. */
  carried: bigint;
  events: number;
}

/**
 * Rows of one (customer, meter, dimensions); the last minute used is kept at hand (events come mostly in time order).
 */
interface RowGroup {
  lastMinute: number;
  lastRow: SumRow;
  byMinute: Map<number, SumRow>;
}

const metersMax = 4096;

/** Sums scanned events per (customer, meter, dimensions, minute), exactly; drains to the same rows as Aggregator. */
export class ScannedAggregator {
  readonly #groups = new Map<number, RowGroup>();
  #size = 0;

  /** Adds event `i` of `events` (sum and count meters only; scanBatch refuses max). */
  add(events: ScannedEvents, i: number): void {
    // customer and dimensions < 2^16 + a task's events (≤ 500,000) < 2^20, meter < 2^12: the key stays below 2^52.
    const meter = events.meters[i]!;
    const key = (events.customers[i]! * metersMax + meter.index) * 0x100000 + events.dimensions[i]!;
    const minuteSec = events.minutes[i]!;
    const group = this.#groups.get(key);
    let row: SumRow | undefined;
    if (group === undefined) {
      row = this.#newRow(events, i);
      this.#groups.set(key, { lastMinute: minuteSec, lastRow: row, byMinute: new Map([[minuteSec, row]]) });
      return;
    }
    if (group.lastMinute === minuteSec) row = group.lastRow;
    else {
      row = group.byMinute.get(minuteSec);
      if (row === undefined) {
        row = this.#newRow(events, i);
        group.byMinute.set(minuteSec, row);
        group.lastMinute = minuteSec;
        group.lastRow = row;
        return;
      }
      group.lastMinute = minuteSec;
      group.lastRow = row;
    }
    row.units += events.units[i]!;
    row.nanos += events.nanos[i]!;
    if (row.nanos >= 1e9) {
      row.nanos -= 1e9;
      row.units += 1;
    }
    // Each event adds < 10^15 units, so moving the sum to a bigint before 2^53 − 10^15 keeps it exact.
    if (row.units > unitsSafeMax) {
      row.carried += BigInt(row.units);
      row.units = 0;
    }
    row.events++;
  }

  #newRow(events: ScannedEvents, i: number): SumRow {
    this.#size++;
    return {
      customer: internedCustomers.strings[events.customers[i]!]!,
      meter: events.meters[i]!.key,
      dimensions: internedDimensions.strings[events.dimensions[i]!]!,
      minuteSec: events.minutes[i]!,
      units: events.units[i]!,
      nanos: events.nanos[i]!,
      carried: 0n,
      events: 1,
    };
  }

  get size(): number {
    return this.#size;
  }

  drain(): AggregateRow[] {
    const rows: AggregateRow[] = [];
    for (const group of this.#groups.values()) {
      for (const r of group.byMinute.values()) {
        rows.push([
          r.customer,
          r.meter,
          r.dimensions,
          r.minuteSec,
          (r.carried + BigInt(r.units)) * nanosPerUnit + BigInt(r.nanos),
          r.events,
        ]);
      }
    }
    this.#groups.clear();
    this.#size = 0;
    return rows;
  }
}
