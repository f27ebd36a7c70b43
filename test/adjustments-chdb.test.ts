import { defineAdjustments } from './adjustments-suite.js';

defineAdjustments('chdb');
