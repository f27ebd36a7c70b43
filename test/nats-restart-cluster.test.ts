// A 3-node JetStream cluster losing nodes under load (issue 16): DRAWDOWN_RESTART_SEED picks the seed.
import { defineClusterNodeLoss, seedFor } from './nats-restart-suite.js';

defineClusterNodeLoss(seedFor(16_003));
