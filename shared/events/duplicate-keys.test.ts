import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { arrayElementOffsets } from '../../ingest/msgpack-split.js';
import { decodeBatch, decodedElementOffsets, problemsListedMax } from './batch.js';
import { DrawdownError, type FieldProblem } from '../errors.js';
import { jsonStructure, msgpackDuplicateKeys, type MsgpackKeys } from './duplicate-keys.js';

const standard = new Packr({ useRecords: false });
const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'auto' as 'bigint' });

/** A map written entry by entry, so a key can repeat (no encoder writes one from an object). */
class Entries {
  constructor(readonly entries: [unknown, unknown][]) {}
}
const map = (...entries: [unknown, unknown][]): Entries => new Entries(entries);

function header(count: number, fix: number, b16: number): Buffer {
  if (count < 16) return Buffer.of(fix | count);
  if (count < 0x10000) return Buffer.of(b16, count >>> 8, count & 0xff);
  return Buffer.of(b16 + 1, count >>> 24, (count >>> 16) & 0xff, (count >>> 8) & 0xff, count & 0xff);
}

function msgpack(value: unknown): Buffer {
  if (value instanceof Entries)
    return Buffer.concat([
      header(value.entries.length, 0x80, 0xde),
      ...value.entries.flatMap(([k, v]) => [standard.pack(k), msgpack(v)]),
    ]);
  if (Array.isArray(value)) return Buffer.concat([header(value.length, 0x90, 0xdc), ...value.map(msgpack)]);
  return standard.pack(value);
}

/** `escape` writes a key's characters as \u escapes (the same key to JSON.parse). */
function json(value: unknown, escape: (key: string) => boolean = () => false): string {
  if (value instanceof Entries) {
    const key = (k: string): string =>
      escape(k)
        ? `"${[...k].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"`
        : JSON.stringify(k);
    return `{${value.entries.map(([k, v]) => `${key(String(k))}:${json(v, escape)}`).join(',')}}`;
  }
  if (Array.isArray(value)) return `[${value.map((v) => json(v, escape)).join(',')}]`;
  return JSON.stringify(value);
}

function refusal(body: Uint8Array, format: 'msgpack' | 'json'): DrawdownError {
  try {
    decodeBatch(body, format);
  } catch (error) {
    if (error instanceof DrawdownError) return error;
    throw error;
  }
  throw new Error('decodeBatch accepted the body');
}

const where = (problems: FieldProblem[]): string[] => problems.map((p) => `${p.index ?? '-'}|${p.field}|${p.code}`);

const event = (i: number, extra: [unknown, unknown][] = []): Entries =>
  map(['id', `e${i}`], ['customer', 'acme'], ['meter', 'images'], ['timestamp', 1_700_000_000_000], ...extra);

