/**
 * Was a JetStream write refused because the subject (a KV key, a log shard)
 * moved past the sequence it named? The one answer to a compare-and-set that
 * says "re-read and decide again", as opposed to a write whose outcome is
 * unknown.
 */
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';

export function isCasConflict(error: unknown): error is JetStreamApiError {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}
