/**
 * Repeated map keys in a body, found on its bytes. Both decoders keep the
 * last value of a repeated key without a word (msgpackr and JSON.parse), so
 * `{quantity: -5, quantity: 7}` would pass as 7 — and another decoder might
 * keep -5. The gateway refuses such a body instead, naming each repeated key
 * by event index and path.
 *
 * Keys are compared as the decoders name them as properties: by their bytes
 * for plain ASCII strings, which is nearly every key; anything else (a
 * number key, non-ASCII or escaped text) by the decoded name, so `1` and
 * `"1"`, `"a"` and `"\u0061"`, or two byte strings that are not UTF-8 and
 * decode to the same replacement characters, are one key, as they are to
 * the decoded object.
 *
 * Both walks are synchronous, one at a time, so their stacks live in this
 * module and are reused: no allocation per map on the way through a body.
 */
import { Buffer } from 'node:buffer';
import { Unpackr } from 'msgpackr';
import type { FieldProblem } from '../errors.js';

/**
 * A map's keys are compared pairwise up to this many (events have ≤ 6 fields, ≤ 16 dimensions); past it, through a
 * Map.
 */
const pairwiseKeysMax = 16;

/** Path segments longer than this are cut in messages: a hostile key must not make a megabyte error. */
const segmentShownMax = 128;

const ARRAY = 1;
const MAP = 2;
/** A msgpackr record: a map whose keys came once, in its structure's definition. */
const RECORD = 3;

function grown<T extends Uint8Array | Uint32Array | Int32Array>(a: T): T {
  const bigger = new (a.constructor as new (length: number) => T)(a.length * 2);
  bigger.set(a);
  return bigger;
}

/*
 * The key stack: the keys of every map being walked, innermost map's last.
 * `keySig` (length, first and last byte) rejects most pairs at once;
 * `keyName` is set only for keys compared by decoded name. The MessagePack
 * walk's common case keeps only `keyHead`, where a plain key's header is,
 * and fills the rest only for a map that needs it (toSlow).
 */
let keyHead = new Uint32Array(256);
let keyStart = new Uint32Array(256);
let keyLength = new Uint32Array(256);
let keySig = new Int32Array(256);
let keyNamed = new Uint8Array(256);
let keyReported = new Uint8Array(256);
const keyName: (string | undefined)[] = [];
let keyTop = 0;

function growKeys(): void {
  keyHead = grown(keyHead);
  keyStart = grown(keyStart);
  keyLength = grown(keyLength);
  keySig = grown(keySig);
  keyNamed = grown(keyNamed);
  keyReported = grown(keyReported);
}

function pushKey(start: number, length: number, sig: number, name: string | undefined): void {
  if (keyTop === keyStart.length) growKeys();
  keyStart[keyTop] = start;
  keyLength[keyTop] = length;
  keySig[keyTop] = sig;
  keyReported[keyTop] = 0;
  if (name === undefined) keyNamed[keyTop] = 0;
  else {
    keyNamed[keyTop] = 1;
    keyName[keyTop] = name;
  }
  keyTop++;
}

function latin1(b: Uint8Array, start: number, end: number): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1', start, end);
}

function sigOf(b: Uint8Array, start: number, length: number): number {
  return length === 0 ? 0 : (length & 0xff) | (b[start]! << 8) | (b[start + length - 1]! << 16);
}

/** The key among key-stack entries [from, to) equal to b[start, start + length) (or to `name`, when set), or -1. */
function findKey(
  b: Uint8Array,
  from: number,
  to: number,
  start: number,
  length: number,
  name: string | undefined,
  sig: number,
): number {
  for (let k = from; k < to; k++) {
    if (name === undefined && keyNamed[k] === 0) {
      if (keySig[k] !== sig || keyLength[k] !== length) continue;
      const other = keyStart[k]!;
      let i = 0;
      while (i < length && b[other + i] === b[start + i]) i++;
      if (i === length) return k;
    } else if (nameOfKey(b, k) === (name ?? latin1(b, start, start + length))) return k;
  }
  return -1;
}

