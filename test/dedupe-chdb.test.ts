import { defineDedupe } from './dedupe-suite.js';

defineDedupe('chdb');
