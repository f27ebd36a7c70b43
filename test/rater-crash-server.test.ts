import { defineRaterCrash } from './rater-crash-suite.js';

defineRaterCrash('server');
