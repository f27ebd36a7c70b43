/**
 * The partition count is a recorded fact: the first gateway or rater records
 * it (NATS KV drawdown_meta), every later one with another count refuses to
 * start, and changing it is `drawdown partitions migrate`, refused until the
 * stream is drained.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { startDrawdown, streamSettings, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { isDrawdownError } from '../shared/errors.js';
import { checkPartitionLayout, layoutKey, metaBucket } from '../shared/nats/partition-layout.js';
import { ensureStream } from '../shared/nats/stream.js';
import {
  catalogPath,
  cliPath,
  postEvents,
  startClickHouse,
  startNats,
  streamState,
  tempDir,
  testConfig,
  waitForStreamDrained,
  type ClickHouseTarget,
} from './harness.js';

/** Runs the built CLI without blocking the event loop (the in-process services of the test keep answering). */
function runCli(
  args: string[],
  env: Record<string, string>,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

async function refusal(start: Promise<Running>): Promise<Error> {
  const outcome = await start.then(
    async (running) => {
      await running.stop();
      return undefined;
    },
    (error: unknown) => error as Error,
  );
  if (outcome === undefined) throw new Error('the process started; it should have refused');
  return outcome;
}

describe('the partition layout is recorded and enforced', () => {
  const dir = tempDir('partition-layout');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget | undefined;
  let nc: NatsConnection;
  const running: Running[] = [];

  beforeAll(async () => {
    nats = await startNats(dir.path);
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    for (const r of running.reverse()) await r.stop();
    await nc?.close();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  const gateway = (partitions: number, more: Record<string, string | number> = {}): Promise<Running> =>
    startDrawdown(testConfig({ natsUrl: nats.url, partitions, ...more }), {
      ingest: true,
      rater: false,
      settlement: false,
    });

  it('given a gateway recorded 2 partitions, a gateway or rater with 3 (or another prefix) refuses to start', async () => {
    running.push(await gateway(2));
    const kv = await jetstreamManager(nc);
    const entry = await kv.streams.getMessage(`KV_${metaBucket}`, {
      last_by_subj: `$KV.${metaBucket}.${layoutKey('DRAWDOWN_EVENTS')}`,
    });
    expect(entry!.json()).toMatchObject({ stream: 'DRAWDOWN_EVENTS', partitions: 2, subjectPrefix: 'drawdown.events' });

    // A second gateway with the same count starts.
    running.push(await gateway(2));
    const gatewayError = await refusal(gateway(3));
    expect(isDrawdownError(gatewayError) && gatewayError.code).toBe('partition_layout_mismatch');
    expect(gatewayError.message).toMatch(/laid out as 2 partition\(s\).*configured for 3 partition\(s\)/);
    expect(gatewayError.message).toMatch(/DRAWDOWN_PARTITIONS=2/);
    expect(gatewayError.message).toMatch(/drawdown partitions migrate/);

    clickhouse = await startClickHouse('chdb', dir.path);
    const raterError = await refusal(
      startDrawdown(testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse.url, partitions: 3 }), {
        ingest: false,
        rater: true,
        settlement: false,
      }),
    );
    expect(isDrawdownError(raterError) && raterError.code).toBe('partition_layout_mismatch');

    const prefixError = await refusal(gateway(2, { subjectPrefix: 'other.events' }));
    expect(isDrawdownError(prefixError) && prefixError.code).toBe('partition_layout_mismatch');
  });

  it('the rater command says so in one fatal line and exits 1', async () => {
    const result = await runCli(['rater'], {
      DRAWDOWN_NATS_URL: nats.url,
      DRAWDOWN_CLICKHOUSE_URL: `chdb:${dir.path}/cli-chdb`,
      DRAWDOWN_CATALOG: catalogPath,
      DRAWDOWN_PARTITIONS: '5',
      DRAWDOWN_HTTP_PORT: '0',
      DRAWDOWN_AUTH: 'off',
    });
    expect(result.status).toBe(1);
    const fatal = JSON.parse(result.stderr.trim().split('\n').at(-1)!) as { code: string; msg: string };
    expect(fatal.code).toBe('partition_layout_mismatch');
    expect(fatal.msg).toMatch(/configured for 5 partition\(s\)/);
  });

  it('two processes starting at once with different counts on a fresh stream: exactly one layout wins', async () => {
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    for (let round = 0; round < 5; round++) {
      const base = streamSettings(
        testConfig({
          natsUrl: nats.url,
          streamName: `RACE_${round}`,
          subjectPrefix: `race${round}`,
          streamMaxBytes: 1024 * 1024,
        }),
      );
      await ensureStream(jsm, base);
      const outcomes = await Promise.allSettled([
        checkPartitionLayout(js, jsm, { ...base, partitions: 2 }, 'a'),
        checkPartitionLayout(js, jsm, { ...base, partitions: 3 }, 'b'),
      ]);
      const won = outcomes.filter((o) => o.status === 'fulfilled');
      const lost = outcomes.filter((o) => o.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect((lost[0] as PromiseRejectedResult).reason.code).toBe('partition_layout_mismatch');
    }
  });

  it('an unrecorded stream holding messages beyond the configured count refuses (an upgrade with the wrong count)', async () => {
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const settings = streamSettings(
      testConfig({
        natsUrl: nats.url,
        streamName: 'OLD',
        subjectPrefix: 'old',
        partitions: 4,
        streamMaxBytes: 1024 * 1024,
      }),
    );
    await ensureStream(jsm, settings);
    await js.publish('old.3', new Uint8Array([0x90]));
    const error = await checkPartitionLayout(js, jsm, { ...settings, partitions: 2 }, 'test').then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(isDrawdownError(error) && error.code).toBe('partition_layout_mismatch');
    expect(error!.message).toMatch(/old\.3/);
    // With the count it was written with, it is recorded.
    expect((await checkPartitionLayout(js, jsm, settings, 'test')).recorded).toBe(true);
  });

  it('drawdown partitions migrate is refused while the stream holds batches, and changes the count once drained', async () => {
    const env = { DRAWDOWN_NATS_URL: nats.url };
    // Given a batch in the stream (no rater running): migrating is refused, nothing changes.
    const accepted = await postEvents(running[0]!.url!, [
      { id: 'm-1', customer: 'acme', meter: 'gpt-4o.input_tokens', quantity: 5, timestamp: Date.now() - 60_000 },
    ]);
    expect(accepted.status, JSON.stringify(accepted.body)).toBe(202);
    expect((await streamState(nats.url)).messages).toBe(1);
    const refused = await runCli(['partitions', 'migrate', '--partitions', '3'], env);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/still holds 1 batch\(es\).*stop every gateway, let the raters drain the stream/);
    expect(JSON.parse((await runCli(['partitions', 'show'], env)).stdout)).toMatchObject({ partitions: 2 });

    // When the gateways stop and a rater drains the stream:
    for (const r of running.splice(0)) await r.stop();
    const rater = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: clickhouse!.url, partitions: 2 }),
      { ingest: false, rater: true, settlement: false },
    );
    try {
      await waitForStreamDrained(nats.url);
    } finally {
      await rater.stop();
    }
    // Then migrating records the new count, and processes must use it.
    const migrated = await runCli(['partitions', 'migrate', '--partitions', '3'], env);
    expect(migrated.status, migrated.stderr).toBe(0);
    expect(migrated.stdout).toMatch(/now laid out as 3 partition\(s\) \(was 2\)/);
    expect(JSON.parse((await runCli(['partitions', 'show'], env)).stdout)).toMatchObject({
      partitions: 3,
      previous: { partitions: 2 },
      recordedBy: 'drawdown partitions migrate',
    });
    running.push(await gateway(3));
    const old = await refusal(gateway(2));
    expect(isDrawdownError(old) && old.code).toBe('partition_layout_mismatch');
    // Without --partitions the command refuses to guess.
    expect((await runCli(['partitions', 'migrate'], { ...env, DRAWDOWN_PARTITIONS: '' })).status).toBe(2);
  });
});
