import { defineFlushBounds } from './flush-bounds-suite.js';

defineFlushBounds('chdb');