function nameOfKey(b: Uint8Array, k: number): string {
  return keyNamed[k] === 1 ? keyName[k]! : latin1(b, keyStart[k]!, keyStart[k]! + keyLength[k]!);
}

function shown(text: string): string {
  return text.length > segmentShownMax ? `${text.slice(0, segmentShownMax)}…` : text;
}

/**
 * `segments`: the path from the body to the repeated key (last); the first is the event index when the body is an
 * array.
 */
function problem(topIsArray: boolean, segments: (string | number)[]): FieldProblem {
  const key = String(segments[segments.length - 1]);
  const message = `key ${JSON.stringify(shown(key))} appears more than once in one map`;
  const field = (topIsArray ? segments.slice(1) : segments).map((s) => shown(String(s))).join('.');
  return topIsArray
    ? { index: segments[0] as number, field, code: 'duplicate_key', message }
    : { field, code: 'duplicate_key', message };
}

// ---------------------------------------------------------------- MessagePack

/** shared/events/batch.ts's decoder options: a key that is not a string must get the name that decoder gives it. */
const keyUnpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'bigint' });

/** msgpackr's asSafeString: the property name a key that is not a string becomes. */
function safeString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return value.toString();
  if (value === null || value === undefined) return `${value}`;
  throw new Error('not a key');
}

/** The property name msgpackr gives the key at b[start, end). */
function msgpackKeyName(b: Uint8Array, start: number, end: number): string {
  let name: string;
  try {
    name = safeString(keyUnpackr.unpack(b.subarray(start, end)));
  } catch {
    // Unreachable after a successful decode (msgpackr refuses such keys); still distinct from any real name.
    name = `\u0000${start}`;
  }
  return name === '__proto__' ? '__proto_' : name;
}

/** "__proto__" at `at`: msgpackr stores it as "__proto_", the same property as that key. */
function isProto(b: Uint8Array, at: number): boolean {
  return (
    b[at] === 0x5f &&
    b[at + 1] === 0x5f &&
    b[at + 2] === 0x70 &&
    b[at + 3] === 0x72 &&
    b[at + 4] === 0x6f &&
    b[at + 5] === 0x74 &&
    b[at + 6] === 0x6f &&
    b[at + 7] === 0x5f &&
    b[at + 8] === 0x5f
  );
}

/** Outcomes of a walk step besides a position: stop (the problem list is full), cannot check, too deep. */
const STOP = -1;
const UNCHECKED = -2;
const TOO_DEEP = -3;

/** Where the scalar at `at` ends; UNCHECKED past the end or for a container. */
function scalarEnd(b: Uint8Array, view: DataView, at: number, end: number): number {
  const t = b[at]!;
  let next: number;
  if (t <= 0x7f || t >= 0xe0 || (t >= 0xc0 && t <= 0xc3)) next = at + 1;
  else if (t >= 0xa0 && t <= 0xbf) next = at + 1 + (t & 0x1f);
  else {
    switch (t) {
      case 0xcc:
      case 0xd0:
        next = at + 2;
        break;
      case 0xcd:
      case 0xd1:
        next = at + 3;
        break;
      case 0xca:
      case 0xce:
      case 0xd2:
        next = at + 5;
        break;
      case 0xcb:
      case 0xcf:
      case 0xd3:
        next = at + 9;
        break;
      case 0xc4:
      case 0xd9:
        next = at + 2 > end ? end + 1 : at + 2 + b[at + 1]!;
        break;
      case 0xc5:
      case 0xda:
        next = at + 3 > end ? end + 1 : at + 3 + view.getUint16(at + 1);
        break;
      case 0xc6:
      case 0xdb:
        next = at + 5 > end ? end + 1 : at + 5 + view.getUint32(at + 1);
        break;
      case 0xd4:
      case 0xd5:
      case 0xd6:
      case 0xd7:
      case 0xd8:
        next = at + 2 + (1 << (t - 0xd4));
        break;
      case 0xc7:
        next = at + 3 > end ? end + 1 : at + 3 + b[at + 1]!;
        break;
      case 0xc8:
        next = at + 4 > end ? end + 1 : at + 4 + view.getUint16(at + 1);
        break;
      case 0xc9:
        next = at + 6 > end ? end + 1 : at + 6 + view.getUint32(at + 1);
        break;
      default:
        return UNCHECKED;
    }
  }
  return next > end ? UNCHECKED : next;
}

