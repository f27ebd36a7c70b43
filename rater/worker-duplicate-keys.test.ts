/**
 * A stream message with a repeated map key (one that bypassed the gateway)
 * is undecodable to the rater's workers: rejected whole, counted nowhere,
 * while the other messages of the task are counted. Runs the compiled
 * worker (npm run build), as the rater does.
 */
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import { Piscina } from 'piscina';
import { afterAll, describe, expect, it } from 'vitest';
import type { MeterDefinitions } from '../catalog/model.js';
import { packMessages, type AggregateResult, type AggregateTask } from './task.js';

const meters = JSON.parse(
  JSON.stringify({ images: { aggregation: 'sum', dimensions: ['model'] } }),
) as MeterDefinitions;
const standard = new Packr({ useRecords: false });
const baseMs = 1_700_000_000_000;

/** Packed with distinct keys, then one renamed in the bytes to repeat another (no encoder writes a repeat). */
function renamed(events: unknown[], from: string, to: string): Buffer {
  const body = standard.pack(events);
  const at = body.indexOf(Buffer.concat([Buffer.of(0xa0 | from.length), Buffer.from(from)]));
  body.write(to, at + 1, 'latin1');
  return body;
}

describe('rater worker and repeated keys', () => {
  const pool = new Piscina<AggregateTask, AggregateResult>({
    filename: fileURLToPath(new URL('../dist/rater/worker.js', import.meta.url)),
    workerData: { meters },
    minThreads: 1,
    maxThreads: 1,
  });
  afterAll(() => pool.destroy());

  it('rejects each such message whole and counts the rest', async () => {
    const event = (id: string, extra: object = {}) => ({
      id,
      customer: 'acme',
      meter: 'images',
      timestamp: baseMs,
      ...extra,
    });
    const task = packMessages(
      [
        standard.pack([event('ok1', { quantity: 2 }), event('ok2')]),
        renamed([event('a'), event('b', { quantity: 5, quantitX: 7 })], 'quantitX', 'quantity'),
        // An undeclared dimension: the workers' fast path would take it, ignoring the repeated value.
        renamed([event('c', { dimensions: { other: 'x', otheR: 'y' } })], 'otheR', 'other'),
        Buffer.from(JSON.stringify([event('d')]).replace('"timestamp"', '"id":"d2","timestamp"')),
      ],
      ['msgpack', 'msgpack', 'msgpack', 'json'],
      { revision: 1, json: JSON.stringify(meters) },
    );
    const result = await pool.run(task);
    expect(result.events).toBe(2);
    expect(result.rows.map((r) => [r[0], r[1], r[4], r[5]])).toEqual([['acme', 'images', 3_000_000_000n, 2]]);
    expect(result.rejected.map((r) => r.message)).toEqual([1, 2, 3]);
    for (const r of result.rejected) expect(r.reason).toMatch(/key "(quantity|other|id)" appears more than once/);
  });
});
