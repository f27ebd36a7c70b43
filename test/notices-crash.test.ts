/**
 * A settlement process SIGKILLed mid-way through a crossing (issue 15): after
 * it stored the crossing (the KV compare-and-set) and before it published the
 * notices, or after publishing and before clearing its outbox. A process
 * started afterwards publishes what was left; the stream holds each notice
 * exactly once — neither missed nor duplicated. Real `drawdown settlement`
 * children, nats-server and clickhouse-server; crash points via DRAWDOWN_FAULT.
 * The same for a grant.expiring decided by a process's start-up check.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { freePort } from '../deploy/free-port.js';
import {
  api,
  crashed,
  spawnDrawdown,
  startClickHouse,
  startNats,
  tempDir,
  type ChildService,
  type ClickHouseTarget,
  waitReady,
} from './harness.js';
import { noticesCatalog, streamNotices } from './notices-suite.js';

describe('notices when a settlement process is SIGKILLed mid-crossing', () => {
  const dir = tempDir('notices-crash');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  let catalog: string;
  const children: ChildService[] = [];

  // `ready: false` for a process that may reach its crash point before it serves.
  const start = async (
    env: Record<string, string> = {},
    { ready = true } = {},
  ): Promise<{ base: string; child: ChildService }> => {
    const port = await freePort();
    const child = spawnDrawdown('settlement', {
      DRAWDOWN_NATS_URL: nats.url,
      DRAWDOWN_CLICKHOUSE_URL: clickhouse.url,
      DRAWDOWN_CATALOG: catalog,
      DRAWDOWN_HTTP_PORT: String(port),
      DRAWDOWN_LIVE_BALANCE_CACHE_MS: '0',
      ...env,
    });
    children.push(child);
    const base = `http://127.0.0.1:${port}`;
    if (ready) await waitReady(base, child);
    return { base, child };
  };

  const lows = async (customer: string) =>
    (await streamNotices(nats.url))
      .filter((n) => n.data.customer === customer && n.type === 'balance.low')
      .map((n) => n.data.threshold)
      .sort();

  const until_ = async (probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await probe())) {
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    catalog = noticesCatalog(dir.path);
  });

  afterAll(async () => {
    for (const child of children) await child.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  for (const fault of ['notices-after-state', 'notices-after-publish']) {
    it(`given a process killed at ${fault}, when another process starts, then each crossing is on the stream exactly once`, async () => {
      const customer = `crash-${fault}`;
      const normal = await start();
      const bought = await api(normal.base, 'POST', `/v1/customers/${customer}/purchases`, { package: 'credits-100' });
      expect(bought.status).toBe(201);
      await until_(async () => (await streamNotices(nats.url)).some((n) => n.data.customer === customer));
      await normal.child.stop();

      const doomed = await start({ DRAWDOWN_FAULT: `${fault}:1` });
      // 95 of 100: below 50 and below 10. The answer comes before the evaluation, which then dies at the fault.
      const held = await api(
        doomed.base,
        'POST',
        `/v1/customers/${customer}/holds`,
        { unit: 'credits', amount: '95' },
        { 'idempotency-key': `${customer}-hold` },
      );
      expect(held.status).toBe(201);
      expect((await crashed(doomed.child)).signal).toBe('SIGKILL');
      expect(await lows(customer)).toEqual(fault === 'notices-after-state' ? [] : ['10', '50']);

      // The next process's start-up sweep publishes what the outbox kept, under the same ids.
      const next = await start();
      await until_(async () => (await lows(customer)).length >= 2);
      // Another look later (a touch and a second sweep) adds nothing.
      const again = await api(next.base, 'GET', `/v1/customers/${customer}/notice-settings`);
      expect(again.body.units.credits.unpublished).toBe(0);
      expect(again.body.units.credits.below.map((b: { condition: string }) => b.condition).sort()).toEqual([
        'low:10',
        'low:50',
      ]);
      await new Promise((r) => setTimeout(r, 500));
      expect(await lows(customer)).toEqual(['10', '50']);
      const all = await streamNotices(nats.url);
      expect(new Set(all.map((n) => n.id)).size).toBe(all.length);
      await next.child.stop();
    });
  }

  for (const fault of ['notices-after-state', 'notices-after-publish']) {
    it(`given a process killed at ${fault} while announcing grant.expiring, when another process starts, then the block is announced exactly once`, async () => {
      const customer = `expiring-${fault}`;
      const expiring = async () =>
        (await streamNotices(nats.url)).filter((n) => n.type === 'grant.expiring' && n.data.customer === customer);
      // A credit of 25 expiring in 2 days (lead time 7): in the ledger at once, no run needed. No balance.low for
      // it, so the first notice the doomed process drains is the expiring one.
      const normal = await start();
      const put = await api(normal.base, 'PUT', `/v1/customers/${customer}/notice-settings`, {
        units: { credits: { low: [] } },
      });
      expect(put.status).toBe(200);
      const credit = await api(
        normal.base,
        'POST',
        `/v1/customers/${customer}/adjustments`,
        {
          unit: 'credits',
          amount: '25',
          reason: 'goodwill',
          expires_at: new Date(Date.now() + 2 * 86_400_000).toISOString(),
        },
        { 'idempotency-key': `${customer}-credit` },
      );
      expect(credit.status).toBe(201);
      await normal.child.stop();

      // The start-up check decides it, and the process dies at the fault, perhaps before it serves.
      const doomed = await start({ DRAWDOWN_FAULT: `${fault}:1` }, { ready: false });
      expect((await crashed(doomed.child)).signal).toBe('SIGKILL');
      expect((await expiring()).length).toBe(fault === 'notices-after-state' ? 0 : 1);

      // The next process's start-up sweep publishes what the outbox kept, under the same id; its own check adds none.
      const next = await start();
      await until_(async () => (await expiring()).length >= 1);
      const view = await api(next.base, 'GET', `/v1/customers/${customer}/notice-settings`);
      expect(view.body.units.credits.unpublished).toBe(0);
      expect(view.body.units.credits.expiring).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 500));
      const notices = await expiring();
      expect(notices.map((n) => n.id)).toEqual([view.body.units.credits.expiring[0].notice]);
      expect(notices[0]!.data).toMatchObject({ grant_source: 'manual', remaining: '25', expiring_within: 'P7D' });
      await next.child.stop();
    });
  }
});
