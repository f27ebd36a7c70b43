// Not in `npm test`: on a 3-node cluster of Debian's nats-server 2.9.10 this lost 5 of 7,000 accepted
// events once in six runs (under the full suite's load), and the cause is not found yet (issue 16).
// `npm run test:soak` runs it; DRAWDOWN_RESTART_SEED picks the seed.
import { defineClusterNodeLoss, seedFor } from './nats-restart-suite.js';

defineClusterNodeLoss(seedFor(16_003));
