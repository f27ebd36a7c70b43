import { defineScheduleIndependence } from './schedule-independence-suite.js';

defineScheduleIndependence('chdb');
