// A 3-node JetStream cluster losing nodes under load (issue 16): DRAWDOWN_RESTART_SEED picks the seed.
// The delivery log goes on first, before the rater's modules load (test/debug-acks-on.ts).
import './debug-acks-on.js';
import { defineClusterNodeLoss, seedFor } from './nats-restart-suite.js';

defineClusterNodeLoss(seedFor(16_003));
