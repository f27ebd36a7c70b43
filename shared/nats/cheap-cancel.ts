/**
 * nats.js 3.x (nats-core lib/request.js, RequestOne.cancel) builds
 * `new RequestError("cancelled")` after every *successful* request and
 * rejects its already-resolved promise with it, a no-op. The error itself
 * is not free: capturing its stack was 4 % of the gateway's CPU with
 * 1,000-event batches and 11.5 % with 100-event ones (four JetStream
 * publishes per batch). `noAsyncTraces` does not cover it.
 *
 * So cancel runs with stack capture off. Nothing else changes: the same
 * errors are built, with their messages and causes. A real failure's error
 * (a timeout, a JetStream error) is built elsewhere, before cancel, and
 * keeps its stack. Only the "cancelled" error loses it, and it is only
 * seen when a request is abandoned because the connection closed.
 */
import { RequestOne } from '@nats-io/nats-core/internal';

const patched = Symbol.for('drawdown.cheapRequestCancel');

export function applyCheapRequestCancel(): void {
  const prototype = RequestOne.prototype as RequestOne & { [patched]?: true };
  if (prototype[patched]) return;
  const cancel = prototype.cancel;
  prototype.cancel = function cancelWithoutStack(this: RequestOne, error?: Error): void {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      cancel.call(this, error);
    } finally {
      Error.stackTraceLimit = limit;
    }
  };
  prototype[patched] = true;
}
