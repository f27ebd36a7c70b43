import { defineClusterNodeLoss, seedFor } from './nats-restart-suite.js';

defineClusterNodeLoss(seedFor(16_003));