function isExtension(t: number): boolean {
  return (t >= 0xc7 && t <= 0xc9) || (t >= 0xd4 && t <= 0xd8);
}

/** The type byte of the extension at `at` (t is its first byte), or -1 past the end. */
function extensionType(b: Uint8Array, at: number, t: number, end: number): number {
  const typeAt = t >= 0xd4 ? at + 1 : t === 0xc7 ? at + 2 : t === 0xc8 ? at + 3 : at + 5;
  return typeAt < end ? b[typeAt]! : -1;
}

/** msgpackr extensions whose value is the MessagePack value after them (Error, structured-clone id, Set, RegExp). */
function readsFollowingValue(type: number): boolean {
  return type === 0x65 || type === 0x69 || type === 0x73 || type === 0x78;
}
const recordExtension = 0x72;
const bundledStringsExtension = 0x62;

interface Structure {
  names: string[];
  /** Set for two-byte record ids (see msgpackr's createSecondByteReader). */
  highByte: number | undefined;
}

/*
 * The walk recurses, one call per container (at most `depthMax` deep), so
 * each map's loop keeps its state in locals; the whole walk's state is here.
 */
let walkProblems: FieldProblem[] = [];
let walkMax = 0;
let walkDepthMax = 0;
let walkStructures: Map<number, Structure> | undefined;
/** Element offsets of the body's top-level array (as ingest/msgpack-split.ts arrayElementOffsets finds them). */
let walkOffsets: Uint32Array | undefined;

/*
 * Path segments of the containers being walked, by depth (the top-level
 * value's container is depth 1): set before walking into a value that may
 * hold a map, so a repeated key can be named by its path.
 */
let segmentKind = new Uint8Array(64);
let segmentIndex = new Uint32Array(64);
let segmentStart = new Uint32Array(64);
let segmentLength = new Uint32Array(64);
const segmentName: (string | undefined)[] = [];

function growSegments(): void {
  segmentKind = grown(segmentKind);
  segmentIndex = grown(segmentIndex);
  segmentStart = grown(segmentStart);
  segmentLength = grown(segmentLength);
}

/** Records a repeated key of a map at `depth`; false once the list is full. */
function reportAt(b: Uint8Array, depth: number, key: string): boolean {
  const segments: (string | number)[] = [];
  for (let d = 1; d < depth; d++) {
    const kind = segmentKind[d]!;
    segments.push(
      kind === ARRAY
        ? segmentIndex[d]!
        : (segmentName[d] ?? latin1(b, segmentStart[d]!, segmentStart[d]! + segmentLength[d]!)),
    );
  }
  segments.push(key);
  walkProblems.push(problem(depth > 1 && segmentKind[1] === ARRAY, segments));
  return walkProblems.length < walkMax;
}

/** Whether a value starting with byte `t` may hold a map (so the path to it is needed). */
function mayHoldMap(t: number): boolean {
  if (t >= 0x40 && t <= 0x9f) return true; // records (by reference), maps, arrays
  return (t >= 0xdc && t <= 0xdf) || isExtension(t);
}

