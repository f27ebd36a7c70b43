/**
 * Credit holds as an application uses them, over HTTP against real
 * nats-server and ClickHouse (docs/holds.md): reserve, retry, release,
 * expiry, entitlement, and usage naming its hold counted exactly once in
 * `available` — before, during and after settlement. Defined once and run on
 * both ClickHouse back ends.
 */
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import {
  api,
  catalogPath,
  postEvents,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  waitForStreamDrained,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

/** The demo catalog with credits allowed 5 below zero. */
export function holdsCatalog(dir: string): string {
  const catalog = JSON.parse(readFileSync(catalogPath, 'utf8'));
  catalog.credit_units[0].allowed_negative_balance = '5';
  const path = join(dir, 'holds-catalog.json');
  writeFileSync(path, JSON.stringify(catalog));
  return path;
}

/** `count` Nano Banana 1K prompt images (3 credits each) at `atMs`, naming `hold` when given. */
function images(customer: string, count: number, atMs: number, id: string, hold?: string): unknown[] {
  return [
    {
      id,
      customer,
      meter: 'images',
      quantity: count,
      timestamp: atMs,
      dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
      ...(hold === undefined ? {} : { hold }),
    },
  ];
}

/** `engine`: the hold store's (DRAWDOWN_HOLDS_ENGINE); each engine runs under one of the two back ends. */
export function defineHoldsApi(backend: Backend, engine: 'kv' | 'log'): void {
  describe(`credit holds over HTTP on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}, ${engine} engine`, () => {
    const dir = tempDir(`holds-api-${backend}`);
    let nats: NatsServerProcess;
    let clickhouse: ClickHouseTarget;
    let drawdown: Running;
    let base: string;
    // Usage minutes well before the settlement cut-off (now, floored to the minute).
    const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;

    const credits = async (customer: string) => {
      const balance = await api(base, 'GET', `/v1/customers/${customer}/balance`);
      expect(balance.status).toBe(200);
      const unit = balance.body.units.find((u: { unit: string }) => u.unit === 'credits');
      return unit as { settled: string; pending: string; held: string; available: string };
    };
    const buy = async (customer: string) => {
      const bought = await api(
        base,
        'POST',
        `/v1/customers/${customer}/purchases`,
        { package: 'credits-100', effective_at: new Date(atMs - 60_000).toISOString() },
        { 'idempotency-key': `buy-${customer}` },
      );
      expect(bought.status).toBe(201);
    };
    const reserve = (customer: string, body: unknown, key?: string) =>
      api(base, 'POST', `/v1/customers/${customer}/holds`, body, key === undefined ? {} : { 'idempotency-key': key });
    const counted = () => waitForStreamDrained(nats.url);

    beforeAll(async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      drawdown = await startDrawdown(
        testConfig({
          natsUrl: nats.url,
          clickhouseUrl: clickhouse.url,
          catalog: holdsCatalog(dir.path),
          liveBalanceCacheMs: 0,
          holdReleaseGraceMs: 3_000,
          holdsEngine: engine,
        }),
        { ingest: true, rater: true, settlement: true },
      );
      base = drawdown.url!;
    });

    afterAll(async () => {
      await drawdown?.stop();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    it('reserves against balance + allowance, answers a retried key with the same hold, and releases', async () => {
      await buy('alice');
      const first = await reserve('alice', { unit: 'credits', amount: '30' }, 'job-1');
      expect(first.status).toBe(201);
      expect(first.body).toMatchObject({ created: true, available: '70' });
      expect(first.body.hold).toMatchObject({ status: 'open', amount: '30', reserved: '30', spent: '0' });
      expect(await credits('alice')).toMatchObject({ settled: '100', held: '30', available: '70' });

      const retried = await reserve('alice', { unit: 'credits', amount: '30' }, 'job-1');
      expect(retried.status).toBe(201);
      expect(retried.body.created).toBe(false);
      expect(retried.body.hold.id).toBe(first.body.hold.id);
      expect(await credits('alice')).toMatchObject({ held: '30', available: '70' });

      const reused = await reserve('alice', { unit: 'credits', amount: '31' }, 'job-1');
      expect(reused.status).toBe(409);
      expect(reused.body.code).toBe('idempotency_key_reused');

      // 70 available + 5 allowed below zero: 75 is the most one more hold may take.
      const check = (amount: string) =>
        api(base, 'GET', `/v1/customers/alice/entitlement?unit=credits&amount=${amount}`);
      expect((await check('75')).body).toMatchObject({ allowed: true, available: '70', allowance: '5', held: '30' });
      expect((await check('75.000000001')).body.allowed).toBe(false);
      const refused = await reserve('alice', { unit: 'credits', amount: '76' }, 'job-2');
      expect(refused.status).toBe(402);
      expect(refused.body).toMatchObject({ code: 'insufficient_credits', available: '70', allowance: '5' });

      const listed = await api(base, 'GET', '/v1/customers/alice/holds?unit=credits');
      expect(listed.body.held).toEqual({ credits: '30' });
      expect(listed.body.holds.map((h: { id: string }) => h.id)).toEqual([first.body.hold.id]);

      // Released: it keeps counting for the release grace (usage sent before it may be on its way), then ends.
      const releasedAtMs = Date.now();
      const released = await api(base, 'POST', `/v1/holds/${first.body.hold.id}/release`);
      expect(released.status).toBe(200);
      expect(released.body).toMatchObject({ released: true, hold: { status: 'releasing', reserved: '30' } });
      expect(Date.parse(released.body.hold.expires_at)).toBeLessThanOrEqual(releasedAtMs + 3_000 + 1_000);
      expect((await api(base, 'POST', `/v1/holds/${first.body.hold.id}/release`)).body.released).toBe(false);
      expect(await credits('alice')).toMatchObject({ held: '30', available: '70' });
      await new Promise((r) => setTimeout(r, Date.parse(released.body.hold.expires_at) - Date.now() + 50));
      expect(await credits('alice')).toMatchObject({ held: '0', available: '100' });
      expect((await api(base, 'GET', `/v1/holds/${first.body.hold.id}`)).body).toMatchObject({ status: 'released' });
      expect((await api(base, 'GET', '/v1/customers/alice/holds')).body.holds).toEqual([]);

      // Released with wait_for_usage false (the work never ran): it ends at once.
      const second = await reserve('alice', { unit: 'credits', amount: '12' }, 'job-3');
      expect(await credits('alice')).toMatchObject({ available: '88' });
      const now = await api(base, 'POST', `/v1/holds/${second.body.hold.id}/release`, { wait_for_usage: false });
      expect(now.body).toMatchObject({ released: true, hold: { status: 'released', reserved: '0' } });
      expect(await credits('alice')).toMatchObject({ held: '0', available: '100' });
      const badBody = await api(base, 'POST', `/v1/holds/${second.body.hold.id}/release`, { wait_for_usage: 'no' });
      expect(badBody.body.errors[0]).toMatchObject({ field: 'wait_for_usage', code: 'type' });
    });

    it('refuses malformed requests naming the field, and unknown holds with 404', async () => {
      const noUnit = await reserve('alice', { amount: '1' });
      expect(noUnit.status).toBe(400);
      expect(noUnit.body.errors[0].field).toBe('unit');
      const badUnit = await reserve('alice', { unit: 'gold', amount: '1' });
      expect(badUnit.body.errors[0]).toMatchObject({ field: 'unit', code: 'unknown_unit' });
      const badAmount = await reserve('alice', { unit: 'credits', amount: '-1' });
      expect(badAmount.status).toBe(400);
      expect(badAmount.body.errors[0].field).toBe('amount');
      const longTtl = await reserve('alice', { unit: 'credits', amount: '1', ttl_ms: 24 * 3_600_000 });
      expect(longTtl.body.errors[0].field).toBe('ttl_ms');
      const unknown = await api(base, 'POST', '/v1/holds/YWxpY2U.Y3JlZGl0cw.AAAAAAAAAAAAAAAA/release');
      expect(unknown.status).toBe(404);
      expect(unknown.body.code).toBe('hold_not_found');
      expect((await api(base, 'GET', '/v1/holds/not-a-hold')).status).toBe(404);
    });

    it('lets a hold expire at its ttl: it stops counting by itself', async () => {
      await buy('erin');
      const made = await reserve('erin', { unit: 'credits', amount: '40', ttl_ms: 1_000 }, 'short');
      expect(made.status).toBe(201);
      expect(await credits('erin')).toMatchObject({ held: '40', available: '60' });
      await new Promise((r) => setTimeout(r, 1_200));
      expect(await credits('erin')).toMatchObject({ held: '0', available: '100' });
      const seen = await api(base, 'GET', `/v1/holds/${made.body.hold.id}`);
      expect(seen.body).toMatchObject({ status: 'expired', reserved: '0' });
      // The expired hold's full amount is free again: 100 + 5.
      expect((await reserve('erin', { unit: 'credits', amount: '105' }, 'all')).status).toBe(201);
    });

    it('counts a hold and the usage naming it once: before, while and after settlement, and past the hold', async () => {
      await buy('bob');
      const made = await reserve('bob', { unit: 'credits', amount: '20', ttl_ms: 600_000 }, 'render');
      const hold = made.body.hold.id as string;
      expect(await credits('bob')).toMatchObject({ held: '20', available: '80' });

      // 4 images × 3 credits = 12 of the 20 reserved: pending takes 12, the hold keeps 8, available stays 80.
      expect((await postEvents(base, images('bob', 4, atMs, 'bob-1', hold))).status).toBe(202);
      await counted();
      expect(await credits('bob')).toMatchObject({ settled: '100', pending: '12', held: '8', available: '80' });
      const listed = await api(base, 'GET', '/v1/customers/bob/holds');
      expect(listed.body.holds[0]).toMatchObject({ id: hold, spent: '12', reserved: '8', status: 'open' });

      const settleUntil = (minutes: number) =>
        api(base, 'POST', '/v1/settlements', { until: new Date(atMs + minutes * 60_000).toISOString() });
      // While the run posts, available never reads above what it is before and after (it may dip for a moment).
      let running = true;
      const seen: string[] = [];
      const watch = (async () => {
        while (running) seen.push((await credits('bob')).available);
      })();
      const run = await settleUntil(2);
      running = false;
      await watch;
      expect(run.status).toBe(200);
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.filter((a) => Number(a) > 80)).toEqual([]);
      expect(await credits('bob')).toMatchObject({ settled: '88', pending: '0', held: '8', available: '80' });

      // 5 more images (15): the hold's 20 is spent past its end, and only the balance covers the rest.
      expect((await postEvents(base, images('bob', 5, atMs, 'bob-2', hold))).status).toBe(202);
      await counted();
      expect(await credits('bob')).toMatchObject({ settled: '88', pending: '15', held: '0', available: '73' });

      const released = await api(base, 'POST', `/v1/holds/${hold}/release`);
      expect(released.body.released).toBe(true);
      expect(await credits('bob')).toMatchObject({ held: '0', available: '73' });
      // The next run takes the later usage as late usage of a minute already settled.
      expect((await settleUntil(3)).status).toBe(200);
      expect(await credits('bob')).toMatchObject({ settled: '73', pending: '0', available: '73' });
    });

    it('counts usage naming an unknown, closed or foreign hold as ordinary usage: nothing lost, nothing covered', async () => {
      await buy('carol');
      const own = await reserve('carol', { unit: 'credits', amount: '10' }, 'c-1');
      await api(base, 'POST', `/v1/holds/${own.body.hold.id}/release`, { wait_for_usage: false });
      const foreign = await reserve('alice', { unit: 'credits', amount: '10' }, 'a-foreign');
      expect(foreign.status).toBe(201);
      const batch = [
        ...images('carol', 1, atMs, 'c-u1', 'Y2Fyb2w.Y3JlZGl0cw.ZZZZZZZZZZZZZZZZ'),
        ...images('carol', 1, atMs, 'c-u2', own.body.hold.id),
        ...images('carol', 1, atMs, 'c-u3', foreign.body.hold.id),
      ];
      expect((await postEvents(base, batch, { json: true })).status).toBe(202);
      await counted();
      expect(await credits('carol')).toMatchObject({ pending: '9', held: '0', available: '91' });
      // alice's hold is not touched by carol's usage.
      const alices = await api(base, 'GET', `/v1/holds/${foreign.body.hold.id}`);
      expect(alices.body).toMatchObject({ spent: '0', reserved: '10' });
      await api(base, 'POST', `/v1/holds/${foreign.body.hold.id}/release`, { wait_for_usage: false });
    });

    it('a release right after sending usage: the usage is counted before the hold stops counting, never neither', async () => {
      await buy('dave');
      const made = await reserve('dave', { unit: 'credits', amount: '10' }, 'call-1');
      const hold = made.body.hold.id as string;
      expect(await credits('dave')).toMatchObject({ available: '90' });
      // One image (3 credits) naming the hold, then the release straight away, as an app ends a request.
      expect((await postEvents(base, images('dave', 1, atMs, 'dave-1', hold))).status).toBe(202);
      const released = await api(base, 'POST', `/v1/holds/${hold}/release`);
      expect(released.body.released).toBe(true);
      const endMs = Date.parse(released.body.hold.expires_at) + 300;
      const seen: string[] = [];
      while (Date.now() < endMs) seen.push((await credits('dave')).available);
      await counted();
      seen.push((await credits('dave')).available);
      // 90 while the hold counts (with or without its usage), 97 once it ended; 100 would be neither.
      expect(seen.filter((a) => a !== '90' && a !== '97')).toEqual([]);
      expect(seen.at(-1)).toBe('97');
      expect(await credits('dave')).toMatchObject({ pending: '3', held: '0', available: '97' });
    });

    it('rejects an event whose hold is not a hold id, naming the event and the field', async () => {
      const bad = await postEvents(base, [
        ...images('carol', 1, atMs, 'c-ok'),
        ...images('carol', 1, atMs, 'c-x', 'a b'),
      ]);
      expect(bad.status).toBe(422);
      expect(bad.body.errors[0]).toMatchObject({ index: 1, field: 'hold', code: 'format' });
    });
  });
}
