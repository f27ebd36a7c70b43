/**
 * Balance notices over real nats-server and ClickHouse (issue 15,
 * docs/notices.md), with two settlement processes against one store: holds
 * reserved concurrently through both cross each threshold once — one
 * balance.low per threshold, one balance.exhausted, one balance.recovered
 * each when released; usage the rater commits crosses a threshold too; auto
 * top-up asks once per crossing, never past max_per_day, and posts credits
 * only when the app confirms (or at once in trusted mode). Every stream
 * message has its own id. Defined once, run on both ClickHouse back ends.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import type { Notice } from '../settlement/notices/notice.js';
import {
  api,
  catalogPath,
  postEvents,
  startClickHouse,
  startNats,
  tempDir,
  testConfig,
  type Backend,
  type ClickHouseTarget,
} from './harness.js';

const dayMs = 86_400_000;

/**
 * The demo catalog with 5 credits allowed below zero, balance.low at 50 and 10 and a grant.expiring lead time of 7
 * days for everyone; and three subscriptions (from `startMs`) whose one-time charge grants 25 credits: expiring 3
 * days after `startMs` (n-expiring, n-expiring-off) or 30 days after (n-expiring-far).
 */
export function noticesCatalog(dir: string, startMs = Math.floor(Date.now() / 60_000) * 60_000 - dayMs): string {
  const catalog = JSON.parse(readFileSync(catalogPath, 'utf8'));
  catalog.credit_units[0].allowed_negative_balance = '5';
  catalog.credit_units[0].notices = { low: ['50', '10'], expiring_within: 'P7D' };
  const start = new Date(startMs).toISOString();
  catalog.plans = [{ id: 'starter', billing: 'monthly', versions: [{ version: 1, grants: [] }] }];
  catalog.charges = [
    { id: 'welcome', name: 'Welcome credits', grant: { unit: 'credits', quantity: '25', expires_after: 'P3D' } },
    { id: 'welcome-long', grant: { unit: 'credits', quantity: '25', expires_after: 'P30D' } },
  ];
  catalog.subscriptions = [
    ['n-expiring', 'welcome'],
    ['n-expiring-off', 'welcome'],
    ['n-expiring-far', 'welcome-long'],
  ].map(([customer, charge]) => ({
    id: `sub-${customer}`,
    customer,
    plan: 'starter',
    start,
    charges: [{ id: 'welcome', charge, at: start }],
  }));
  const path = join(dir, 'notices-catalog.json');
  writeFileSync(path, JSON.stringify(catalog));
  return path;
}

/** Every message of the notices stream, in order. */
export async function streamNotices(natsUrl: string): Promise<Notice[]> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    const { state } = await jsm.streams.info('DRAWDOWN_NOTICES');
    const out: Notice[] = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const message = await jsm.streams.getMessage('DRAWDOWN_NOTICES', { seq }).catch(() => null);
      if (message !== null) out.push(message.json<Notice>());
    }
    return out;
  } finally {
    await nc.close();
  }
}

interface Delivery {
  headers: Record<string, string>;
  body: string;
}

