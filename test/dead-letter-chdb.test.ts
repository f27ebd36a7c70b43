import { defineDeadLetter } from './dead-letter-suite.js';

defineDeadLetter('chdb');
