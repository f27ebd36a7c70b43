/**
 * `npm run bench:settlement`: one settlement run for many customers, timed
 * from the ClickHouse read to the ledger written, with the totals checked
 * exactly.
 *
 * ClickHouse (chDB by default, `--backend server` for clickhouse-server) is
 * filled with what the rater and the API would have written: for every
 * customer one window of aggregated usage on 3 meters (usage_minute rows
 * carrying a committed watermark, as a rater flush writes them), a purchase
 * in the ledger, and — for every other customer — a subscription whose
 * monthly grant starts inside the window. Then `--windows` consecutive runs
 * are timed (the second one finds the first one's ledger: the steady state).
 * After each run: total deducted in the ledger = total rated (computed here,
 * independently, from the inserted quantities), and every account's balance
 * (sum of its entries) = what settlement carries forward for it.
 *
 * Results: bench/results/settlement-latest.{json,md}, a line in history.md.
 * Flags: --customers 100000 --windows 2 --backend chdb|server --history 0 (days of settled history first)
 */
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Decimal } from 'decimal.js';
import { ClickHouseServerProcess } from '../deploy/clickhouse-server.js';
import { parseCatalog } from '../catalog/model.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteColumns } from '../shared/clickhouse/usage-minute.js';
import { insertRowsMax, type Store } from '../shared/clickhouse/store.js';
import { parseArgs } from '../shared/config.js';
import { formatAmount, money, parseStoredDecimal, toLedgerAmount } from '../shared/money.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { entryId, writeEntries, type LedgerEntry } from '../settlement/ledger.js';
import { settle } from '../settlement/settle.js';
import { recordRun, runIdFor, type RunRecord } from '../settlement/runs.js';
import { flushBoundsColumns, flushBoundsPayload } from '../shared/clickhouse/flush-bounds.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const log = (line: string): void => void process.stdout.write(`[bench:settlement] ${line}\n`);

function intFlag(flags: Map<string, string>, name: string, fallback: number, min: number, max: number): number {
  const value = Number(flags.get(name) ?? fallback);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new RangeError(`${name} must be an integer ${min}–${max}`);
  return value;
}

const windowSec = 3600;
// Far from the wall clock, on a month start, so graduated tiers start from zero.
const firstWindowSec = Date.parse('2026-03-01T00:00:00Z') / 1000;

/** The bench catalog: three meters priced three ways (package, unit by dimension, graduated tiers). */
function benchCatalog(customers: string[]) {
  return parseCatalog({
    credit_units: [{ id: 'credits', name: 'Credits', allowed_negative_balance: '20' }],
    meters: [
      { key: 'tokens', aggregation: 'sum' },
      { key: 'images', aggregation: 'sum', dimensions: ['model'] },
      { key: 'calls', aggregation: 'count' },
    ],
    rate_card: {
      versions: [
        {
          version: 'bench',
          effective_from: '2026-01-01T00:00:00Z',
          rows: [
            { meter: 'tokens', unit: 'credits', price: { model: 'package', amount: '5.00', size: '1000000' } },
            {
              meter: 'images',
              match: { model: 'standard' },
              unit: 'credits',
              price: { model: 'unit', amount: '0.04' },
            },
            { meter: 'images', match: { model: 'hd' }, unit: 'credits', price: { model: 'unit', amount: '0.08' } },
            {
              meter: 'calls',
              unit: 'credits',
              price: {
                model: 'graduated',
                tiers: [
                  { up_to: '100', amount: '0.01' },
                  { up_to: '1000', amount: '0.005' },
                  { up_to: null, amount: '0.001' },
                ],
              },
            },
          ],
        },
      ],
    },
    packages: [{ id: 'credits-100', price: { currency: 'USD', amount: '100.00' }, credits: '100', unit: 'credits' }],
    plans: [
      {
        id: 'bench',
        billing: 'monthly',
        versions: [
          {
            version: 1,
            grants: [
              { id: 'monthly', unit: 'credits', quantity: '50', frequency: 'monthly', rollover: { kind: 'none' } },
            ],
          },
        ],
      },
    ],
    subscriptions: customers
      .filter((_, i) => i % 2 === 0)
      .map((customer, i) => ({
        id: `sub-${customer}`,
        customer,
        plan: 'bench',
        start: new Date((firstWindowSec + (i % 60) * 60) * 1000).toISOString(),
      })),
  });
}