/** Walks the value at `pos`, inside `depth` containers; its end, or STOP, UNCHECKED, TOO_DEEP. */
function walkValue(b: Uint8Array, view: DataView, pos: number, end: number, depth: number): number {
  if (pos >= end) return UNCHECKED;
  const t = b[pos]!;
  if (t <= 0x7f) {
    if (t < 0x40 || walkStructures === undefined) return pos + 1;
    // A record reference when its id is defined (msgpackr's read()); otherwise the integer it looks like.
    const firstId = t & 0x3f;
    let structure = walkStructures.get(firstId);
    if (structure === undefined) return pos + 1;
    pos++;
    if (structure.highByte === 0) {
      if (pos >= end) return UNCHECKED;
      const highByte = b[pos++]!;
      if (highByte !== 0) {
        structure = walkStructures.get(firstId < 32 ? -(firstId + (highByte << 5)) : firstId + (highByte << 5));
        if (structure === undefined) return UNCHECKED;
      }
    }
    return walkRecord(b, view, pos, end, structure, depth + 1);
  }
  if (t <= 0x8f) return walkMap(b, view, pos + 1, end, t & 0x0f, depth + 1);
  if (t <= 0x9f) return walkArray(b, view, pos + 1, end, t & 0x0f, depth + 1);
  switch (t) {
    case 0xdc:
      return pos + 3 > end ? UNCHECKED : walkArray(b, view, pos + 3, end, view.getUint16(pos + 1), depth + 1);
    case 0xdd:
      return pos + 5 > end ? UNCHECKED : walkArray(b, view, pos + 5, end, view.getUint32(pos + 1), depth + 1);
    case 0xde:
      return pos + 3 > end ? UNCHECKED : walkMap(b, view, pos + 3, end, view.getUint16(pos + 1), depth + 1);
    case 0xdf:
      return pos + 5 > end ? UNCHECKED : walkMap(b, view, pos + 5, end, view.getUint32(pos + 1), depth + 1);
  }
  if (!isExtension(t)) return scalarEnd(b, view, pos, end);
  const type = extensionType(b, pos, t, end);
  if (type === bundledStringsExtension) return UNCHECKED;
  if (type === recordExtension && (t === 0xd4 || t === 0xd5)) return walkRecordDefinition(b, view, pos, end, depth);
  const after = scalarEnd(b, view, pos, end);
  if (after < 0 || !readsFollowingValue(type)) return after;
  // The value after the extension stands in its place, one level in.
  return depth + 1 > walkDepthMax ? TOO_DEEP : walkValue(b, view, after, end, depth + 1);
}

function walkArray(b: Uint8Array, view: DataView, pos: number, end: number, count: number, depth: number): number {
  if (depth > walkDepthMax) return TOO_DEEP;
  if (count > end - pos) return UNCHECKED;
  if (depth === segmentKind.length) growSegments();
  segmentKind[depth] = ARRAY;
  // The body's own array: where each element ends is noted on the way, so routing need not find it again.
  const offsets = depth === 1 ? (walkOffsets = new Uint32Array(count + 1)) : undefined;
  if (offsets !== undefined) offsets[0] = pos;
  for (let i = 0; i < count; i++) {
    segmentIndex[depth] = i;
    // A map (an event) is walked straight away: one call less per event.
    const t = pos < end ? b[pos]! : 0;
    if (t >= 0x80 && t <= 0x8f) pos = walkMap(b, view, pos + 1, end, t & 0x0f, depth + 1);
    else if (t === 0xde && pos + 3 <= end) pos = walkMap(b, view, pos + 3, end, view.getUint16(pos + 1), depth + 1);
    else pos = walkValue(b, view, pos, end, depth);
    if (pos < 0) return pos;
    if (offsets !== undefined) offsets[i + 1] = pos;
  }
  return pos;
}

/** The values of a msgpackr record (`structure` names them). */
function walkRecord(
  b: Uint8Array,
  view: DataView,
  pos: number,
  end: number,
  structure: Structure,
  depth: number,
): number {
  if (depth > walkDepthMax) return TOO_DEEP;
  if (depth === segmentKind.length) growSegments();
  segmentKind[depth] = RECORD;
  const { names } = structure;
  for (let i = 0; i < names.length; i++) {
    segmentName[depth] = names[i];
    pos = walkValue(b, view, pos, end, depth);
    if (pos < 0) return pos;
  }
  return pos;
}

/**
 * A msgpackr record definition at `pos`: its id, the array of its keys (checked here), then the first record's
 * values.
 */