/** A webhook receiver on a local port that answers 204 to everything and keeps what it got. */
async function startReceiver(): Promise<{ url: string; received: Delivery[]; stop: () => Promise<void> }> {
  const received: Delivery[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers = Object.fromEntries(
        Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : (v ?? '')]),
      );
      received.push({ headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    received,
    stop: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export function defineNotices(backend: Backend): void {
  describe(`balance notices on ${backend === 'chdb' ? 'chDB' : 'clickhouse-server'}`, () => {
    const dir = tempDir(`notices-${backend}`);
    let nats: NatsServerProcess;
    let clickhouse: ClickHouseTarget;
    const processes: Running[] = [];
    const bases = () => processes.map((p) => p.url!);
    const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;

    let config: ReturnType<typeof testConfig>;

    beforeAll(async () => {
      nats = await startNats(dir.path);
      clickhouse = await startClickHouse(backend, dir.path);
      config = testConfig({
        natsUrl: nats.url,
        clickhouseUrl: clickhouse.url,
        catalog: noticesCatalog(dir.path),
        liveBalanceCacheMs: 0,
        noticesPollMs: 100,
      });
      const first = await startDrawdown(config, { ingest: true, rater: true, settlement: true });
      processes.push(first);
      // A second API process on the same store (chDB is one per process) and the same NATS.
      processes.push(
        await startDrawdown(config, { ingest: false, rater: false, settlement: true }, { store: first.store! }),
      );
    });

    afterAll(async () => {
      for (const p of processes.reverse()) await p.stop();
      await clickhouse?.stop();
      await nats?.stop();
      dir.remove();
    });

    const idle = () => Promise.all(processes.map((p) => p.notices!.evaluator.idle()));
    const of = async (customer: string) => {
      await idle();
      return (await streamNotices(nats.url)).filter((n) => n.data.customer === customer);
    };
    const kinds = (notices: Notice[]) =>
      notices.map((n) => `${n.type}${n.data.threshold === undefined ? '' : `:${n.data.threshold}`}`).sort();
    const buy = async (customer: string, key = `buy-${customer}`) => {
      const bought = await api(
        bases()[0]!,
        'POST',
        `/v1/customers/${customer}/purchases`,
        {
          package: 'credits-100',
          effective_at: new Date(atMs - 60_000).toISOString(),
        },
        { 'idempotency-key': key },
      );
      expect(bought.status).toBe(201);
    };
    const reserve = (i: number, customer: string, amount: string, key: string) =>
      api(
        bases()[i % 2]!,
        'POST',
        `/v1/customers/${customer}/holds`,
        { unit: 'credits', amount },
        { 'idempotency-key': key },
      );

    it('given holds reserved concurrently through two processes, then each threshold crossed emits one notice, and releasing them one recovery each', async () => {
      for (const round of [1, 2]) {
        const customer = `n-holds-${round}`;
        await buy(customer);
        // 19 × 5 = 95 of 100: available 5, below 50 and below 10.
        const answers = await Promise.all(Array.from({ length: 19 }, (_, i) => reserve(i, customer, '5', `h${i}`)));
        expect(answers.every((a) => a.status === 201)).toBe(true);
        expect(kinds(await of(customer))).toEqual(['balance.low:10', 'balance.low:50', 'purchase.posted']);
        // Two more: available −5, with 5 allowed below zero: exhausted (not over the limit).
        const more = await Promise.all([reserve(0, customer, '5', 'h19'), reserve(1, customer, '5', 'h20')]);
        expect(more.map((a) => a.status)).toEqual([201, 201]);
        const holds = [...answers, ...more].map((a) => a.body.hold.id as string);
        expect(kinds(await of(customer))).toEqual([
          'balance.exhausted:null',
          'balance.low:10',
          'balance.low:50',
          'purchase.posted',
        ]);
        const released = await Promise.all(
          holds.map((id, i) => api(bases()[i % 2]!, 'POST', `/v1/holds/${id}/release`, { wait_for_usage: false })),
        );
        expect(released.every((r) => r.status === 200)).toBe(true);
        const notices = await of(customer);
        expect(kinds(notices)).toEqual([
          'balance.exhausted:null',
          'balance.low:10',
          'balance.low:50',
          'balance.recovered:10',
          'balance.recovered:50',
          'balance.recovered:null',
          'purchase.posted',
        ]);
        expect(new Set(notices.map((n) => n.id)).size).toBe(notices.length);
        const low = notices.find((n) => n.type === 'balance.low' && n.data.threshold === '10')!;
        expect(low.data).toMatchObject({ customer, unit: 'credits', allowance: '5' });
        expect(Number(low.data.available)).toBeLessThan(10);
        expect(Date.parse(low.timestamp)).toBeGreaterThan(0);
      }
    });

    it('given usage the rater commits, then the crossing it causes is noticed without any API call', async () => {
      const customer = 'n-usage';
      await buy(customer);
      await idle();
      // 20 Nano Banana 1K prompt images at 3 credits: available 100 → 40, below 50.
      const sent = await postEvents(bases()[0]!, [
        {
          id: 'n-usage-1',
          customer,
          meter: 'images',
          quantity: 20,
          timestamp: atMs,
          dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
        },
      ]);
      expect(sent.status).toBe(202);
      const deadline = Date.now() + 30_000;
      let notices: Notice[] = [];
      while (Date.now() < deadline) {
        notices = await of(customer);
        if (notices.some((n) => n.type === 'balance.low')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(kinds(notices)).toEqual(['balance.low:50', 'purchase.posted']);
      expect(notices.find((n) => n.type === 'balance.low')!.data.available).toBe('40');
      // The look that found this usage is on /metrics, for an operator asking where a usage notice's time went.
      const looks = (await Promise.all(bases().map(async (base) => (await fetch(`${base}/metrics`)).text()))).map(
        (text) => Number(/^drawdown_notices_usage_look_duration_seconds_count (\d+)$/m.exec(text)?.[1] ?? 0),
      );
      expect(looks.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
    });

    it('given an auto top-up rule in confirm mode, then one request per crossing, credits only once the app posts the purchase under the request id, and never past max_per_day', async () => {
      const customer = 'n-topup';
      await buy(customer);
      const admin = bases()[1]!;
      const put = await api(admin, 'PUT', `/v1/customers/${customer}/notice-settings`, {
        units: {
          credits: { low: [], auto_top_up: { below: '30', package: 'credits-100', max_per_day: 1, mode: 'confirm' } },
        },
      });
      expect(put.status).toBe(200);
      expect(put.body.units.credits).toMatchObject({ low: [], low_source: 'customer' });
      const first = await reserve(0, customer, '80', 't1');
      expect(first.status).toBe(201);
      let notices = await of(customer);
      const requests = notices.filter((n) => n.type === 'top_up.requested');
      expect(requests).toHaveLength(1);
      const request = requests[0]!;
      expect(request.data).toMatchObject({
        package: 'credits-100',
        below: '30',
        request_id: request.id,
        mode: 'confirm',
      });
      // Unconfirmed: visible as pending, and no credits.
      const pending = await api(admin, 'GET', `/v1/customers/${customer}/notice-settings`);
      expect(pending.body.units.credits.top_up).toMatchObject({ requested_today: 1 });
      expect(pending.body.units.credits.top_up.requests).toEqual([
        expect.objectContaining({ id: request.id, status: 'pending' }),
      ]);
      const before = await api(admin, 'GET', `/v1/customers/${customer}/balance`);
      expect(before.body.units[0]).toMatchObject({ settled: '100', available: '20' });

      // The app took the payment: it posts the purchase with the request's id as the Idempotency-Key.
      const confirmed = await api(
        bases()[0]!,
        'POST',
        `/v1/customers/${customer}/purchases`,
        { package: 'credits-100' },
        {
          'idempotency-key': request.id,
        },
      );
      expect(confirmed.status).toBe(201);
      await idle();
      const posted = await api(admin, 'GET', `/v1/customers/${customer}/notice-settings`);
      expect(posted.body.units.credits.top_up.requests).toEqual([
        expect.objectContaining({ id: request.id, status: 'posted' }),
      ]);
      notices = await of(customer);
      expect(notices.filter((n) => n.type === 'purchase.posted').map((n) => n.data.idempotency_key)).toContain(
        request.id,
      );

      // A second crossing the same UTC day: capped at max_per_day 1, nothing asked.
      expect((await reserve(1, customer, '95', 't2')).status).toBe(201);
      notices = await of(customer);
      expect(notices.filter((n) => n.type === 'top_up.requested')).toHaveLength(1);
      const capped = await api(admin, 'GET', `/v1/customers/${customer}/notice-settings`);
      expect(capped.body.units.credits.top_up).toMatchObject({ requested_today: 1, capped_today: 1 });
    });

    it('given an auto top-up rule in trusted mode, then each crossing posts the package at once, at most max_per_day', async () => {
      const customer = 'n-trusted';
      await buy(customer);
      await api(bases()[0]!, 'PUT', `/v1/customers/${customer}/notice-settings`, {
        units: {
          credits: { low: [], auto_top_up: { below: '30', package: 'credits-100', max_per_day: 2, mode: 'trusted' } },
        },
      });
      const ledgerPurchases = async () =>
        (await api(bases()[0]!, 'GET', `/v1/customers/${customer}/ledger`)).body.entries.filter(
          (e: { kind: string }) => e.kind === 'purchase',
        ).length;
      // Three crossings below 30: 100 → 20 (+100) → 20 (+100) → 20, the third past the cap.
      for (const [i, amount] of ['80', '100', '100'].entries()) {
        expect((await reserve(i, customer, amount, `tr${i}`)).status).toBe(201);
        await idle();
        // The purchase's re-evaluation (recovered above 30) runs after the request's own.
        await idle();
      }
      expect(await ledgerPurchases()).toBe(3);
      const notices = await of(customer);
      expect(notices.filter((n) => n.type === 'top_up.requested')).toHaveLength(2);
      expect(notices.filter((n) => n.type === 'purchase.posted')).toHaveLength(3);
      const balance = await api(bases()[0]!, 'GET', `/v1/customers/${customer}/balance`);
      expect(balance.body.units[0]).toMatchObject({ settled: '300', available: '20' });
    });

    it('given a grant with credits left that expires within the lead time, then one grant.expiring on the stream and to a webhook, however often and wherever it is evaluated, restarts included', async () => {
      const receiver = await startReceiver();
      try {
        const endpoint = await api(bases()[0]!, 'POST', '/v1/webhooks', {
          url: receiver.url,
          events: ['grant.expiring'],
        });
        expect(endpoint.status).toBe(201);
        // Fan-out reads the endpoints at most 1 s old (webhook-endpoints.ts listCached): let every process see it.
        await new Promise((r) => setTimeout(r, 1_200));
        // One customer has none: its own settings turn the catalog's lead time off.
        const off = await api(bases()[1]!, 'PUT', '/v1/customers/n-expiring-off/notice-settings', {
          units: { credits: { expiring_within: null } },
        });
        expect(off.status).toBe(200);
        expect(off.body.units.credits).toMatchObject({ expiring_within: null, expiring_within_source: 'customer' });

        // The run grants the charges (25 credits each); the check after it finds the block inside its lead time.
        const until = Math.floor(Date.now() / 60_000) * 60;
        const run = await api(bases()[0]!, 'POST', '/v1/settlements', { until: new Date(until * 1000).toISOString() });
        expect(run.status).toBe(200);
        // Both processes check at once, and again: one decision between them.
        await Promise.all(processes.map((p) => p.notices!.checkExpiring()));
        await Promise.all(processes.map((p) => p.notices!.checkExpiring()));
        const expiring = async () =>
          (await streamNotices(nats.url)).filter(
            (n) => n.type === 'grant.expiring' && String(n.data.customer).startsWith('n-expiring'),
          );
        let notices = await expiring();
        expect(notices).toHaveLength(1);
        const notice = notices[0]!;
        const ledger = (await api(bases()[0]!, 'GET', '/v1/customers/n-expiring/ledger')).body.entries;
        const grant = ledger.find((e: { kind: string }) => e.kind === 'grant');
        expect(notice.data).toEqual({
          customer: 'n-expiring',
          unit: 'credits',
          unit_name: 'Credits',
          unit_internal_name: 'credits_usd',
          block: grant.block,
          grant_source: 'charge',
          grant_origin: 'welcome',
          remaining: '25',
          expires_at: grant.block_expires_at,
          expiring_within: 'P7D',
        });
        expect(Date.parse(grant.block_expires_at) - Date.parse(grant.effective_at)).toBe(3 * dayMs);
        const view = await api(bases()[1]!, 'GET', '/v1/customers/n-expiring/notice-settings');
        expect(view.body.units.credits).toMatchObject({
          expiring_within: 'P7D',
          expiring_within_source: 'catalog',
          expiring: [{ block: grant.block, expires_at: grant.block_expires_at, notice: notice.id }],
        });

        // A restart: a new process checks at start-up and when asked; the block is not announced again.
        const restarted = processes.pop()!;
        await restarted.stop();
        processes.push(
          await startDrawdown(
            config,
            { ingest: false, rater: false, settlement: true },
            { store: processes[0]!.store! },
          ),
        );
        await processes[1]!.notices!.checkExpiring();
        await processes[0]!.notices!.checkExpiring();
        notices = await expiring();
        expect(notices.map((n) => n.id)).toEqual([notice.id]);

        // The webhook: signed per Standard Webhooks, webhook-id = the notice id.
        const deadline = Date.now() + 20_000;
        while (receiver.received.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        const secret = endpoint.body.secret as string;
        const ids = new Set<string>();
        for (const delivery of receiver.received) {
          const verified = new Webhook(secret).verify(delivery.body, delivery.headers) as typeof notice;
          expect(verified).toEqual(notice);
          ids.add(delivery.headers['webhook-id']!);
        }
        expect([...ids]).toEqual([notice.id]);
      } finally {
        await receiver.stop();
      }
    });
  });
}
