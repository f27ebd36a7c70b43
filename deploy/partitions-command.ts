/**
 * `drawdown partitions show | migrate`: the recorded partition layout
 * (shared/nats/partition-layout.ts). `migrate` records DRAWDOWN_PARTITIONS
 * (and DRAWDOWN_SUBJECT_PREFIX) as the layout, only once the stream is
 * drained; the procedure is in docs/deploy.md, "Changing the partition count".
 */
import { loadConfig } from '../shared/config.js';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { migratePartitionLayout, openMeta, readLayout } from '../shared/nats/partition-layout.js';
import { streamSettings } from './processes.js';

export const partitionsUsage = 'usage: drawdown partitions show | migrate --partitions N   (needs --nats-url)';

export async function runPartitionsCommand(
  positional: readonly string[],
  flags: ReadonlyMap<string, string>,
  env: NodeJS.ProcessEnv,
  io: { out: (text: string) => void; err: (text: string) => void },
): Promise<number> {
  const action = positional[1];
  if ((action !== 'show' && action !== 'migrate') || positional.length > 2) {
    io.err(`${partitionsUsage}\n`);
    return 2;
  }
  if (action === 'migrate' && !flags.has('--partitions') && !env.DRAWDOWN_PARTITIONS) {
    // The new count is never a default: a migration names it.
    io.err(`drawdown partitions migrate: name the new count with --partitions N\n${partitionsUsage}\n`);
    return 2;
  }
  const config = loadConfig(flags, env, ['natsUrl']);
  const settings = streamSettings(config);
  const nc = await connect({ servers: config.natsUrl!.split(',').map((s) => s.trim()) });
  try {
    const js = jetstream(nc);
    if (action === 'show') {
      const recorded = await readLayout(await openMeta(js, settings.replicas), settings.name);
      io.out(`${JSON.stringify(recorded?.layout ?? null)}\n`);
      return recorded === undefined ? 1 : 0;
    }
    const { from, to } = await migratePartitionLayout(
      js,
      await jetstreamManager(nc),
      settings,
      'drawdown partitions migrate',
    );
    io.out(
      from !== undefined && from.partitions === to.partitions && from.subjectPrefix === to.subjectPrefix
        ? `the stream ${to.stream} is already laid out as ${to.partitions} partition(s); nothing changed\n`
        : `the stream ${to.stream} is now laid out as ${to.partitions} partition(s) (was ${from?.partitions ?? 'unrecorded'}); start gateways and raters with DRAWDOWN_PARTITIONS=${to.partitions}\n`,
    );
    return 0;
  } finally {
    await nc.close();
  }
}
