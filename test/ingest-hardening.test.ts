/**
 * Hardening of the ingest gateway against a real nats-server (issue 16):
 * a body with a repeated map key is refused 400 naming the key and the
 * event, not read as "last value wins"; a body in a Content-Encoding the
 * gateway does not decode is refused 415 naming it, after authentication
 * (401/403 still come first). Nothing refused reaches the stream.
 */
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey, newKey } from '../shared/auth.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { packr, startNats, streamState, tempDir, testConfig } from './harness.js';

/** A MessagePack map written entry by entry, so a key can repeat (no encoder writes one from an object). */
class Entries {
  constructor(readonly entries: [string, unknown][]) {}
}

function msgpack(value: unknown): Buffer {
  if (value instanceof Entries) {
    const head =
      value.entries.length < 16 ? Buffer.of(0x80 | value.entries.length) : Buffer.of(0xde, 0, value.entries.length);
    return Buffer.concat([head, ...value.entries.flatMap(([k, v]) => [packr.pack(k), msgpack(v)])]);
  }
  if (Array.isArray(value)) return Buffer.concat([Buffer.of(0x90 | value.length), ...value.map(msgpack)]);
  return packr.pack(value);
}

function json(value: unknown): string {
  if (value instanceof Entries)
    return `{${value.entries.map(([k, v]) => `${JSON.stringify(k)}:${json(v)}`).join(',')}}`;
  if (Array.isArray(value)) return `[${value.map(json).join(',')}]`;
  return JSON.stringify(value);
}

describe('ingest hardening over HTTP', () => {
  const dir = tempDir('ingest-hardening');
  let nats: NatsServerProcess;
  let gateway: Running;
  let base: string;
  const keys = { ingest: newKey(), read: newKey() };
  const event = (i: number, ...extra: [string, unknown][]): Entries =>
    new Entries([['id', `h${i}`], ['customer', 'acme'], ['meter', 'images'], ['timestamp', Date.now()], ...extra]);

  const stored = async (): Promise<number> => (await streamState(nats.url)).messages;

  async function post(
    body: Buffer | string,
    headers: Record<string, string> = {},
    key: string | null = keys.ingest,
  ): Promise<{ status: number; body: any }> {
    const response = await fetch(`${base}/v1/events`, {
      method: 'POST',
      headers: {
        'content-type': typeof body === 'string' ? 'application/json' : 'application/msgpack',
        ...(key === null ? {} : { authorization: `Bearer ${key}` }),
        ...headers,
      },
      body,
    });
    return { status: response.status, body: await response.json() };
  }

  beforeAll(async () => {
    nats = await startNats(dir.path);
    const apiKeys = [
      { id: 'ingest', sha256: hashKey(keys.ingest), scopes: ['ingest'] },
      { id: 'reader', sha256: hashKey(keys.read), scopes: ['read'] },
    ];
    gateway = await startDrawdown(
      testConfig({ natsUrl: nats.url, auth: 'required', apiKeys: JSON.stringify(apiKeys) }),
      { ingest: true, rater: false, settlement: false },
    );
    base = gateway.url!;
  });

  afterAll(async () => {
    await gateway?.stop();
    await nats?.stop();
    dir.remove();
  });

  describe('a repeated map key', () => {
    const cases: [string, unknown[], { index: number; field: string }[]][] = [
      [
        'quantity -5 then 7',
        [event(0, ['quantity', 1]), event(1, ['quantity', -5], ['quantity', 7])],
        [{ index: 1, field: 'quantity' }],
      ],
      [
        'an invalid then a valid customer',
        [
          new Entries([
            ['id', 'h0'],
            ['customer', 'not valid!'],
            ['customer', 'acme'],
            ['meter', 'images'],
            ['timestamp', Date.now()],
          ]),
        ],
        [{ index: 0, field: 'customer' }],
      ],
      [
        'a dimension',
        [
          event(0),
          event(1),
          event(2, [
            'dimensions',
            new Entries([
              ['model', 'a'],
              ['resolution', '1K'],
              ['model', 'b'],
            ]),
          ]),
        ],
        [{ index: 2, field: 'dimensions.model' }],
      ],
      [
        'deeper, and in two events',
        [
          event(0, [
            'extra',
            [
              new Entries([
                ['x', 1],
                ['x', 2],
              ]),
            ],
          ]),
          event(1, ['id', 'again']),
        ],
        [
          { index: 0, field: 'extra.0.x' },
          { index: 1, field: 'id' },
        ],
      ],
    ];

    for (const format of ['msgpack', 'json'] as const) {
      for (const [label, body, named] of cases) {
        it(`${format}: ${label} is refused 400 naming the event and the key, and nothing is published`, async () => {
          const before = await stored();
          const response = await post(format === 'json' ? json(body) : msgpack(body));
          expect(response.status).toBe(400);
          expect(response.body.code).toBe('body_malformed');
          expect(response.body.errors).toEqual(
            named.map((n) => ({
              ...n,
              code: 'duplicate_key',
              message: `key "${n.field.split('.').pop()}" appears more than once in one map`,
            })),
          );
          expect(response.body.detail).toContain(`event ${named[0]!.index} field ${named[0]!.field}`);
          expect(await stored()).toBe(before);
        });
      }
    }

    it('the same batches without the repeat are accepted', async () => {
      const before = await stored();
      expect(
        (
          await post(
            msgpack([
              event(10, ['quantity', 7]),
              event(11, [
                'dimensions',
                new Entries([
                  ['model', 'a'],
                  ['resolution', '1K'],
                ]),
              ]),
            ]),
          )
        ).status,
      ).toBe(202);
      expect(await post(json([event(12, ['quantity', 7])]))).toMatchObject({ status: 202 });
      expect(await stored()).toBe(before + 2);
    });
  });

  describe('Content-Encoding', () => {
    const body = msgpack([event(20)]);

    for (const encoding of ['gzip', 'br', 'deflate', 'gzip, identity']) {
      it(`${encoding} is refused 415 naming it, and nothing is published`, async () => {
        const before = await stored();
        const response = await post(encoding === 'gzip' ? gzipSync(body) : body, { 'content-encoding': encoding });
        expect(response.status).toBe(415);
        expect(response.body.code).toBe('unsupported_media_type');
        expect(response.body.detail).toContain(`Content-Encoding "${encoding}"`);
        expect(await stored()).toBe(before);
      });
    }

    it('identity (or none) is read as it is', async () => {
      const before = await stored();
      expect((await post(msgpack([event(21)]), { 'content-encoding': 'identity' })).status).toBe(202);
      expect((await post(msgpack([event(22)]), { 'content-encoding': 'Identity' })).status).toBe(202);
      expect(await stored()).toBe(before + 2);
    });

    it('authentication still comes first: 401 without a key, 403 with a key lacking the ingest scope', async () => {
      const before = await stored();
      const anonymous = await post(gzipSync(body), { 'content-encoding': 'gzip' }, null);
      expect({ status: anonymous.status, code: anonymous.body.code }).toEqual({ status: 401, code: 'unauthorized' });
      const reader = await post(gzipSync(body), { 'content-encoding': 'gzip' }, keys.read);
      expect({ status: reader.status, code: reader.body.code }).toEqual({ status: 403, code: 'forbidden' });
      expect(await stored()).toBe(before);
    });
  });
});
