import { defineDeadLetter } from './dead-letter-suite.js';

defineDeadLetter('server');
