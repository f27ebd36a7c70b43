import { defineGroupedBalances } from './grouped-balances-suite.js';

defineGroupedBalances('server');
