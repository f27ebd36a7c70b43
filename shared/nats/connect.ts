import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { Logger } from '../log.js';
import { applyCheapRequestCancel } from './cheap-cancel.js';

export interface NatsHandles {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

/**
 * Connects and keeps reconnecting forever: a NATS restart is an operating
 * event, not a reason for a gateway or rater to exit. Requests made while
 * disconnected fail fast and are answered 503 or retried by the caller.
 */
export async function connectNats(urls: string, name: string, log: Logger): Promise<NatsHandles> {
  applyCheapRequestCancel();
  const nc = await connect({
    servers: urls.split(',').map((s) => s.trim()),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
    // nats.js otherwise builds an Error (with a captured stack) up front for
    // every request, timer and ack-ack, just in case it fails later: ~2 µs
    // each, several per ingested batch. Failures still carry their message.
    noAsyncTraces: true,
  });
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnect' || status.type === 'error')
        log.warn({ nats: status.type, server: (status as { server?: string }).server }, 'NATS connection status');
    }
  })();
  return { nc, js: jetstream(nc), jsm: await jetstreamManager(nc) };
}
