/**
 * `drawdown settlements list [--limit N] [--after RUN_ID]` and
 * `drawdown settlements get RUN_ID`: the run history an operator reads
 * without the HTTP API, as the same JSON GET /v1/settlements and
 * GET /v1/settlements/{run_id} answer, one line on stdout (for jq).
 */
import { loadConfig } from '../shared/config.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { getRun, isRunId, listRuns, runsLimitDefault, runsLimitMax } from './run-history.js';

export const settlementsUsage = `usage: drawdown settlements list [--limit 1–${runsLimitMax}] [--after RUN_ID]
       drawdown settlements get RUN_ID`;

interface Output {
  out: (text: string) => void;
  err: (text: string) => void;
}

export async function runSettlementsCommand(
  positional: string[],
  flags: Map<string, string>,
  env: NodeJS.ProcessEnv,
  io: Output,
): Promise<number> {
  const sub = positional[1];
  const limitFlag = flags.get('--limit');
  const after = flags.get('--after');
  flags.delete('--limit');
  flags.delete('--after');
  const limit = limitFlag === undefined ? runsLimitDefault : Number(limitFlag);
  const usable =
    (sub === 'list' &&
      positional.length === 2 &&
      Number.isInteger(limit) &&
      limit >= 1 &&
      limit <= runsLimitMax &&
      (after === undefined || isRunId(after))) ||
    (sub === 'get' && positional.length === 3 && limitFlag === undefined && after === undefined);
  if (!usable) {
    io.err(`${settlementsUsage}\n`);
    return 2;
  }
  const config = loadConfig(flags, env, ['clickhouseUrl']);
  const store = await openStore(config.clickhouseUrl!, { cluster: config.clickhouseCluster });
  try {
    await ensureSchema(store);
    if (sub === 'list') {
      io.out(`${JSON.stringify(await listRuns(store, limit, after))}\n`);
      return 0;
    }
    const runId = positional[2]!;
    const run = isRunId(runId) ? await getRun(store, runId) : undefined;
    if (run === undefined) {
      io.err(`drawdown: no settlement run ${JSON.stringify(runId)}\n`);
      return 1;
    }
    io.out(`${JSON.stringify(run)}\n`);
    return 0;
  } finally {
    await store.close();
  }
}
