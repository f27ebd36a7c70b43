import { defineUsagePartitioning } from './usage-partitioning-suite.js';

defineUsagePartitioning('server');
