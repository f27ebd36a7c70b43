import { RequestOne } from '@nats-io/nats-core/internal';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { applyCheapRequestCancel } from '../shared/nats/cheap-cancel.js';
import { connectNats, type NatsHandles } from '../shared/nats/connect.js';
import { createLogger } from '../shared/log.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { startNats, tempDir } from './harness.js';

/** What cancel rejects its request's promise with, called on a stand-in request. */
function cancelledError(cancel: (this: RequestOne, error?: Error) => void): Error {
  let rejected: Error | undefined;
  const request = {
    timer: undefined,
    mux: { cancel: () => undefined },
    deferred: { reject: (e: Error) => void (rejected = e) },
  };
  cancel.call(request as unknown as RequestOne);
  return rejected!;
}

const frames = (error: Error): number =>
  (error.stack ?? '').split('\n').filter((line) => line.trimStart().startsWith('at ')).length;

describe('nats.js request cancel without a stack (shared/nats/cheap-cancel.ts)', () => {
  const dir = tempDir('drawdown-cheap-cancel-');
  let nats: NatsServerProcess;
  let handles: NatsHandles;
  const original = RequestOne.prototype.cancel;
  let afterConnect: typeof original;

  beforeAll(async () => {
    nats = await startNats(dir.path);
    handles = await connectNats(nats.url, 'cheap-cancel-test', createLogger('silent', 'test'));
    afterConnect = RequestOne.prototype.cancel;
  });

  afterAll(async () => {
    await handles?.nc.close();
    await nats?.stop();
    dir.remove();
  });

  it('builds the same "cancelled" error, minus its stack frames', () => {
    const before = cancelledError(original);
    expect(frames(before)).toBeGreaterThan(0);
    applyCheapRequestCancel();
    const after = cancelledError(RequestOne.prototype.cancel);
    expect(after.constructor).toBe(before.constructor);
    expect(after.message).toBe(before.message);
    expect(frames(after)).toBe(0);
    // Stack capture is back on for everyone else.
    expect(frames(new Error('elsewhere'))).toBeGreaterThan(0);
  });

  it('patches the class that connectNats requests actually use, and publishes still resolve and fail as before', async () => {
    expect(afterConnect).not.toBe(original); // connectNats applied it
    const spy = vi.spyOn(RequestOne.prototype, 'cancel');
    try {
      await handles.jsm.streams.add({ name: 'CHEAP_CANCEL', subjects: ['cheap.cancel'] });
      const ack = await handles.js.publish('cheap.cancel', new Uint8Array([1, 2, 3]));
      expect(ack.seq).toBe(1);
      expect(spy).toHaveBeenCalled();
      // A failure still arrives, with its message, and with its stack (built before cancel).
      const failure: unknown = await handles.js.publish('no.stream.here', new Uint8Array([1]), { timeout: 1_000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(failure).toBeInstanceOf(Error);
      expect((failure as Error).message).toMatch(/jetstream is not enabled|no responders|timeout/i);
    } finally {
      spy.mockRestore();
    }
  });

  it('applies once, however often connectNats runs', async () => {
    const patched = RequestOne.prototype.cancel;
    const second = await connectNats(nats.url, 'cheap-cancel-test-2', createLogger('silent', 'test'));
    await second.nc.close();
    expect(RequestOne.prototype.cancel).toBe(patched);
  });
});
