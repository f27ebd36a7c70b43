/**
 * chDB is an optional peer dependency (issue 14): the gateway, the rater and
 * settlement pointed at a ClickHouse server run without it, and a chdb: URL
 * without it fails at start-up with chdb_not_installed naming the fix. The
 * processes run with a module hook that makes `chdb` unresolvable, as it is
 * after `npm ci --omit=dev`: any attempt to load it fails.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { freePort } from '../deploy/free-port.js';
import {
  postEvents,
  spawnDrawdown,
  startClickHouse,
  startNats,
  tempDir,
  type ChildService,
  type ClickHouseTarget,
  waitReady,
} from './harness.js';

const hook = `
export async function resolve(specifier, context, next) {
  if (specifier === 'chdb' || specifier.startsWith('chdb/')) {
    const error = new Error("Cannot find package 'chdb' imported from " + context.parentURL);
    error.code = 'ERR_MODULE_NOT_FOUND';
    throw error;
  }
  return next(specifier, context);
}
`;

describe('without chdb installed', () => {
  const dir = tempDir('chdb-optional');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  const children: ChildService[] = [];
  let withoutChdb: Record<string, string>;

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    writeFileSync(join(dir.path, 'hide-chdb.mjs'), hook);
    writeFileSync(
      join(dir.path, 'register.mjs'),
      "import { register } from 'node:module';\nregister('./hide-chdb.mjs', import.meta.url);\n",
    );
    withoutChdb = { NODE_OPTIONS: `--import=${join(dir.path, 'register.mjs')}` };
  });

  afterAll(async () => {
    for (const child of children) await child.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('runs the gateway, the rater and settlement against a ClickHouse server, and events reach the balance', async () => {
    const env = { ...withoutChdb, DRAWDOWN_NATS_URL: nats.url, DRAWDOWN_CLICKHOUSE_URL: clickhouse.url };
    const roles = ['ingest', 'rater', 'settlement'] as const;
    const urls = new Map<string, string>();
    for (const role of roles) {
      const port = await freePort();
      const child = spawnDrawdown(role, { ...env, DRAWDOWN_HTTP_PORT: String(port) });
      children.push(child);
      urls.set(role, `http://127.0.0.1:${port}`);
      await waitReady(urls.get(role)!, child);
    }
    const posted = await postEvents(urls.get('ingest')!, [
      { id: 'e1', customer: 'acme', meter: 'gpt-4o.input_tokens', quantity: 2_000_000, timestamp: Date.now() },
    ]);
    expect(posted.status).toBe(202);
    // The rater stores it; settlement prices it as pending (5 credits per million tokens in the demo catalog).
    let available: string | undefined;
    for (let attempt = 0; attempt < 300 && Number(available) !== -10; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const balance = (await (await fetch(`${urls.get('settlement')}/v1/customers/acme/balance`)).json()) as {
        units: { unit: string; available: string }[];
      };
      available = balance.units.find((u) => u.unit === 'credits')?.available;
    }
    expect(Number(available)).toBe(-10);
  });

  it('refuses a chdb: URL at start-up (chdb_not_installed), naming both ways out', async () => {
    const child = spawnDrawdown('start', {
      ...withoutChdb,
      DRAWDOWN_HTTP_PORT: String(await freePort()),
      DRAWDOWN_DATA_DIR: join(dir.path, 'all-in-one'),
    });
    children.push(child);
    const { code } = await child.exited;
    expect(code).toBe(1);
    expect(child.output()).toContain('needs chDB, an optional dependency that is not installed');
    expect(child.output()).toContain('npm install chdb');
    expect(child.output()).toContain('DRAWDOWN_CLICKHOUSE_URL');
  });
});
