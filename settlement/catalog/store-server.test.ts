import { defineCatalogStore } from './store-suite.js';

defineCatalogStore('server');
