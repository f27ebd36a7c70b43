import { defineNatsRestart, seedFor } from './nats-restart-suite.js';

defineNatsRestart('server', seedFor(16_002));
