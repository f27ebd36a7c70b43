/**
 * `npm run bench:chdb-memory -- [seconds] [events/s] [both|ids|usage]`: does chDB's engine
 * alone grow the rater's memory? It runs only chDB in this process — no
 * NATS, no worker threads, no id sets — and writes what a rater writes at
 * the end-to-end bench's rate: every second, per partition (4), one flush of
 * remembered event ids (dedupe_ids) and one of aggregate rows
 * (usage_minute), through the same payload code and store as the rater.
 * RSS is sampled every second and reported the way `npm run bench` reports
 * the rater's: the mean of the first and of the last 10 s.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteFlushColumns } from '../shared/clickhouse/usage-minute.js';
import { flushPayload } from '../rater/flush.js';
import { idsPayload, writeIds } from '../rater/dedupe/id-log.js';
import type { AggregateRow } from '../rater/aggregate.js';

const log = (line: string): void =>
  void process.stdout.write(`[chdb-memory ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const seconds = Number(process.argv[2] ?? 60);
const eventsPerS = Number(process.argv[3] ?? 600_000);
if (!Number.isInteger(seconds) || seconds < 20 || seconds > 3_600)
  throw new RangeError('seconds must be an integer 20–3600');
if (!Number.isInteger(eventsPerS) || eventsPerS < 1_000 || eventsPerS > 10_000_000)
  throw new RangeError('events/s must be an integer 1000–10000000');
const tablesWritten = process.argv[4] ?? 'both';
if (!['both', 'ids', 'usage'].includes(tablesWritten))
  throw new RangeError('the tables written must be both, ids or usage');

const partitions = 4;
const customersPerPartition = 25;
const mib = (bytes: number): number => Math.round(bytes / 1024 / 1024);

// What one partition's flush holds: each customer's rows for the minutes its events spread over.
function rows(partition: number, flushSeq: number, nowSec: number): AggregateRow[] {
  const out: AggregateRow[] = [];
  const minute = Math.floor(nowSec / 60) * 60;
  for (let c = 0; c < customersPerPartition; c++) {
    const customer = `cust-${partition * customersPerPartition + c}`;
    for (let m = 0; m < 60; m++) {
      out.push([customer, 'gpt-4o.input_tokens', '{}', minute - 60 * m, 125_250_000_000n + BigInt(flushSeq), 9]);
      if (m % 6 === 0)
        out.push([
          customer,
          'images',
          '{"input":"prompt","model":"Nano Banana","resolution":"1K"}',
          minute - 60 * m,
          1_000_000_000n,
          1,
        ]);
    }
  }
  return out;
}

function ids(count: number, seed: number): Uint32Array {
  const words = new Uint32Array(3 * count);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return words;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'drawdown-chdb-memory-'));
  const store = await openStore(`chdb:${join(dir, 'chdb')}`);
  try {
    await ensureSchema(store);
    const idsPerFlush = Math.round(eventsPerS / partitions);
    log(
      `${seconds} s; ${partitions} partitions × 1 flush/s: ${idsPerFlush.toLocaleString('en')} ids + ${rows(0, 0, 0).length} usage rows each (${eventsPerS.toLocaleString('en')} events/s); writing ${tablesWritten === 'both' ? 'both tables' : tablesWritten === 'ids' ? 'dedupe_ids only' : 'usage_minute only'}`,
    );
    const samples: number[] = [];
    // Samples are every second; the 10 s reports show the swings merges cause, the summary the trend.
    const sampler = setInterval(() => samples.push(process.memoryUsage().rss), 1_000);
    const startedAt = Date.now();
    let flushSeq = 0;
    let behindS = 0;
    for (let s = 0; s < seconds; s++) {
      const secondStart = Date.now();
      flushSeq++;
      const nowSec = Math.floor(secondStart / 1000);
      for (let p = 0; p < partitions; p++) {
        if (tablesWritten !== 'usage')
          await writeIds(store, idsPayload([ids(idsPerFlush, flushSeq * 31 + p)], p, flushSeq, nowSec));
        if (tablesWritten !== 'ids')
          await store.insert(
            'usage_minute',
            usageMinuteFlushColumns,
            flushPayload(rows(p, flushSeq, nowSec), p, flushSeq, nowSec),
          );
      }
      const spent = Date.now() - secondStart;
      if (spent < 1_000) await new Promise((r) => setTimeout(r, 1_000 - spent));
      else behindS += (spent - 1_000) / 1_000;
      if (s % 10 === 9) log(`t=${s + 1}s RSS ${mib(process.memoryUsage().rss)} MiB`);
    }
    clearInterval(sampler);
    const mean = (xs: number[]): number => mib(xs.reduce((a, b) => a + b, 0) / xs.length);
    const first = mean(samples.slice(0, 10));
    const last = mean(samples.slice(-10));
    log(
      `RSS first → last 10 s: ${first} → ${last} MiB (${(((last - first) / first) * 100).toFixed(1)} %), peak ${mib(Math.max(...samples))} MiB; ${((Date.now() - startedAt) / 1000).toFixed(0)} s, inserts ran ${behindS.toFixed(1)} s behind the clock`,
    );
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`chdb-memory failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
