/**
 * Baseline (c) of `npm run bench`: the least any Node HTTP → JetStream
 * gateway can do. It reads each request body and publishes it unchanged to
 * a JetStream stream of the same kind as the gateway's (file storage, work
 * queue, four subjects), answering 202 once the stream acknowledged it. No
 * validation, no routing by customer, no idempotency, no metrics: the
 * gateway ÷ this is what drawdown's own work costs; this ÷ raw JetStream is
 * what putting HTTP in front of JetStream costs on the same machine.
 *
 *   node dist/bench/forwarder.js NATS_URL      (prints "port N" when ready)
 */
import { createServer } from 'node:http';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { addBaselineStream } from './baseline-stream.js';

const natsUrl = process.argv[2];
if (natsUrl === undefined) throw new Error('usage: forwarder NATS_URL');
const stream = 'BENCH_FORWARD';
const nc = await connect({ servers: natsUrl, noAsyncTraces: true });
const jsm = await jetstreamManager(nc);
await addBaselineStream(jsm, stream, 'bench.forward');
const js = jetstream(nc);
let next = 0;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    js.publish(`bench.forward.${next++ % 4}`, body).then(
      () => {
        res.writeHead(202, { 'content-type': 'application/json' });
        res.end('{}');
      },
      (error: unknown) => {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end(String(error));
      },
    );
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  console.log(`port ${typeof address === 'object' && address !== null ? address.port : 0}`);
});
process.on('SIGTERM', () => {
  server.close();
  void jsm.streams
    .delete(stream)
    .catch(() => undefined)
    .finally(() => void nc.close().finally(() => process.exit(0)));
});
