import { defineEndToEnd } from './e2e-suite.js';

defineEndToEnd('server');
