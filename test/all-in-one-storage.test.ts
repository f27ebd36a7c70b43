/**
 * The all-in-one's nats-server has room for every stream it makes: JetStream
 * reserves each stream's max_bytes at creation, so a larger events stream
 * (DRAWDOWN_STREAM_MAX_BYTES, as the benches and a busy single machine set)
 * must not leave the holds log or the notice streams refused with
 * "insufficient storage resources".
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { allInOneFileStoreBytes, startAllInOne } from '../deploy/all-in-one.js';
import { defaultMaxFileStoreBytes } from '../deploy/nats-server.js';
import { loadConfig } from '../shared/config.js';

const GiB = 1024 ** 3;
const catalog = fileURLToPath(new URL('../deploy/demo-catalog.json', import.meta.url));
const dirs: string[] = [];

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('all-in-one file storage', () => {
  it('is nats-server’s usual 10 GiB with the default streams, and grows with the events stream', () => {
    const defaults = loadConfig(new Map(), {});
    expect(allInOneFileStoreBytes(defaults)).toBe(defaultMaxFileStoreBytes);
    const big = { ...defaults, streamMaxBytes: 8 * GiB };
    // 8 GiB of events, 1 GiB of key claims, dead letters, the 2 GiB holds log, two 256 MiB notice streams, 1 GiB.
    expect(allInOneFileStoreBytes(big)).toBe(8 * GiB + GiB + defaults.deadLetterMaxBytes + 2 * GiB + GiB / 2 + GiB);
  });

  it('starts with holds on when the events stream takes 8 GiB', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'drawdown-aio-storage-'));
    dirs.push(dataDir);
    const config = loadConfig(new Map(), {
      DRAWDOWN_DATA_DIR: dataDir,
      DRAWDOWN_HTTP_PORT: '0',
      DRAWDOWN_CATALOG: catalog,
      DRAWDOWN_AUTH: 'off',
      DRAWDOWN_LOG_LEVEL: 'silent',
      DRAWDOWN_STREAM_MAX_BYTES: String(8 * GiB),
    });
    const running = await startAllInOne(config);
    try {
      const response = await fetch(`${running.url}/v1/customers/acme/holds`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
        body: JSON.stringify({ unit: 'credits', amount: '1' }),
      });
      // No credits bought: the hold store answered (402), it is not off (503).
      expect(response.status).toBe(402);
      const body = await response.text();
      expect(body, body).toContain('insufficient_credits');
    } finally {
      await running.stop();
    }
  }, 120_000);
});
