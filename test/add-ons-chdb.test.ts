import { defineAddOns } from './add-ons-suite.js';

defineAddOns('chdb');
