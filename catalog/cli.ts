/**
 * `drawdown catalog …`: catalog-as-code from the command line, straight
 * against the catalog store in ClickHouse (like `settle`).
 *   catalog apply FILE [--dry-run]   validate, show the diff, write a new revision (unless unchanged or a dry run)
 *   catalog get [--revision N]       print the latest (or the given) revision's document
 */
import { readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { loadConfig } from '../shared/config.js';
import { DrawdownError } from '../shared/errors.js';
import { formatDiff } from './diff.js';
import { CatalogStore } from './store.js';

export const catalogUsage = `usage: drawdown catalog apply FILE [--dry-run]   (needs --clickhouse-url)
       drawdown catalog get [--revision N]         (needs --clickhouse-url)`;

export interface Output {
  out: (text: string) => void;
  err: (text: string) => void;
}

function whoAmI(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry (some containers): the host still says where it came from.
  }
  return `cli:${user}@${hostname()}`;
}

function readDocument(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new DrawdownError(
      'catalog_definition_invalid',
      `cannot read catalog file ${path}: ${(cause as Error).message}`,
      { cause },
    );
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new DrawdownError(
      'catalog_definition_invalid',
      `catalog file ${path} is not valid JSON: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/** Runs one `catalog` subcommand; returns the exit code. Errors are thrown for the CLI to print. */
export async function runCatalogCommand(
  positional: readonly string[],
  flags: Map<string, string>,
  env: NodeJS.ProcessEnv,
  io: Output,
): Promise<number> {
  const sub = positional[1];
  const files = positional.slice(2);
  // `--dry-run FILE` parses as a flag with a value: it is the file.
  const dry = flags.get('--dry-run');
  flags.delete('--dry-run');
  if (dry !== undefined && dry !== 'true' && dry !== 'false') files.push(dry);
  const revisionFlag = flags.get('--revision');
  flags.delete('--revision');
  const usable =
    (sub === 'apply' && files.length === 1 && revisionFlag === undefined) ||
    (sub === 'get' &&
      files.length === 0 &&
      dry === undefined &&
      (revisionFlag === undefined || /^\d{1,15}$/.test(revisionFlag)));
  if (!usable) {
    io.err(`${catalogUsage}\n`);
    return 2;
  }
  const config = loadConfig(flags, env, ['clickhouseUrl']);
  const store = await openStore(config.clickhouseUrl!, { cluster: config.clickhouseCluster });
  try {
    await ensureSchema(store);
    const catalogs = new CatalogStore(store);
    if (sub === 'get') {
      const revision = revisionFlag === undefined ? await catalogs.latest() : await catalogs.get(Number(revisionFlag));
      if (revision === undefined) {
        io.err(revisionFlag === undefined ? 'the catalog store is empty\n' : `no catalog revision ${revisionFlag}\n`);
        return 1;
      }
      io.err(
        `revision ${revision.revision}, applied ${new Date(revision.appliedAtSec * 1000).toISOString()} by ${revision.appliedBy}\n`,
      );
      io.out(`${JSON.stringify(revision.document, null, 2)}\n`);
      return 0;
    }
    const file = files[0]!;
    const dryRun = dry !== undefined && dry !== 'false';
    io.err(`reading ${file}\n`);
    const document = readDocument(file);
    // The diff is shown as soon as it is known: a refused change still shows what it would have changed.
    let shown = false;
    const show = (changes: Parameters<typeof formatDiff>[0]) => {
      io.out(formatDiff(changes));
      shown = true;
    };
    const result = await catalogs.apply(document, {
      appliedBy: whoAmI(),
      dryRun,
      progress: (line) => io.err(`${line}\n`),
      onDiff: show,
    });
    if (!shown) show(result.changes);
    if (!result.changed) io.out(`no changes: revision ${result.revision} is in force\n`);
    else if (result.dryRun) io.out(`dry run: nothing written (revision ${result.previousRevision} is in force)\n`);
    else io.out(`applied: revision ${result.revision} (was ${result.previousRevision})\n`);
    return 0;
  } finally {
    await store.close();
  }
}
