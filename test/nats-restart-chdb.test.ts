import { defineNatsRestart, seedFor } from './nats-restart-suite.js';

defineNatsRestart('chdb', seedFor(16_001));
