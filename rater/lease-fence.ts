/**
 * What a partition loop needs to know about its lease (rater/leases.ts):
 * whether it may still act, and, right before each ClickHouse insert, proof
 * that it still holds the lease. Kept apart from the lease manager so the
 * loop and the flush depend on this small contract only.
 */

/** The lease is gone (its deadline passed, or another rater holds it): stop, writing nothing. */
export class LeaseLostError extends Error {
  override readonly name = 'LeaseLostError';
}

/**
 * The lease could not be confirmed (the bucket did not answer) though its
 * deadline has not passed: nothing is written now, and the loop resumes from
 * the committed watermark, as after any other failure.
 */
export class LeaseUnconfirmedError extends Error {
  override readonly name = 'LeaseUnconfirmedError';
}

export function isFenceError(error: unknown): boolean {
  return error instanceof LeaseLostError || error instanceof LeaseUnconfirmedError;
}

export interface PartitionLease {
  readonly partition: number;
  /**
   * Cheap and local: the monotonic deadline (the last renewal's send time +
   * TTL − margin) has not passed, and no renewal was refused. Checked before
   * fetching and before recreating the partition's consumer.
   */
  held(): boolean;
  /**
   * Right before a ClickHouse insert: the deadline has not passed, and the
   * bucket still holds this rater's lease (the revision it renewed, or a
   * later renewal of its own), the deadline checked again after that read.
   * Throws LeaseLostError or LeaseUnconfirmedError otherwise.
   */
  confirm(): Promise<void>;
}
