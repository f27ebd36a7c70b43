import { defineCatalogStore } from './catalog-store-suite.js';

defineCatalogStore('chdb');
