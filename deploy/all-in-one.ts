/**
 * The single-machine default: a nats-server this process starts (JetStream,
 * file storage under <dataDir>/nats) and chDB under <dataDir>/chdb, with the
 * gateway, the rater and settlement in one process on one port.
 */
import { join, resolve } from 'node:path';
import { claimStreamMaxBytes } from '../ingest/key-claims.js';
import { holdStoreDefaults } from '../settlement/holds/hold-options.js';
import { noticeStreamDefaults } from '../settlement/notices/notice-stream.js';
import { webhookStreamBytesMax } from '../settlement/notices/notice-service.js';
import type { Config } from '../shared/config.js';
import { defaultMaxFileStoreBytes, NatsServerProcess } from './nats-server.js';
import { startDrawdown, type Running } from './processes.js';

const GiB = 1024 ** 3;

/**
 * The nats-server's max_file_store: JetStream reserves every stream's max_bytes against it when the stream is made,
 * and refuses one that does not fit ("insufficient storage resources"). So it has room for each stream this process
 * makes — the events stream as configured, key claims, dead letters, the holds log, notices, webhook deliveries —
 * and 1 GiB for the KV buckets, and is never below nats-server's usual 10 GiB. A limit, not an allocation.
 */
export function allInOneFileStoreBytes(config: Pick<Config, 'streamMaxBytes' | 'deadLetterMaxBytes'>): number {
  const reserved =
    config.streamMaxBytes +
    claimStreamMaxBytes +
    config.deadLetterMaxBytes +
    holdStoreDefaults.logBytesMax +
    noticeStreamDefaults.maxBytes +
    webhookStreamBytesMax;
  return Math.max(defaultMaxFileStoreBytes, reserved + GiB);
}

export async function startAllInOne(config: Config, options: { now?: () => number } = {}): Promise<Running> {
  const dataDir = resolve(config.dataDir);
  // A given NATS URL is used as is; otherwise this process runs its own nats-server.
  const nats =
    config.natsUrl === undefined
      ? await NatsServerProcess.start({
          dir: join(dataDir, 'nats'),
          maxPayloadBytes: Math.max(8 * 1024 * 1024, config.bodyBytesMax * 2),
          jetstreamMaxFileBytes: allInOneFileStoreBytes(config),
        })
      : undefined;
  try {
    const running = await startDrawdown(
      {
        ...config,
        natsUrl: config.natsUrl ?? nats!.url,
        clickhouseUrl: config.clickhouseUrl ?? `chdb:${join(dataDir, 'chdb')}`,
      },
      { ingest: true, rater: true, settlement: true },
      options,
    );
    return {
      ...running,
      stop: async () => {
        await running.stop();
        await nats?.stop();
      },
    };
  } catch (error) {
    await nats?.stop();
    throw error;
  }
}