function walkRecordDefinition(b: Uint8Array, view: DataView, pos: number, end: number, depth: number): number {
  const t = b[pos]!;
  if (pos + (t === 0xd4 ? 3 : 4) > end) return UNCHECKED;
  const low = b[pos + 2]! & 0x3f;
  const highByte = t === 0xd5 ? b[pos + 3]! : undefined;
  pos += t === 0xd4 ? 3 : 4;
  const id = highByte === undefined ? low : low < 32 ? -((highByte << 5) + low) : (highByte << 5) + low;
  if (pos >= end) return UNCHECKED;
  const head = b[pos]!;
  let count: number;
  if (head >= 0x90 && head <= 0x9f) {
    count = head & 0x0f;
    pos++;
  } else if (head === 0xdc && pos + 3 <= end) {
    count = view.getUint16(pos + 1);
    pos += 3;
  } else if (head === 0xdd && pos + 5 <= end) {
    count = view.getUint32(pos + 1);
    pos += 5;
  } else return UNCHECKED;
  if (count > end - pos) return UNCHECKED;
  const names: string[] = [];
  const seen = new Map<string, boolean>();
  for (let k = 0; k < count; k++) {
    const after = pos < end ? scalarEnd(b, view, pos, end) : UNCHECKED;
    if (after < 0) return UNCHECKED;
    const name = msgpackKeyName(b, pos, after);
    names.push(name);
    const reported = seen.get(name);
    if (reported === undefined) seen.set(name, false);
    else if (!reported) {
      seen.set(name, true);
      if (!reportAt(b, depth + 1, name)) return STOP;
    }
    pos = after;
  }
  const structure: Structure = { names, highByte };
  (walkStructures ??= new Map()).set(id, structure);
  return walkRecord(b, view, pos, end, structure, depth + 1);
}

/** A map's keys once past the common case: a key compared by name, a repeat, or more than pairwiseKeysMax keys. */
interface SlowKeys {
  /** Past pairwiseKeysMax keys: name → already reported. */
  large: Map<string, boolean> | undefined;
  /** Key-stack indexes already reported. */
  reported: Set<number>;
}

/** Set by plainKeyStart: the key's length (as msgpackr names it). */
let plainLength = 0;

/** Where the bytes of the plain string key whose header is at `head` start. */
function plainKeyStart(b: Uint8Array, view: DataView, head: number): number {
  const t = b[head]!;
  let start: number;
  if (t <= 0xbf) {
    start = head + 1;
    plainLength = t & 0x1f;
  } else if (t === 0xd9) {
    start = head + 2;
    plainLength = b[head + 1]!;
  } else if (t === 0xda) {
    start = head + 3;
    plainLength = view.getUint16(head + 1);
  } else {
    start = head + 5;
    plainLength = view.getUint32(head + 1);
  }
  if (plainLength === 9 && isProto(b, start)) plainLength = 8;
  return start;
}

/** A map leaves the common case: its keys so far (known by their headers) get full key-stack entries. */
function toSlow(b: Uint8Array, view: DataView, base: number): SlowKeys {
  for (let k = base; k < keyTop; k++) {
    const start = plainKeyStart(b, view, keyHead[k]!);
    keyStart[k] = start;
    keyLength[k] = plainLength;
    keySig[k] = sigOf(b, start, plainLength);
    keyNamed[k] = 0;
  }
  return { large: undefined, reported: new Set() };
}

/** Adds a key to a map past the common case; false once the problem list is full. */
function slowKey(
  b: Uint8Array,
  slow: SlowKeys,
  base: number,
  start: number,
  length: number,
  name: string | undefined,
  depth: number,
): boolean {
  if (slow.large !== undefined) {
    const key = name ?? latin1(b, start, start + length);
    const reported = slow.large.get(key);
    if (reported === undefined) slow.large.set(key, false);
    else if (!reported) {
      slow.large.set(key, true);
      return reportAt(b, depth, key);
    }
    return true;
  }
  const sig = name === undefined ? sigOf(b, start, length) : -1;
  const found = findKey(b, base, keyTop, start, length, name, sig);
  if (found >= 0) {
    if (slow.reported.has(found)) return true;
    slow.reported.add(found);
    return reportAt(b, depth, name ?? latin1(b, start, start + length));
  }
  pushKey(start, length, sig, name);
  if (keyTop - base > pairwiseKeysMax) {
    // A map this large is no event's: a Map keeps even a hostile one linear.
    slow.large = new Map();
    for (let k = base; k < keyTop; k++) slow.large.set(nameOfKey(b, k), slow.reported.has(k));
    keyTop = base;
  }
  return true;
}