describe('decodeBatch refuses repeated keys (shared/events/duplicate-keys.ts)', () => {
  it('names the event and the key: quantity -5 then 7, an invalid then a valid customer', () => {
    for (const format of ['msgpack', 'json'] as const) {
      const encode = (v: unknown): Uint8Array => (format === 'json' ? Buffer.from(json(v)) : msgpack(v));
      const quantity = refusal(
        encode([
          event(0),
          event(1, [
            ['quantity', -5],
            ['quantity', 7],
          ]),
        ]),
        format,
      );
      expect(quantity.code).toBe('body_malformed');
      expect(quantity.status).toBe(400);
      expect(quantity.problems).toEqual([
        {
          index: 1,
          field: 'quantity',
          code: 'duplicate_key',
          message: 'key "quantity" appears more than once in one map',
        },
      ]);
      expect(quantity.message).toBe('event 1 field quantity: key "quantity" appears more than once in one map');

      const customer = refusal(
        encode([
          map(['id', 'a'], ['customer', 'not valid!'], ['customer', 'acme'], ['meter', 'images'], ['timestamp', 1]),
        ]),
        format,
      );
      expect(where(customer.problems)).toEqual(['0|customer|duplicate_key']);
    }
  });

  it('finds them inside dimensions and at any depth, naming the path', () => {
    const body = [
      event(0, [['dimensions', map(['model', 'a'], ['resolution', '1K'], ['model', 'b'])]]),
      event(1, [['extra', [1, map(['x', map(['y', 1], ['y', 2])])]]]),
    ];
    expect(where(refusal(msgpack(body), 'msgpack').problems)).toEqual([
      '0|dimensions.model|duplicate_key',
      '1|extra.1.x.y|duplicate_key',
    ]);
    expect(where(refusal(Buffer.from(json(body)), 'json').problems)).toEqual([
      '0|dimensions.model|duplicate_key',
      '1|extra.1.x.y|duplicate_key',
    ]);
  });

  it('lists every repeated key once per map, up to the problem limit, and a body that is a map has no index', () => {
    const thrice = refusal(msgpack([map(['a', 1], ['b', 1], ['a', 2], ['b', 2], ['a', 3])]), 'msgpack');
    expect(where(thrice.problems)).toEqual(['0|a|duplicate_key', '0|b|duplicate_key']);
    expect(thrice.message).toContain('(and 1 more problem(s) listed)');
    const many = Array.from({ length: problemsListedMax + 10 }, () => map(['k', 1], ['k', 2]));
    expect(refusal(msgpack(many), 'msgpack').problems).toHaveLength(problemsListedMax);
    expect(refusal(Buffer.from(json(many)), 'json').problems).toHaveLength(problemsListedMax);
    expect(where(refusal(msgpack(map(['events', []], ['events', []])), 'msgpack').problems)).toEqual([
      '-|events|duplicate_key',
    ]);
    expect(where(refusal(Buffer.from('{"events":[],"events":[]}'), 'json').problems)).toEqual([
      '-|events|duplicate_key',
    ]);
  });

  it('compares keys as the decoded object names them, not as bytes', () => {
    // msgpackr names the number 1 "1", and stores __proto__ as __proto_.
    expect(where(refusal(msgpack([map(['1', 'a'], [1, 'b'])]), 'msgpack').problems)).toEqual(['0|1|duplicate_key']);
    expect(where(refusal(msgpack([map(['__proto_', 'a'], ['__proto__', 'b'])]), 'msgpack').problems)).toEqual([
      '0|__proto_|duplicate_key',
    ]);
    // The same key as fixstr and as str8.
    const str8 = Buffer.concat([
      Buffer.of(0x82),
      standard.pack('id'),
      standard.pack(1),
      Buffer.of(0xd9, 2),
      Buffer.from('id'),
      standard.pack(2),
    ]);
    expect(where(refusal(Buffer.concat([Buffer.of(0x91), str8]), 'msgpack').problems)).toEqual(['0|id|duplicate_key']);
    expect(where(refusal(msgpack([map(['é', 1], ['é', 2])]), 'msgpack').problems)).toEqual(['0|é|duplicate_key']);
    // JSON: an escaped key is the same key.
    expect(where(refusal(Buffer.from('[{"meter":"a","m\\u0065ter":"b"}]'), 'json').problems)).toEqual([
      '0|meter|duplicate_key',
    ]);
    expect(where(refusal(Buffer.from('[{"é":1,"\\u00e9":2}]'), 'json').problems)).toEqual(['0|é|duplicate_key']);
  });

  it('treats keys that are not UTF-8 as msgpackr names them: refused exactly when the decoded map would lose one', () => {
    const pairs = [
      [Buffer.of(0xff), Buffer.of(0xfe)], // both decode to U+FFFD
      [Buffer.of(0x80), Buffer.of(0x81)],
      [Buffer.of(0xc1, 0x81), Buffer.from('A')], // an overlong "A" is not "A" to the decoder
      [Buffer.from('é'), Buffer.from('e')],
    ];
    for (const [a, b] of pairs) {
      for (const pad of [0, 300]) {
        const entry = (key: Buffer, value: number): Buffer =>
          Buffer.concat([Buffer.of(0xa0 | key.length), key, standard.pack(value)]);
        const body = Buffer.concat([Buffer.of(0x92, 0x82), entry(a!, 1), entry(b!, 2), standard.pack('x'.repeat(pad))]);
        const lost = Object.keys((unpackr.unpack(body) as object[])[0]!).length < 2;
        let refused = false;
        try {
          decodeBatch(body, 'msgpack');
        } catch {
          refused = true;
        }
        expect(refused, `${a!.toString('hex')} / ${b!.toString('hex')}`).toBe(lost);
      }
    }
  });

  it('is not fooled by keys inside string values, or by distinct keys', () => {
    const body = [
      map(['id', '{"a":1,"a":2}'], ['q"uote', '\\'], ['a', map(['a', 1])], ['b', [map(['a', 1]), map(['a', 1])]]),
    ];
    expect(decodeBatch(msgpack(body), 'msgpack')).toEqual(unpackr.unpack(msgpack(body)));
    expect(decodeBatch(Buffer.from(json(body)), 'json')).toEqual(JSON.parse(json(body)));
    expect(decodeBatch(Buffer.from(json([map(['1', 1], ['01', 2], ['a', 1], ['A', 2])])), 'json')).toBeDefined();
  });

  it('finds a repeat in a map too large for pairwise comparison, and stays linear for a huge one', () => {
    const keys = Array.from({ length: 40 }, (_, i): [unknown, unknown] => [`k${i}`, i]);
    expect(where(refusal(msgpack([map(...keys, ['k3', 0])]), 'msgpack').problems)).toEqual(['0|k3|duplicate_key']);
    expect(where(refusal(Buffer.from(json([map(...keys, ['k39', 0])])), 'json').problems)).toEqual([
      '0|k39|duplicate_key',
    ]);
    // Linear, not quadratic: 8× the keys may cost ~8× the time; a pairwise scan would cost 64×. A ratio of best-of-3
    // times in the same run, so a loaded machine slows both sides alike.
    const bodies = (n: number): [Buffer, Buffer] => {
      const entries = new Entries(Array.from({ length: n }, (_, i): [unknown, unknown] => [`k${i}`, 0]));
      return [msgpack([entries]), Buffer.from(json([entries]))];
    };
    const bestMs = ([packed, text]: [Buffer, Buffer]): number => {
      let best = Infinity;
      for (let run = 0; run < 3; run++) {
        const started = performance.now();
        expect((msgpackDuplicateKeys(packed, 32, 100) as MsgpackKeys).duplicates).toEqual([]);
        expect(jsonStructure(text, 32, 100).duplicates).toEqual([]);
        best = Math.min(best, performance.now() - started);
      }
      return best;
    };
    const small = bestMs(bodies(20_000));
    const large = bestMs(bodies(160_000));
    expect(large / small).toBeLessThan(32);
  });

  it("checks msgpackr's records: a repeated key in a record definition, one- and two-byte record ids", () => {
    const events = Array.from({ length: 3 }, (_, i) => ({
      id: `e${i}`,
      customer: 'acme',
      meter: 'images',
      timestamp: 1,
      dimensions: { model: 'm', aa: 'x' },
    }));
    for (const packr of [new Packr({ useRecords: true }), new Packr({ useRecords: true, maxOwnStructures: 200 })]) {
      // Enough distinct shapes that two-byte ids are used when the packr allows them.
      const shapes = Array.from({ length: 120 }, (_, i) => ({ [`f${i}`]: i }));
      const body = packr.pack([...events, ...shapes]);
      const decoded = decodeBatch(body, 'msgpack');
      expect(decoded).toEqual(unpackr.unpack(body));
      // Records are re-encoded to be split, not sliced: no offsets for the router.
      expect(decodedElementOffsets(decoded, body)).toBeUndefined();
      // The same body with the dimension key "aa" renamed to "model" in its record definition.
      const at = body.indexOf(Buffer.from([0xa2, 0x61, 0x61]));
      const renamed = Buffer.concat([
        body.subarray(0, at),
        Buffer.from([0xa5]),
        Buffer.from('model'),
        body.subarray(at + 3),
      ]);
      expect(where(refusal(renamed, 'msgpack').problems)).toEqual(['0|dimensions.model|duplicate_key']);
    }
  });

  it("refuses msgpackr's bundled strings, whose keys it cannot check", () => {
    const body = new Packr({ useRecords: false, bundleStrings: true }).pack([{ id: 'a'.repeat(40), customer: 'acme' }]);
    expect(unpackr.unpack(body)).toBeDefined();
    expect(refusal(body, 'msgpack').message).toContain('bundled strings');
  });

  it('still refuses JSON nested too deep', () => {
    expect(refusal(Buffer.from(`${'['.repeat(40)}${']'.repeat(40)}`), 'json').message).toContain('deeper than');
    expect(refusal(Buffer.from('[{"a":1,"a":'), 'json').message).toContain('not valid JSON');
  });
});

