import { defineCatalogStore } from './store-suite.js';

defineCatalogStore('chdb');