/** A deterministic quantity for (customer index, meter, window): no Math.random, so runs compare. */
function quantityOf(i: number, meter: number, window: number): string {
  const x = (Math.imul(i + 1, 2654435761) ^ Math.imul(meter + 7, 40503) ^ Math.imul(window + 3, 9973)) >>> 0;
  if (meter === 0) return String(x % 20_000_000); // tokens
  if (meter === 1) return String(x % 400); // images
  return String(x % 1500); // calls
}

/** What the usage of one customer in one window costs, computed here from the price definitions. */
function expectedCost(i: number, window: number): Decimal {
  const tokens = money(quantityOf(i, 0, window));
  const images = money(quantityOf(i, 1, window));
  let cost = toLedgerAmount(tokens.times('5.00').dividedBy(1_000_000)).plus(
    toLedgerAmount(images.times(i % 3 === 0 ? '0.08' : '0.04')),
  );
  const tier = (q: Decimal): Decimal => {
    const a = Decimal_min(q, money(100));
    const b = Decimal_min(Decimal_max(q.minus(100), money(0)), money(900));
    const c = Decimal_max(q.minus(1000), money(0));
    return toLedgerAmount(a.times('0.01').plus(b.times('0.005')).plus(c.times('0.001')));
  };
  let before = money(0);
  for (let w = 0; w < window; w++) before = before.plus(quantityOf(i, 2, w));
  cost = cost.plus(tier(before.plus(quantityOf(i, 2, window))).minus(tier(before)));
  return cost;
}
const Decimal_min = (a: Decimal, b: Decimal): Decimal => (a.lessThan(b) ? a : b);
const Decimal_max = (a: Decimal, b: Decimal): Decimal => (a.greaterThan(b) ? a : b);

async function fillUsage(store: Store, customers: string[], window: number, seqBase: number): Promise<void> {
  const startSec = firstWindowSec + window * windowSec;
  // As the rater does: the flush's record (its earliest minute) before its rows.
  await store.insert(
    'flush_bounds',
    flushBoundsColumns,
    flushBoundsPayload(0, seqBase + window + 1, startSec, startSec + windowSec - 1),
  );
  let rows: string[][] = [];
  const flush = async (): Promise<void> => {
    // One INSERT per chunk, every row of the window under one flush sequence: the committed watermark.
    await store.insert('usage_minute', usageMinuteColumns, encodeTsv(rows));
    rows = [];
  };
  for (let i = 0; i < customers.length; i++) {
    const minute = tsvDateTime(startSec + (i % 60) * 60);
    const flushedAt = tsvDateTime(startSec + windowSec - 1);
    const seq = String(seqBase + window + 1);
    rows.push([customers[i]!, 'tokens', '{}', minute, quantityOf(i, 0, window), '1', '0', seq, flushedAt]);
    rows.push([
      customers[i]!,
      'images',
      JSON.stringify({ model: i % 3 === 0 ? 'hd' : 'standard' }),
      minute,
      quantityOf(i, 1, window),
      '1',
      '0',
      seq,
      flushedAt,
    ]);
    rows.push([
      customers[i]!,
      'calls',
      '{}',
      minute,
      quantityOf(i, 2, window),
      quantityOf(i, 2, window),
      '0',
      seq,
      flushedAt,
    ]);
    if (rows.length >= insertRowsMax - 3) await flush();
  }
  if (rows.length > 0) await flush();
}

/**
 * `days` of history before the first window, already settled: one row per
 * customer, meter and day, each day one flush (label = day number, with its
 * record) stamped at the day's end as the rater stamps a flush, and a
 * completed run up to the first window that took it — as a deployment that
 * has been running that long looks to the next run. Returns the flush
 * sequence the windows continue from.
 */
