/**
 * The single-machine default: a nats-server this process starts (JetStream,
 * file storage under <dataDir>/nats) and chDB under <dataDir>/chdb, with the
 * gateway, the rater and settlement in one process on one port.
 */
import { join, resolve } from 'node:path';
import type { Config } from '../shared/config.js';
import { NatsServerProcess } from './nats-server.js';
import { startDrawdown, type Running } from './processes.js';

export async function startAllInOne(config: Config, options: { now?: () => number } = {}): Promise<Running> {
  const dataDir = resolve(config.dataDir);
  // A given NATS URL is used as is; otherwise this process runs its own nats-server.
  const nats =
    config.natsUrl === undefined
      ? await NatsServerProcess.start({
          dir: join(dataDir, 'nats'),
          maxPayloadBytes: Math.max(8 * 1024 * 1024, config.bodyBytesMax * 2),
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