// Random trees of maps written entry by entry, with keys from a small set so they repeat often.
const key = fc.constantFrom<unknown>('a', 'b', '1', 1, 'é', '__proto__', '__proto_', 'null', null, 1.5, '1.5', 'id');
const leaf = fc.oneof(
  fc.integer(),
  fc.constantFrom('x', '{"a":1,"a":2}', 'q"uote', 'back\\slash', '[,]', ''),
  fc.boolean(),
);
const tree = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.array(tie('node'), { maxLength: 4 }),
    tie('map'),
  ),
  map: fc
    .array(fc.tuple(key, tie('node')), { maxLength: 6 })
    .map((entries) => new Entries(entries as [unknown, unknown][])),
}));

/** Where the repeated keys are, from the tree itself: `name` is how the decoder names a key. */
function expected(body: unknown[], name: (key: unknown) => string): string[] {
  const out: string[] = [];
  const walk = (value: unknown, path: string[], index: number): void => {
    if (value instanceof Entries) {
      const seen = new Map<string, boolean>();
      for (const [k, v] of value.entries) {
        const n = name(k);
        if (seen.get(n) === false) out.push(`${index}|${[...path, n].join('.')}|duplicate_key`);
        seen.set(n, seen.has(n));
        walk(v, [...path, n], index);
      }
    } else if (Array.isArray(value)) value.forEach((v, i) => walk(v, [...path, String(i)], index));
  };
  body.forEach((event, i) => walk(event, [], i));
  return out.sort();
}

