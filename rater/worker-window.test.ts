/**
 * The rater's workers hold events to the gateway's time window around each
 * message's arrival in the stream, clamped to ClickHouse's DateTime: a
 * message with one event outside is rejected whole (to be dead-lettered),
 * on the fast path (MessagePack) and the full one (JSON) alike, and a
 * message rated long after it arrived is not refused for being late. Runs
 * the compiled worker (npm run build), as the rater does.
 */
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import { Piscina } from 'piscina';
import { afterAll, describe, expect, it } from 'vitest';
import type { MeterDefinitions } from '../catalog/model.js';
import { packMessages, type AggregateResult, type AggregateTask } from './task.js';
import { raterWindow, storableMaxMs } from './window.js';

const meters = JSON.parse(JSON.stringify({ tokens: { aggregation: 'sum', dimensions: [] } })) as MeterDefinitions;
const standard = new Packr({ useRecords: false });
const arrivedMs = Date.parse('2026-03-01T12:00:00Z');
const dayMs = 86_400_000;
// The gateway's defaults: 7 days late, 5 minutes ahead, 5 s publish timeout.
const window = raterWindow({ lateMs: 7 * dayMs, skewMs: 5 * 60_000, publishTimeoutMs: 5_000 });

describe('rater worker and the time window', () => {
  const pool = new Piscina<AggregateTask, AggregateResult>({
    filename: fileURLToPath(new URL('../dist/rater/worker.js', import.meta.url)),
    workerData: { meters },
    minThreads: 1,
    maxThreads: 1,
  });
  afterAll(() => pool.destroy());

  const event = (id: string, timestamp: number) => ({ id, customer: 'acme', meter: 'tokens', quantity: 1, timestamp });
  const cases: [string, number, boolean][] = [
    ['inside: 7 days old', arrivedMs - 7 * dayMs, true],
    ['inside the slack: 7 days + 60 s old', arrivedMs - 7 * dayMs - 60_000, true],
    ['too old: 8 days', arrivedMs - 8 * dayMs, false],
    ['inside: 5 minutes ahead', arrivedMs + 5 * 60_000, true],
    ['too far ahead: 1 hour', arrivedMs + 3_600_000, false],
    ['beyond DateTime: year 2200', Date.UTC(2200, 0, 1), false],
  ];

  it.each(cases)(
    'given an event %s, then the message is counted or rejected whole, on both paths',
    async (_, ts, ok) => {
      for (const format of ['msgpack', 'json'] as const) {
        const body = [event('valid', arrivedMs), event('probe', ts)];
        const bytes = format === 'json' ? Buffer.from(JSON.stringify(body)) : standard.pack(body);
        const task = packMessages(
          [bytes],
          [format],
          { revision: 1, json: JSON.stringify(meters) },
          [arrivedMs],
          window,
        );
        const result = await pool.run(task);
        expect(result.rejected.length, format).toBe(ok ? 0 : 1);
        expect(result.events, format).toBe(ok ? 2 : 0);
        if (!ok) expect(result.rejected[0]!.reason, format).toMatch(/event 1 field timestamp/);
      }
    },
  );

  it('given no window (the default), then anything DateTime stores is counted and nothing beyond it', async () => {
    const task = packMessages(
      [standard.pack([event('a', 0), event('b', storableMaxMs)]), standard.pack([event('c', storableMaxMs + 1)])],
      ['msgpack', 'msgpack'],
      { revision: 1, json: JSON.stringify(meters) },
    );
    const result = await pool.run(task);
    expect(result.events).toBe(2);
    expect(result.rejected.map((r) => r.message)).toEqual([1]);
  });
});