function walkMap(b: Uint8Array, view: DataView, pos: number, end: number, count: number, depth: number): number {
  if (depth > walkDepthMax) return TOO_DEEP;
  if (count > end - pos) return UNCHECKED;
  if (depth === segmentKind.length) growSegments();
  segmentKind[depth] = MAP;
  const base = keyTop;
  // The key stack's top and array in locals (module variables are slower to reach), written back before any call.
  let top = base;
  let heads = keyHead;
  // One bit per plain key so far, from its length and first byte: a key whose bit is clear is new.
  let seenBits = 0;
  let slow: SlowKeys | undefined;
  for (let i = 0; i < count; i++) {
    if (pos >= end) return UNCHECKED;
    const t = b[pos]!;
    let start: number;
    let length: number;
    let name: string | undefined;
    if (t >= 0xa0 && t <= 0xbf) {
      start = pos + 1;
      length = t & 0x1f;
    } else if (t === 0xd9 && pos + 2 <= end) {
      start = pos + 2;
      length = b[pos + 1]!;
    } else if (t === 0xda && pos + 3 <= end) {
      start = pos + 3;
      length = view.getUint16(pos + 1);
    } else if (t === 0xdb && pos + 5 <= end) {
      start = pos + 5;
      length = view.getUint32(pos + 1);
    } else {
      // msgpackr refuses containers and records as keys, so this is another scalar: named as msgpackr names it.
      const after = scalarEnd(b, view, pos, end);
      if (after < 0) return UNCHECKED;
      start = pos;
      length = after - pos;
      name = msgpackKeyName(b, pos, after);
    }
    const stop = start + length;
    if (stop > end) return UNCHECKED;
    if (name === undefined) {
      // Non-ASCII text is compared by name (bytes that are not UTF-8 can decode alike); a word at a time, the last
      // overlapping.
      let bits = 0;
      if (length >= 4) {
        bits = view.getInt32(stop - 4);
        for (let at = start; at < stop - 4; at += 4) bits |= view.getInt32(at);
      } else for (let at = start; at < stop; at++) bits |= b[at]!;
      if ((bits & 0x80808080) !== 0) name = msgpackKeyName(b, pos, stop);
      else if (length === 9 && b[start] === 0x5f && isProto(b, start)) length = 8;
    }
    const head = pos;
    pos = stop;

    if (slow === undefined && name === undefined) {
      const bit = 1 << (((length === 0 ? 0 : b[start]!) ^ (length << 2)) & 31);
      let found = -1;
      if ((seenBits & bit) !== 0) {
        for (let k = base; k < top; k++) {
          const other = plainKeyStart(b, view, heads[k]!);
          if (plainLength !== length) continue;
          let j = 0;
          while (j < length && b[other + j] === b[start + j]) j++;
          if (j === length) {
            found = k;
            break;
          }
        }
      }
      seenBits |= bit;
      if (found < 0 && top - base < pairwiseKeysMax) {
        if (top === heads.length) {
          growKeys();
          heads = keyHead;
        }
        heads[top++] = head;
      } else {
        keyTop = top;
        slow = toSlow(b, view, base);
        if (found >= 0) {
          slow.reported.add(found);
          if (!reportAt(b, depth, latin1(b, start, start + length))) return STOP;
        } else if (!slowKey(b, slow, base, start, length, undefined, depth)) return STOP;
        top = keyTop;
      }
    } else {
      keyTop = top;
      slow ??= toSlow(b, view, base);
      if (!slowKey(b, slow, base, start, length, name, depth)) return STOP;
      top = keyTop;
    }

    // The value: common scalars stepped over here, anything else walked.
    if (pos >= end) return UNCHECKED;
    const v = b[pos]!;
    if (v <= 0x3f || v >= 0xe0 || (v <= 0x7f && walkStructures === undefined) || (v >= 0xc0 && v <= 0xc3)) pos++;
    else if (v >= 0xa0 && v <= 0xbf) pos += 1 + (v & 0x1f);
    else if (v === 0xcb || v === 0xcf || v === 0xd3) pos += 9;
    else {
      if (mayHoldMap(v)) {
        segmentStart[depth] = start;
        segmentLength[depth] = length;
        segmentName[depth] = name;
      }
      keyTop = top;
      pos = walkValue(b, view, pos, end, depth);
      if (pos < 0) return pos;
      heads = keyHead;
    }
  }
  keyTop = base;
  return pos;
}

