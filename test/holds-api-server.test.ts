import { defineHoldsApi } from './holds-api-suite.js';

defineHoldsApi('server', 'kv');
