/**
 * Imported first by the cluster test: the rater's delivery log
 * (rater/debug-acks.ts, read when that module loads) is always on there, in a
 * temp file unless DRAWDOWN_DEBUG_ACKS names one, because the test tells the
 * rater's losses from nats-server's by it (test/nats-restart-suite.ts).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

if (!process.env.DRAWDOWN_DEBUG_ACKS) {
  process.env.DRAWDOWN_DEBUG_ACKS = join(mkdtempSync(join(tmpdir(), 'drawdown-debug-acks-')), 'acks.log');
  // Only the delivery log: the publish monitors stay for a person debugging (they copy every publish three times).
  process.env.DRAWDOWN_DEBUG_ACKS_AUTO = '1';
}