/** What the walk of a MessagePack body finds. */
export interface MsgpackKeys {
  duplicates: FieldProblem[];
  /**
   * Where each element of the body's top-level array starts, then where the
   * last ends (as arrayElementOffsets in ingest/msgpack-split.ts); undefined
   * when the body is not an array or uses msgpackr's records.
   */
  offsets: Uint32Array | undefined;
}

/**
 * Repeated keys in a MessagePack body msgpackr has already decoded, at any
 * depth, msgpackr's records included (their keys are checked where the
 * structure is defined), up to `max` of them. 'too_deep' past `depthMax`
 * containers, as JSON is refused. 'unchecked' when the body uses msgpackr's
 * bundled strings, whose keys are not in the maps: the caller refuses it
 * rather than guess.
 */
export function msgpackDuplicateKeys(
  b: Uint8Array,
  depthMax: number,
  max: number,
): MsgpackKeys | 'too_deep' | 'unchecked' {
  walkProblems = [];
  walkMax = max;
  walkDepthMax = depthMax;
  walkStructures = undefined;
  walkOffsets = undefined;
  keyTop = 0;
  const end = walkValue(b, new DataView(b.buffer, b.byteOffset, b.byteLength), 0, b.length, 0);
  const found: MsgpackKeys = {
    duplicates: walkProblems,
    offsets: walkStructures === undefined && end === b.length ? walkOffsets : undefined,
  };
  // Nothing of this body is kept past the walk.
  walkProblems = [];
  walkStructures = undefined;
  walkOffsets = undefined;
  segmentName.length = 0;
  keyName.length = 0;
  if (end === TOO_DEEP) return 'too_deep';
  if (end === UNCHECKED || (end >= 0 && end !== b.length)) return 'unchecked';
  return found;
}

// ---------------------------------------------------------------- JSON

/** Containers of the JSON walk, outermost first: kind, element index (arrays), and the current key (objects). */
let jsonKind = new Uint8Array(64);
let jsonIndex = new Uint32Array(64);
let jsonKeysBase = new Uint32Array(64);
let jsonBits = new Int32Array(64);
let jsonKeyStart = new Uint32Array(64);
let jsonKeyLength = new Uint32Array(64);
const jsonKeyName: (string | undefined)[] = [];
const jsonLarge: (Map<string, boolean> | undefined)[] = [];

function growJsonFrames(): void {
  jsonKind = grown(jsonKind);
  jsonIndex = grown(jsonIndex);
  jsonKeysBase = grown(jsonKeysBase);
  jsonBits = grown(jsonBits);
  jsonKeyStart = grown(jsonKeyStart);
  jsonKeyLength = grown(jsonKeyLength);
}

/** A JSON key's text, as JSON.parse reads it. */
function jsonKeyText(b: Uint8Array, start: number, end: number): string {
  const text = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8', start - 1, end + 1);
  try {
    return JSON.parse(text) as string;
  } catch {
    return text; // a malformed body: JSON.parse refuses it whole
  }
}

/** The problem for a repeated key of the innermost of `frames` containers (its key is the one just read). */
function jsonProblem(b: Uint8Array, frames: number): FieldProblem {
  const segments: (string | number)[] = [];
  for (let d = 0; d < frames; d++) {
    segments.push(
      jsonKind[d] === ARRAY
        ? jsonIndex[d]!
        : (jsonKeyName[d] ?? latin1(b, jsonKeyStart[d]!, jsonKeyStart[d]! + jsonKeyLength[d]!)),
    );
  }
  return problem(jsonKind[0] === ARRAY, segments);
}

