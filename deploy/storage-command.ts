/**
 * `drawdown storage partition-usage`: moves a usage_minute created before
 * partitioning into the partitioned layout (shared/clickhouse/usage-partitioning.ts),
 * with every rater stopped. Progress and the outcome are JSON lines.
 */
import { loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/log.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { partitionUsageMinute } from '../shared/clickhouse/usage-partitioning.js';

export const storageUsage =
  'usage: drawdown storage partition-usage   (needs --clickhouse-url; stop every rater first)';

export async function runStorageCommand(
  positional: readonly string[],
  flags: ReadonlyMap<string, string>,
  env: NodeJS.ProcessEnv,
  io: { err: (text: string) => void },
): Promise<number> {
  if (positional[1] !== 'partition-usage' || positional.length > 2) {
    io.err(`${storageUsage}\n`);
    return 2;
  }
  const config = loadConfig(flags, env, ['clickhouseUrl']);
  const log = createLogger(config.logLevel, 'drawdown-storage');
  const store = await openStore(config.clickhouseUrl!, { cluster: config.clickhouseCluster });
  try {
    await ensureSchema(store);
    const outcome = await partitionUsageMinute(store, (message) => log.info(message));
    log.info(
      outcome,
      outcome.partitioned === 'already'
        ? 'usage_minute is already partitioned by flush month; nothing changed'
        : 'usage_minute is partitioned by flush month; the original is kept as usage_minute_unpartitioned (drop it once satisfied)',
    );
    return 0;
  } finally {
    await store.close();
  }
}
