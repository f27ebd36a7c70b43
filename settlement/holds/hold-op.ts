/**
 * An operation on one account as the hold store hands it to its engine (KV
 * or log): a pure transition to run on the account's current state, and how
 * to answer the caller. The engine runs `apply` as often as it must (each
 * retry after a conflict), and answers exactly once: `settle` after the
 * state `apply` returned is stored, or `reject`.
 */
import type { AccountState, Archived } from './hold-account.js';

export interface PendingOp {
  /** The hold (id suffix) it names, if any: the engine finds its closed record when the state lacks it. */
  readonly target: string | undefined;
  apply(
    state: AccountState,
    nowMs: number,
    archived: Archived | undefined,
  ): { state: AccountState; settle: () => void };
  reject(error: unknown): void;
}

/** An account's state as of a fresh read, with the closed records of the ids asked for that it lacks. */
export interface AccountRead {
  state: AccountState;
  /** KV: the value's revision (0: never written). Log: the shard's last sequence. */
  revision: number;
  archived: Archived | undefined;
}

export interface OpenCount {
  open: number;
  accounts: number;
  complete: boolean;
}

/** What the store needs of an engine. */
export interface HoldEngine {
  /** Queues `op` on the account; it is answered through op.apply's settle or op.reject. */
  submit(key: string, op: PendingOp): void;
  read(key: string, targets: readonly string[], nowMs: number): Promise<AccountRead>;
  countOpen(accountsMax: number, nowMs: number): Promise<OpenCount>;
  stats(): EngineStats;
  /** Stops background work; called after every submitted operation was answered. */
  close(): Promise<void>;
}

export interface EngineStats {
  /** Batches committed (written, or answered from a fresh read). */
  batches: number;
  /** KV: compare-and-sets. Log: appends. */
  writes: number;
  /** Bytes of the values (KV) or messages (log) written. */
  bytesWritten: number;
  /** KV: value reads. Log: reads of a shard's last sequence. */
  reads: number;
  /** Writes refused because another process wrote first. */
  conflicts: number;
  contentionExhausted: number;
  /** KV: closed records put into the archive bucket, lookups there, and rounds of puts that failed (retried later). */
  archived: number;
  archiveReads: number;
  archiveFailures: number;
  /** Log: messages of other processes applied; closed records forgotten before retention (logClosedRecordsMax). */
  applied: number;
  closedForgotten: number;
  /** Log: closed records this process keeps in memory now (within retention, ≤ logClosedRecordsMax). KV: 0. */
  closedRetained: number;
  /** Log: accounts re-appended so their open holds stay within the stream's window. */
  refreshed: number;
  /** Log: accounts this process imported from the KV bucket when the log was new (hold-log-import.ts). */
  imported: number;
  /** Log: times the follower's consumer ended or stalled and following resumed after the last message applied. */
  followerRestarts: number;
}

export function emptyEngineStats(): EngineStats {
  return {
    batches: 0,
    writes: 0,
    bytesWritten: 0,
    reads: 0,
    conflicts: 0,
    contentionExhausted: 0,
    archived: 0,
    archiveReads: 0,
    archiveFailures: 0,
    applied: 0,
    closedForgotten: 0,
    closedRetained: 0,
    refreshed: 0,
    imported: 0,
    followerRestarts: 0,
  };
}

/** What the store gives an engine: its clock, and what to call after a write it stored (and, KV, an archive round). */
export interface EngineHooks {
  clock: () => number;
  onWrite: ((before: AccountState, after: AccountState, nowMs: number) => void) | undefined;
  onArchive: ((outcome: { archived: number } | { failed: unknown }) => void) | undefined;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
