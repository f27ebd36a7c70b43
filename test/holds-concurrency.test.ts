/**
 * No concurrent overspend across API processes (issue 12): two real
 * `drawdown settlement` processes, one nats-server and one clickhouse-server;
 * 200 concurrent one-credit holds against a balance of 100 with 5 allowed
 * below zero admit exactly 105, every round, and every admitted hold is in
 * the store afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { freePort } from '../deploy/free-port.js';
import type { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { api, spawnDrawdown, startClickHouse, startNats, tempDir, waitReady, type ChildService } from './harness.js';
import { holdsCatalog } from './holds-api-suite.js';

describe('holds from two API processes', () => {
  const dir = tempDir('holds-concurrency');
  let nats: NatsServerProcess;
  let clickhouse: { url: string; server: ClickHouseServerProcess | undefined; stop(): Promise<void> };
  const processes: { base: string; child: ChildService }[] = [];

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    const catalog = holdsCatalog(dir.path);
    // One after the other: the first seeds the catalog store and the schema.
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const child = spawnDrawdown('settlement', {
        DRAWDOWN_NATS_URL: nats.url,
        DRAWDOWN_CLICKHOUSE_URL: clickhouse.url,
        DRAWDOWN_CATALOG: catalog,
        DRAWDOWN_HTTP_PORT: String(port),
      });
      const base = `http://127.0.0.1:${port}`;
      processes.push({ base, child });
      await waitReady(base, child);
    }
  });

  afterAll(async () => {
    for (const { child } of processes) await child.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('admits exactly balance + allowance, round after round, and every 201 is an open hold', async () => {
    for (const round of [1, 2, 3]) {
      const customer = `race-${round}`;
      const bought = await api(processes[0]!.base, 'POST', `/v1/customers/${customer}/purchases`, {
        package: 'credits-100',
      });
      expect(bought.status).toBe(201);
      const answers = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          api(
            processes[i % 2]!.base,
            'POST',
            `/v1/customers/${customer}/holds`,
            { unit: 'credits', amount: '1' },
            { 'idempotency-key': `r${round}-${i}` },
          ),
        ),
      );
      const statuses = new Map<number, number>();
      for (const a of answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
      expect(Object.fromEntries(statuses)).toEqual({ 201: 105, 402: 95 });
      for (const a of answers.filter((a) => a.status === 402))
        expect(a.body).toMatchObject({ code: 'insufficient_credits', allowance: '5' });

      // Every admitted hold is there, seen from either process.
      const admitted = new Set(answers.filter((a) => a.status === 201).map((a) => a.body.hold.id as string));
      const listed = await api(processes[1]!.base, 'GET', `/v1/customers/${customer}/holds?unit=credits`);
      expect(new Set(listed.body.holds.map((h: { id: string }) => h.id))).toEqual(admitted);
      expect(listed.body.held).toEqual({ credits: '105' });
      const balance = await api(processes[0]!.base, 'GET', `/v1/customers/${customer}/balance`);
      expect(balance.body.units[0]).toMatchObject({ unit: 'credits', held: '105', available: '-5' });
    }
  });
});
