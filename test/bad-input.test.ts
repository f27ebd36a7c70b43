/**
 * Hostile and broken input at the gateway, end to end: slow bodies time out,
 * and a bounded fuzz run of random and mutated bodies never gets a 5xx, never
 * stops the process, and leaves ClickHouse holding exactly what was accepted.
 */
import { connect as netConnect } from 'node:net';
import { Decimal } from 'decimal.js';
import { Unpackr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import {
  packr,
  prng,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  usageTotals,
  waitForStreamDrained,
  type ClickHouseTarget,
} from './harness.js';

describe('bad input at the gateway', () => {
  const dir = tempDir('bad-input');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  let drawdown: Running;
  let base: string;
  const atMs = Date.now() - 60_000;

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    drawdown = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url, bodyTimeoutMs: 1_000, bodyBytesMax: 64 * 1024 }),
      { ingest: true, rater: true, settlement: false },
    );
    base = drawdown.url!;
  });

  afterAll(async () => {
    await drawdown?.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('a body that trickles in slower than the body timeout is cut off, and the server keeps serving', async () => {
    const port = Number(new URL(base).port);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = netConnect(port, '127.0.0.1', () => {
        socket.write(
          `POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[`,
        );
        // One byte every 300 ms: 1,000 bytes would take 5 minutes.
        const drip = setInterval(() => socket.write(' '), 300);
        socket.on('close', () => clearInterval(drip));
      });
      let received = '';
      socket.on('data', (d) => (received += d.toString()));
      socket.on('close', () => resolve(received));
      socket.on('error', reject);
      setTimeout(() => reject(new Error('connection was not closed')), 10_000);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(answer).toContain('request_timeout');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });

  it('fuzz: random and mutated bodies for a bounded time get 4xx or 202, never 5xx, and totals stay exact', async () => {
    const seed = Number(process.env.DRAWDOWN_FUZZ_SEED ?? Date.now() % 1_000_000);
    const random = prng(seed);
    const int = (n: number): number => Math.floor(random() * n);
    const valid = (): unknown[] =>
      Array.from({ length: 1 + int(5) }, (_, i) => ({
        id: `z${int(1e9)}-${i}`,
        customer: `fz${int(3)}`,
        meter: 'gpt-4o.input_tokens',
        quantity: int(2) ? int(10_000) : `${int(1000)}.${int(1000)}`,
        timestamp: atMs + int(1000),
      }));
    const mutate = (bytes: Buffer): Buffer => {
      const out = Buffer.from(bytes);
      switch (int(4)) {
        case 0: // flip bits
          for (let k = 0; k < 1 + int(4); k++) {
            const at = int(out.length);
            out[at] = out[at]! ^ (1 << int(8));
          }
          return out;
        case 1: // truncate
          return out.subarray(0, int(out.length));
        case 2: // insert random bytes
          return Buffer.concat([
            out.subarray(0, int(out.length)),
            Buffer.from(Array.from({ length: 1 + int(8) }, () => int(256))),
            out.subarray(int(out.length)),
          ]);
        default: // random garbage
          return Buffer.from(Array.from({ length: int(200) }, () => int(256)));
      }
    };
    const reference = new Unpackr({ mapsAsObjects: true, int64AsType: 'string' as 'bigint' });
    const expected = new Map<string, Decimal>();
    const counted = new Set<string>();
    const statuses = new Map<number, number>();
    const deadline = Date.now() + 15_000;
    let requests = 0;
    while (Date.now() < deadline && requests < 5_000) {
      requests++;
      const json = int(4) === 0;
      const clean = json ? Buffer.from(JSON.stringify(valid())) : packr.pack(valid());
      const body = int(5) === 0 ? clean : mutate(clean);
      const response = await fetch(`${base}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': json ? 'application/json' : 'application/msgpack' },
        body,
      });
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      expect(
        response.status,
        `seed ${seed}: status ${response.status} for ${body.toString('hex').slice(0, 200)}`,
      ).toBeLessThan(500);
      const answer = (await response.json()) as { accepted?: number };
      if (response.status === 202 && answer.accepted) {
        // What the gateway accepted, decoded by a reference decoder, is what must be counted:
        // each (customer, id) once, first seen first kept. Inserting a copy of part of a body
        // can repeat an event inside one batch, and the rater must drop the repeat.
        const events = (json ? JSON.parse(body.toString('utf8')) : reference.unpack(body)) as {
          id: string;
          customer: string;
          quantity?: number | string;
        }[];
        for (const e of events) {
          const key = `${e.customer}\0${e.id}`;
          if (counted.has(key)) continue;
          counted.add(key);
          expected.set(
            e.customer,
            (expected.get(e.customer) ?? new Decimal(0)).plus(new Decimal(String(e.quantity ?? 1))),
          );
        }
      }
    }
    expect(statuses.get(202) ?? 0, `seed ${seed}`).toBeGreaterThan(0);
    expect(
      [...statuses.keys()].some((s) => s >= 400),
      `seed ${seed}`,
    ).toBe(true);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    await waitForStreamDrained(nats.url);
    const totals = await usageTotals(drawdown.store!);
    const got = new Map([...totals].map(([key, value]) => [key.split('|')[0]!, new Decimal(value.split('|')[0]!)]));
    expect([...got].map(([c, q]) => [c, q.toFixed()]).sort(), `seed ${seed}`).toEqual(
      [...expected].map(([c, q]) => [c, q.toFixed()]).sort(),
    );
  });
});