/** What one pass over a JSON body finds: nesting past the limit, and repeated keys. */
export interface JsonStructure {
  tooDeep: boolean;
  duplicates: FieldProblem[];
}

/**
 * Nesting depth and repeated keys of a JSON body, in one pass over its
 * bytes before JSON.parse. The body may be malformed: its repeated keys only
 * mean something once JSON.parse has accepted it (the caller reports them
 * after), and nothing here throws or reads past the end whatever the bytes.
 */
export function jsonStructure(b: Uint8Array, depthMax: number, max: number): JsonStructure {
  const problems: FieldProblem[] = [];
  let depth = 0;
  // Containers are followed while the brackets match; where they do not, the body is malformed and JSON.parse says so.
  let tracking = true;
  let frames = 0;
  keyTop = 0;
  // In an object, whether the next string is a key.
  let expectKey = false;

  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0x22) {
      const start = i + 1;
      // An escape or a non-ASCII byte: the key is compared by its decoded text, not its bytes.
      let plain = 0x7f;
      for (i = start; i < b.length; i++) {
        const s = b[i]!;
        plain |= s;
        if (s === 0x5c) {
          plain = 0xff;
          i++;
        } else if (s === 0x22) break;
      }
      if (!tracking || !expectKey || problems.length >= max) continue;
      expectKey = false;
      const f = frames - 1;
      const length = Math.min(i, b.length) - start;
      const name = plain > 0x7f ? jsonKeyText(b, start, start + length) : undefined;
      jsonKeyStart[f] = start;
      jsonKeyLength[f] = length;
      jsonKeyName[f] = name;
      const large = jsonLarge[f];
      if (large !== undefined) {
        const key = name ?? latin1(b, start, start + length);
        const reported = large.get(key);
        if (reported === undefined) large.set(key, false);
        else if (!reported) {
          large.set(key, true);
          problems.push(jsonProblem(b, frames));
        }
        continue;
      }
      const base = jsonKeysBase[f]!;
      const sig = name === undefined ? sigOf(b, start, length) : -1;
      // One bit per key so far, from its signature: a plain key whose bit is clear is new (an object with a named key
      // compares them all).
      const bit = name === undefined ? 1 << ((sig ^ (sig >>> 8) ^ (sig >>> 13)) & 31) : -1;
      const found = (jsonBits[f]! & bit) === 0 ? -1 : findKey(b, base, keyTop, start, length, name, sig);
      jsonBits[f] = jsonBits[f]! | bit;
      if (found >= 0) {
        if (keyReported[found] === 0) {
          keyReported[found] = 1;
          problems.push(jsonProblem(b, frames));
        }
      } else {
        pushKey(start, length, sig, name);
        if (keyTop - base > pairwiseKeysMax) {
          const map = new Map<string, boolean>();
          for (let k = base; k < keyTop; k++) map.set(nameOfKey(b, k), keyReported[k] === 1);
          jsonLarge[f] = map;
          keyTop = base;
        }
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > depthMax) return { tooDeep: true, duplicates: [] };
      if (!tracking) continue;
      if (frames === jsonKind.length) growJsonFrames();
      jsonKind[frames] = c === 0x5b ? ARRAY : MAP;
      jsonIndex[frames] = 0;
      jsonKeysBase[frames] = keyTop;
      jsonBits[frames] = 0;
      jsonKeyName[frames] = undefined;
      jsonLarge[frames] = undefined;
      frames++;
      expectKey = c === 0x7b;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
      if (!tracking) continue;
      if (frames === 0 || jsonKind[frames - 1] !== (c === 0x5d ? ARRAY : MAP)) {
        tracking = false;
        continue;
      }
      frames--;
      keyTop = jsonKeysBase[frames]!;
      expectKey = false;
    } else if (c === 0x2c && tracking && frames > 0) {
      if (jsonKind[frames - 1] === ARRAY) jsonIndex[frames - 1]!++;
      else expectKey = true;
    }
  }
  jsonKeyName.length = 0;
  jsonLarge.length = 0;
  keyName.length = 0;
  return { tooDeep: false, duplicates: problems };
}
