import { defineNotices } from './notices-suite.js';

defineNotices('server');
