/**
 * Piscina worker: decode, validate and aggregate a task's batches off the
 * main thread. The catalog's meter definitions arrive once, as workerData.
 */
import { workerData } from 'node:worker_threads';
import { decodeBatch, expectEventArray, validateEvents } from '../shared/batch.js';
import type { MeterDefinitions } from '../shared/catalog.js';
import { Aggregator } from './aggregate.js';
import type { AggregateResult, AggregateTask } from './task.js';

const { meters } = workerData as { meters: MeterDefinitions };

export default function aggregateTask(task: AggregateTask): AggregateResult {
  const aggregator = new Aggregator(meters);
  const rejected: AggregateResult['rejected'] = [];
  let events = 0;
  const count = task.formats.length;
  for (let i = 0; i < count; i++) {
    const bytes = task.data.subarray(task.offsets[i]!, task.offsets[i + 1]!);
    try {
      const raw = expectEventArray(decodeBatch(bytes, task.formats[i] === 1 ? 'json' : 'msgpack'), Number.MAX_SAFE_INTEGER);
      // No time window: the gateway checked it on arrival, against its clock.
      const batch = validateEvents(raw, meters, undefined);
      for (const event of batch) aggregator.addEvent(event);
      events += batch.length;
    } catch (error) {
      rejected.push({ message: i, reason: (error as Error).message });
    }
  }
  return { rows: aggregator.drain(), events, rejected };
}