async function fillHistory(store: Store, customers: string[], days: number): Promise<number> {
  if (days === 0) return 0;
  const fromSec = firstWindowSec - days * 86_400;
  let rows: string[][] = [];
  let written = 0;
  const flush = async (): Promise<void> => {
    await store.insert('usage_minute', usageMinuteColumns, encodeTsv(rows));
    written += rows.length;
    rows = [];
  };
  for (let day = 0; day < days; day++) {
    const daySec = fromSec + day * 86_400;
    const seq = String(day + 1);
    const flushedAt = tsvDateTime(daySec + 86_399);
    await store.insert('flush_bounds', flushBoundsColumns, flushBoundsPayload(0, day + 1, daySec, daySec + 86_399));
    for (let i = 0; i < customers.length; i++) {
      const minute = tsvDateTime(daySec + (i % 1440) * 60);
      const c = customers[i]!;
      rows.push([c, 'tokens', '{}', minute, '1000', '1', '0', seq, flushedAt]);
      rows.push([c, 'images', '{"model":"standard"}', minute, '1', '1', '0', seq, flushedAt]);
      rows.push([c, 'calls', '{}', minute, '1', '1', '0', seq, flushedAt]);
      if (rows.length >= insertRowsMax - 3) await flush();
    }
    // A flush never spans two days here: each day's rows are one INSERT (or more) of their own.
    if (rows.length > 0) await flush();
    if ((day + 1) % 30 === 0) log(`history: ${day + 1} of ${days} days (${written.toLocaleString('en')} rows)`);
  }
  await waitForMerges(store);
  const run: RunRecord = {
    runId: runIdFor(fromSec, firstWindowSec),
    fromSec,
    untilSec: firstWindowSec,
    startedAtSec: firstWindowSec,
    watermarks: { '0': days },
  };
  await recordRun(store, run, firstWindowSec, 'started', '');
  await recordRun(store, run, firstWindowSec, 'completed', '{}');
  return days;
}

/**
 * A deployment's history is merged long before its next run: background merges of the rows just written
 * would take the run's CPU and be measured as its cost. Waits (at most 10 minutes) until none is running.
 */
async function waitForMerges(store: Store): Promise<void> {
  const started = Date.now();
  for (;;) {
    const [[running]] = (await store.query(
      "SELECT count() FROM system.merges WHERE database = currentDatabase() AND table = 'usage_minute'",
    )) as [[string]];
    if (running === '0' || Date.now() - started > 600_000) break;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  log(`history merged (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

async function fillPurchases(store: Store, customers: string[]): Promise<void> {
  const entries: LedgerEntry[] = customers.map((customer) => {
    const id = entryId('purchase', [customer, 'bench-purchase']);
    return {
      entryId: id,
      customer,
      unit: 'credits',
      kind: 'purchase',
      amount: money(100),
      effectiveAtSec: firstWindowSec - 86_400,
      postedAtSec: firstWindowSec - 86_400,
      runId: '',
      meter: '',
      dimensions: '',
      quantity: money(1),
      rateVersion: '',
      source: 'package credits-100 (100 USD)',
      blockId: id,
      expiresAtSec: 0,
    };
  });
  await writeEntries(store, entries);
}

interface RunFigures {
  window: number;
  seconds: number;
  phasesS: Record<string, number>;
  accounts: number;
  entriesPosted: number;
  totalRated: string;
  totalDeducted: string;
  balancesChecked: number;
  exact: boolean;
}

async function verify(
  store: Store,
  runId: string,
  expectedTotal: Decimal,
): Promise<{ deducted: Decimal; balancesChecked: number; balancesExact: boolean }> {
  // Every draw of usage (from blocks, into the allowed negative balance, past it) is a `usage` entry.
  const [[usage]] = (await store.query(
    `SELECT sum(amount) FROM (SELECT entry_id, any(amount) AS amount, any(kind) AS kind FROM ledger_entries WHERE run_id = '${runId.replace(/'/g, '')}' GROUP BY entry_id) WHERE kind = 'usage'`,
  )) as [[string]];
  const total = parseStoredDecimal(usage).negated();
  // Balance = sum of entries, account by account, against the state settlement carries forward.
  let mismatches: string[][] = [['unknown']];
  let checked = '0';
  try {
    mismatches = await store.query(
      `SELECT count() FROM (
       SELECT customer, unit, sum(amount) AS ledger FROM (SELECT entry_id, any(customer) AS customer, any(unit) AS unit, any(amount) AS amount FROM ledger_entries GROUP BY entry_id) GROUP BY customer, unit
     ) AS l ANY INNER JOIN (
       SELECT customer, unit, argMax(balance, as_of) AS carried FROM credit_snapshots GROUP BY customer, unit
     ) AS s USING (customer, unit) WHERE ledger != carried`,
    );
    checked = (await store.query('SELECT uniqExact(customer, unit) FROM credit_snapshots'))[0]?.[0] ?? '0';
  } catch (error) {
    log(`balance check failed: ${(error as Error).message.slice(0, 200)}`);
  }
  return {
    deducted: total,
    balancesChecked: Number(checked),
    balancesExact: mismatches[0]?.[0] === '0' && total.equals(expectedTotal),
  };
}

