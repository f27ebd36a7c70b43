/**
 * Moving an installation from the KV engine to the log: when the log stream
 * has never been written and the KV bucket of holds exists, the accounts'
 * values are appended to the log as its first messages, so holds open at the
 * move stay open, and closed ones still in a value keep answering retries.
 *
 * Each shard's import starts with an append expecting the subject to be empty
 * (expected last subject sequence 0): when several processes start at once,
 * one import per shard lands and the others are refused and skip it; a process
 * serves only after its import, so no hold is decided on a shard before its
 * import. Closed holds already moved to the KV engine's archive bucket are not
 * carried over (a retry under such a key within its 2 minutes makes a new
 * hold), and processes still running the KV engine decide against the bucket,
 * not the log: docs/holds.md › Engines says to switch every process at once.
 */
import { JetStreamApiCodes, JetStreamApiError, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { decodeAccount, encodeAccount, prune, type AccountLimits } from './hold-account.js';
import { isCasConflict } from '../../shared/nats/cas-conflict.js';
import { HoldsUnavailableError } from './hold-errors.js';
import { messageOf } from './hold-op.js';

export interface ImportTarget {
  readonly bucket: string;
  readonly shards: number;
  readonly subjectOf: (shard: number) => string;
  readonly shardOf: (key: string) => number;
  readonly messageBytesMax: number;
  readonly limits: AccountLimits;
  readonly nowMs: number;
  readonly timeoutMs: number;
}

export interface ImportResult {
  /** Accounts this process appended (those with open holds or closed ones still retained). */
  accounts: number;
  /** Shards this process imported; the others were imported by another, or had nothing. */
  shards: number;
}

/** Appends the KV bucket's accounts to the log's empty shards; nothing when the bucket does not exist. */
export async function importKvAccounts(
  js: JetStreamClient,
  jsm: JetStreamManager,
  target: ImportTarget,
): Promise<ImportResult> {
  try {
    await jsm.streams.info(`KV_${target.bucket}`);
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)
      return { accounts: 0, shards: 0 };
    throw error;
  }
  const lines: string[][] = Array.from({ length: target.shards }, () => []);
  let accounts = 0;
  try {
    const kv = await new Kvm(js).open(target.bucket);
    for await (const key of await kv.keys()) {
      const entry = await kv.get(key);
      if (entry === null || entry.operation !== 'PUT') continue;
      const state = prune(decodeAccount(entry.string()), target.nowMs, target.limits);
      if (state.holds.length === 0 && state.closed.length === 0) continue;
      // archivedMs says nothing to the log (it has no archive): the records the value still holds are all it keeps.
      lines[target.shardOf(key)]!.push(`${key}\t${encodeAccount({ ...state, archivedMs: 0 })}`);
    }
  } catch (error) {
    throw new HoldsUnavailableError(`reading KV bucket ${target.bucket} to import it: ${messageOf(error)}`, error);
  }
  let shards = 0;
  for (const [shard, shardLines] of lines.entries()) {
    if (shardLines.length === 0) continue;
    let expected = 0;
    let message: string[] = [];
    let bytes = 0;
    const append = async (): Promise<boolean> => {
      try {
        const ack = await js.publish(target.subjectOf(shard), new TextEncoder().encode(message.join('\n')), {
          expect: { lastSubjectSequence: expected },
          timeout: target.timeoutMs,
        });
        expected = ack.seq;
        return true;
      } catch (error) {
        // The shard was written first: by another process's import, which it then serves from.
        if (expected === 0 && isCasConflict(error)) return false;
        throw new HoldsUnavailableError(`importing holds into ${target.subjectOf(shard)}: ${messageOf(error)}`, error);
      }
    };
    let imported = true;
    for (const line of shardLines) {
      const size = Buffer.byteLength(line) + 1;
      if (message.length > 0 && bytes + size > target.messageBytesMax) {
        if (!(await append())) {
          imported = false;
          break;
        }
        message = [];
        bytes = 0;
      }
      message.push(line);
      bytes += size;
    }
    if (imported && message.length > 0) imported = await append();
    if (imported) {
      shards++;
      accounts += shardLines.length;
    }
  }
  return { accounts, shards };
}
