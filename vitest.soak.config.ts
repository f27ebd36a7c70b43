import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

// Soak tests: long fault runs kept out of `npm test` while they are known to
// fail now and then (test/nats-restart-cluster.soak.ts: a rare loss on a
// JetStream cluster losing nodes, issue 16). `npm run test:soak` runs them.
export default defineConfig({ test: { ...base.test, include: ['test/**/*.soak.ts'] } });