async function main(): Promise<void> {
  const { flags } = parseArgs(process.argv.slice(2));
  const customerCount = intFlag(flags, '--customers', 100_000, 10, 1_000_000);
  const windows = intFlag(flags, '--windows', 2, 1, 24);
  // Days of settled minute history before the first window: run time must not grow with it (issue 17).
  const historyDays = intFlag(flags, '--history', 0, 0, 3660);
  const backend = flags.get('--backend') ?? 'chdb';
  if (backend !== 'chdb' && backend !== 'server') throw new RangeError('--backend must be chdb or server');
  const dir = process.env.BENCH_KEEP_DIR ?? mkdtempSync(join(tmpdir(), 'drawdown-bench-settlement-'));
  let server: ClickHouseServerProcess | undefined;
  let store: Store | undefined;
  try {
    if (backend === 'server') server = await ClickHouseServerProcess.start({ dir: join(dir, 'clickhouse') });
    store = await openStore(server ? server.url : `chdb:${join(dir, 'chdb')}`);
    await ensureSchema(store);
    const customers = Array.from({ length: customerCount }, (_, i) => `cust-${String(i).padStart(7, '0')}`);
    const catalog = benchCatalog(customers);
    log(
      `${customerCount.toLocaleString('en')} customers × 3 meters, ${catalog.subscriptions.length.toLocaleString('en')} subscriptions, ClickHouse: ${backend}`,
    );
    let t = Date.now();
    await fillPurchases(store, customers);
    log(`purchases written (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    t = Date.now();
    const seqBase = await fillHistory(store, customers, historyDays);
    if (historyDays > 0)
      log(
        `${historyDays} days of settled history written: ${(customerCount * 3 * historyDays).toLocaleString('en')} rows (${((Date.now() - t) / 1000).toFixed(1)} s)`,
      );
    const runs: RunFigures[] = [];
    for (let window = 0; window < windows; window++) {
      t = Date.now();
      await fillUsage(store, customers, window, seqBase);
      log(
        `window ${window + 1}: ${(customerCount * 3).toLocaleString('en')} usage rows written (${((Date.now() - t) / 1000).toFixed(1)} s)`,
      );
      const untilSec = firstWindowSec + (window + 1) * windowSec;
      const phases: Record<string, number> = {};
      let last = Date.now();
      const started = last;
      const report = await settle(store, catalog, {
        untilSec,
        nowSec: untilSec + 60 + window,
        onPhase: (phase: string) => {
          const now = Date.now();
          phases[phase] = Number(((now - last) / 1000).toFixed(2));
          log(`  run ${window + 1}: ${phase} ${phases[phase]} s`);
          last = now;
        },
      });
      const seconds = (Date.now() - started) / 1000;
      let expected = money(0);
      for (let i = 0; i < customerCount; i++) expected = expected.plus(expectedCost(i, window));
      let reported = money(0);
      for (const r of Object.values(report.customers))
        for (const amount of Object.values(r.deducted)) reported = reported.plus(amount);
      const check = await verify(store, report.runId, expected);
      const exact = check.balancesExact && reported.equals(expected);
      runs.push({
        window: window + 1,
        seconds: Number(seconds.toFixed(2)),
        phasesS: phases,
        accounts: Object.keys(report.customers).length,
        entriesPosted: report.entriesPosted,
        totalRated: formatAmount(expected),
        totalDeducted: formatAmount(check.deducted),
        balancesChecked: check.balancesChecked,
        exact,
      });
      log(
        `run ${window + 1}: ${seconds.toFixed(2)} s, ${report.entriesPosted.toLocaleString('en')} entries; rated ${formatAmount(expected)}, deducted ${formatAmount(check.deducted)}, ${check.balancesChecked} balances checked: ${exact ? 'exact' : 'MISMATCH'}`,
      );
    }
    const results = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, node: process.version },
      backend,
      customers: customerCount,
      historyDays,
      meters: 3,
      targetS: 30,
      runs,
      exact: runs.every((r) => r.exact),
    };
    const resultsDir = join(repoRoot, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, 'settlement-latest.json'), `${JSON.stringify(results, null, 2)}\n`);
    const md = [
      `# Settlement benchmark ${results.date}`,
      '',
      `${results.machine.cpus} CPUs, Node ${results.machine.node}; ClickHouse: ${backend}. ${customerCount.toLocaleString('en')} customers × 3 meters (package, unit by dimension, graduated tiers), one purchase each, a monthly grant starting in the first window for every other customer${historyDays > 0 ? `, after ${historyDays} days of settled history (one row per customer, meter and day)` : ''}. Target: one run under ${results.targetS} s.`,
      '',
      '| run | seconds | entries posted | accounts | total rated | total deducted | balances = Σ entries | exact |',
      '|---:|---:|---:|---:|---:|---:|---:|---|',
      ...runs.map(
        (r) =>
          `| ${r.window} | ${r.seconds} | ${r.entriesPosted.toLocaleString('en')} | ${r.accounts.toLocaleString('en')} | ${r.totalRated} | ${r.totalDeducted} | ${r.balancesChecked.toLocaleString('en')} | ${r.exact} |`,
      ),
      '',
      'Phases (s): ' +
        runs
          .map(
            (r) =>
              `run ${r.window}: ${Object.entries(r.phasesS)
                .map(([k, v]) => `${k} ${v}`)
                .join(', ')}`,
          )
          .join('; '),
      '',
    ].join('\n');
    writeFileSync(join(resultsDir, 'settlement-latest.md'), md);
    appendHistory(
      join(resultsDir, 'history.md'),
      `| ${results.date.slice(0, 16)} | ${backend} | ${customerCount}${historyDays > 0 ? `, ${historyDays} d history` : ''} | ${runs.map((r) => r.seconds).join(' / ')} | ${runs.map((r) => r.entriesPosted).join(' / ')} | ${results.exact} |`,
    );
    process.stdout.write(`\n${md}`);
    if (!results.exact) process.exitCode = 1;
  } finally {
    await store?.close();
    await server?.stop();
    if (process.env.BENCH_KEEP_DIR === undefined) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * history.md ends with the gateway bench's table, which `npm run bench`
 * appends to; the settlement table sits above it, so both keep appending
 * rows to their own table.
 */
function appendHistory(path: string, row: string): void {
  const header = '## Settlement (`npm run bench:settlement`)';
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmark history\n';
  if (!text.includes(header)) {
    const table = `${header}\n\nOne line per run: seconds per settlement run (first / steady-state window), entries posted, totals exact.\n\n| date (UTC) | ClickHouse | customers | run s | entries | totals exact |\n|---|---|---:|---|---|---|\n${row}\n\n`;
    // Right under the title, before the gateway section's introduction and table.
    const title = text.indexOf('\n\n');
    writeFileSync(
      path,
      title < 0
        ? `${text}\n${table}`
        : `${text.slice(0, title + 2)}${table}## Gateway and end to end (\`npm run bench\`)\n\n${text.slice(title + 2)}`,
    );
    return;
  }
  const start = text.indexOf(header);
  const end = text.indexOf('\n\n', text.indexOf('|---|', start));
  if (end < 0) appendFileSync(path, `${row}\n`);
  else writeFileSync(path, `${text.slice(0, end)}\n${row}${text.slice(end)}`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:settlement failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
