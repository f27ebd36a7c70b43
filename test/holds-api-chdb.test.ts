import { defineHoldsApi } from './holds-api-suite.js';

defineHoldsApi('chdb', 'log');
