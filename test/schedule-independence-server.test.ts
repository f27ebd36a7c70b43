import { defineScheduleIndependence } from './schedule-independence-suite.js';

defineScheduleIndependence('server');