describe('repeated keys agree with the decoded tree', () => {
  it('MessagePack: every repeat found, named as msgpackr names the key, and nothing else', () => {
    const msgpackrName = (k: unknown): string => (String(k) === '__proto__' ? '__proto_' : String(k));
    fc.assert(
      fc.property(fc.array(tree.node, { maxLength: 5 }), (body) => {
        const bytes = msgpack(body);
        unpackr.unpack(bytes);
        const found = msgpackDuplicateKeys(bytes, 32, 1000) as MsgpackKeys;
        expect(where(found.duplicates).sort()).toEqual(expected(body, msgpackrName));
        // Where each element is, as the router's own scan finds it.
        expect(found.offsets).toEqual(arrayElementOffsets(bytes).offsets);
      }),
      { numRuns: 1500 },
    );
  });

  it('JSON: every repeat found, escaped or not, and nothing else', () => {
    fc.assert(
      fc.property(fc.array(tree.node, { maxLength: 5 }), fc.integer(), (body, seed) => {
        let n = seed;
        const text = json(body, () => (n = (n * 1103515245 + 12345) & 0x7fffffff) % 3 === 0);
        JSON.parse(text);
        const found = jsonStructure(Buffer.from(text), 1000, 1000);
        expect(where(found.duplicates).sort()).toEqual(expected(body, String));
      }),
      { numRuns: 1500 },
    );
  });
});
