import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { freePort } from '../deploy/free-port.js';
import { NatsServerProcess } from '../deploy/nats-server.js';

const tempDirs: string[] = [];

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `drawdown-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

afterAll(async () => {
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** Whether a TCP connection to the port succeeds within a second. */
function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

// An idle keep-alive connection makes clickhouse-server 18.16 linger on
// SIGTERM until stop() gives up and kills it; these tests want the clean path.
const noKeepAlive = { connection: 'close' };

async function query(url: string, sql: string): Promise<string> {
  const response = await fetch(url, {
    method: 'POST',
    body: sql,
    headers: noKeepAlive,
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.text();
  if (response.status !== 200) throw new Error(`ClickHouse answered ${response.status} to ${sql}: ${body}`);
  return body;
}

describe('freePort', () => {
  it('returns a port that can be listened on', async () => {
    const port = await freePort();
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    await new Promise((resolve) => server.close(resolve));
    expect(port).toBeGreaterThan(0);
  });
});

describe('NatsServerProcess', () => {
  it('starts, dies on kill, comes back on the same port on restart', { timeout: 60_000 }, async () => {
    const nats = await NatsServerProcess.start({ dir: join(await tempDir('nats'), 'nats') });
    try {
      expect(nats.url).toBe(`nats://127.0.0.1:${nats.port}`);
      expect(nats.pid).toBeGreaterThan(0);
      expect(await canConnect(nats.port)).toBe(true);

      const firstPid = nats.pid;
      await nats.kill();
      expect(nats.pid).toBeUndefined();
      expect(await canConnect(nats.port)).toBe(false);
      await nats.kill(); // already dead: a no-op

      await nats.restart();
      expect(nats.pid).toBeGreaterThan(0);
      expect(nats.pid).not.toBe(firstPid);
      expect(await canConnect(nats.port)).toBe(true);
    } finally {
      await nats.stop();
    }
    expect(await canConnect(nats.port)).toBe(false);
    await nats.stop(); // already stopped: a no-op
  });

  it('fails with the log tail when its port is taken', { timeout: 60_000 }, async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const address = blocker.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    try {
      const start = NatsServerProcess.start({ dir: await tempDir('nats-busy'), port: address.port });
      await expect(start).rejects.toThrow(/address already in use/);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('rejects a max payload nats-server would refuse', async () => {
    await expect(
      NatsServerProcess.start({ dir: await tempDir('nats-payload'), maxPayloadBytes: 65 * 1024 * 1024 }),
    ).rejects.toThrow(RangeError);
  });
});

describe('ClickHouseServerProcess', () => {
  it('keeps table rows across kill and restart on the same ports', { timeout: 90_000 }, async () => {
    const clickhouse = await ClickHouseServerProcess.start({ dir: join(await tempDir('clickhouse'), 'clickhouse') });
    try {
      expect(clickhouse.url).toBe(`http://127.0.0.1:${clickhouse.httpPort}`);
      const selectOne = await fetch(clickhouse.url + '/?query=SELECT%201', { headers: noKeepAlive });
      expect(await selectOne.text()).toBe('1\n');

      await query(clickhouse.url, 'CREATE TABLE kept (n UInt32) ENGINE = MergeTree ORDER BY n');
      await query(clickhouse.url, 'INSERT INTO kept VALUES (1), (2), (3)');

      await clickhouse.kill();
      expect(clickhouse.pid).toBeUndefined();
      expect(await canConnect(clickhouse.httpPort)).toBe(false);

      await clickhouse.restart();
      expect(await canConnect(clickhouse.tcpPort)).toBe(true);
      const again = await fetch(clickhouse.url + '/?query=SELECT%201', { headers: noKeepAlive });
      expect(await again.text()).toBe('1\n');
      expect(await query(clickhouse.url, 'SELECT count(), sum(n) FROM kept')).toBe('3\t6\n');

      // A graceful restart keeps the data too.
      await clickhouse.restart();
      expect(await query(clickhouse.url, 'SELECT count() FROM kept')).toBe('3\n');
    } finally {
      await clickhouse.stop();
    }
    expect(await canConnect(clickhouse.httpPort)).toBe(false);
    await clickhouse.stop(); // already stopped: a no-op
    await clickhouse.kill();
  });
});
