/**
 * Settlement starts each run from the credit snapshots the previous run
 * wrote instead of replaying the ledger. Given the same usage, purchases
 * (some dated back into settled windows, some posted while runs were
 * going on) and subscriptions, when one ClickHouse settles with snapshots
 * and another throws every snapshot away before each run (so every account
 * is rebuilt from its whole ledger), then both ledgers are identical, entry
 * for entry, and every balance is the sum of its entries.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCatalog } from '../catalog/model.js';
import { openStore } from '../shared/clickhouse/open.js';
import { ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteColumns } from '../shared/clickhouse/usage-minute.js';
import type { Store } from '../shared/clickhouse/store.js';
import { formatAmount, money, parseStoredDecimal } from '../shared/money.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { purchasePackage } from '../settlement/purchases.js';
import { settle } from '../settlement/settle.js';
import { startClickHouse, tempDir, type ClickHouseTarget } from './harness.js';

const daySec = 86_400;
const startSec = Date.parse('2026-01-01T00:00:00Z') / 1000;

const catalog = parseCatalog({
  credit_units: [{ id: 'credits', name: 'Credits', allowed_negative_balance: '30' }],
  meters: [
    { key: 'tokens', aggregation: 'sum' },
    { key: 'calls', aggregation: 'count' },
  ],
  rate_card: {
    versions: [
      {
        version: 'v1',
        effective_from: '2025-12-01T00:00:00Z',
        rows: [
          { meter: 'tokens', unit: 'credits', price: { model: 'package', amount: '5', size: '1000000' } },
          {
            meter: 'calls',
            unit: 'credits',
            price: {
              model: 'graduated',
              tiers: [
                { up_to: '50', amount: '0.5' },
                { up_to: null, amount: '0.1' },
              ],
            },
          },
        ],
      },
    ],
  },
  packages: [{ id: 'credits-40', price: { currency: 'USD', amount: '40' }, credits: '40', unit: 'credits' }],
  plans: [
    {
      id: 'pro',
      billing: 'monthly',
      versions: [
        {
          version: 1,
          grants: [
            {
              id: 'monthly',
              unit: 'credits',
              quantity: '100',
              frequency: 'monthly',
              rollover: { kind: 'capped', percent: '50', maximum: '30' },
            },
          ],
        },
        {
          version: 2,
          grants: [
            {
              id: 'daily',
              unit: 'credits',
              quantity: '4',
              frequency: 'daily',
              rollover: { kind: 'time_limited', duration: 'P2D' },
            },
          ],
        },
      ],
    },
  ],
  subscriptions: [
    {
      id: 's-capped',
      customer: 'capped',
      plan: 'pro',
      plan_version: 1,
      start: '2026-01-03T00:00:00Z',
      changes: [{ effective_from: '2026-02-03T00:00:00Z', overrides: { monthly: { quantity: '60' } } }],
    },
    { id: 's-daily', customer: 'daily', plan: 'pro', plan_version: 2, start: '2026-01-01T00:00:00Z' },
  ],
});

const runEnds = [1, 2, 5, 9, 10, 17, 24, 31, 33, 34, 40, 45].map((d) => startSec + d * daySec);
const callsInRun = (i: number): number => (i % 3) + 1;

/** Each day's calls, as `play` sends them. */
function callsPerDay(): Map<number, number> {
  const out = new Map<number, number>();
  let from = startSec;
  runEnds.forEach((until, i) => {
    for (let at = from; at < until; at += daySec) out.set(at, callsInRun(i));
    from = until;
  });
  return out;
}

/** One scenario, step by step: usage each day, purchases between runs, runs of uneven length. */
async function play(store: Store, dropSnapshots: boolean): Promise<void> {
  let seq = 0;
  const usage = async (rows: [string, string, number, string][]): Promise<void> => {
    seq++;
    await store.insert(
      'usage_minute',
      usageMinuteColumns,
      encodeTsv(
        rows.map(([customer, meter, atSec, quantity]) => [
          customer,
          meter,
          '{}',
          tsvDateTime(atSec),
          quantity,
          '1',
          '0',
          String(seq),
          tsvDateTime(atSec),
        ]),
      ),
    );
  };
  const cuts = runEnds;
  let settledSec = startSec;
  for (const [i, untilSec] of cuts.entries()) {
    const rows: [string, string, number, string][] = [];
    for (let at = settledSec; at < untilSec; at += daySec) {
      for (const customer of ['capped', 'daily', 'buyer']) {
        rows.push([customer, 'tokens', at + 3_600 * ((i % 5) + 1), String(100_000 + i * 50_001)]);
        rows.push([customer, 'calls', at + 7_200, String(callsInRun(i))]);
      }
    }
    await usage(rows);
    // Late usage: a minute of the window settled last, committed only now.
    if (i > 0) await usage([['buyer', 'tokens', settledSec - 120, '30000000']]);
    // A purchase dated back into the settled window, posted after the last run started (at settledSec + 60).
    if (i % 3 === 1)
      await purchasePackage(store, catalog, {
        customer: i % 2 === 0 ? 'buyer' : 'capped',
        packageId: 'credits-40',
        idempotencyKey: `p-${i}`,
        nowSec: settledSec + 90,
        effectiveAtSec: settledSec - daySec / 2,
      });
    if (dropSnapshots) {
      await store.command('DROP TABLE IF EXISTS credit_snapshots');
      await ensureSchema(store);
    }
    await settle(store, catalog, { untilSec, nowSec: untilSec + 60 });
    settledSec = untilSec;
  }
}

const ledgerSql = `SELECT entry_id, any(customer), any(kind), any(amount), any(block_id), toUnixTimestamp(any(effective_at)), toUnixTimestamp(any(expires_at)) FROM ledger_entries GROUP BY entry_id ORDER BY entry_id`;

describe('credit snapshots', () => {
  const dir = tempDir('credit-snapshots');
  let server: ClickHouseTarget;
  let withSnapshots: Store;
  let replayed: Store;

  beforeAll(async () => {
    server = await startClickHouse('server', dir.path);
    withSnapshots = await openStore(`chdb:${dir.path}/chdb`);
    replayed = await openStore(server.url);
    for (const store of [withSnapshots, replayed]) await ensureSchema(store);
    await play(withSnapshots, false);
    await play(replayed, true);
  }, 120_000);

  afterAll(async () => {
    await withSnapshots?.close();
    await replayed?.close();
    await server?.stop();
    dir.remove();
  });

  it('given snapshots or a full ledger replay, then every run posts the very same entries', async () => {
    const a = await withSnapshots.query(ledgerSql);
    const b = await replayed.query(ledgerSql);
    // The scenario reaches every rule: capped rollover, expiry, debt repaid from new blocks, late usage.
    expect(new Set(a.map((r) => r[2]))).toEqual(new Set(['grant', 'purchase', 'usage', 'expiry', 'adjustment']));
    // 18.16 prints "1.500000000", chDB "1.5": compare amounts as decimals.
    const normal = (rows: string[][]) =>
      rows.map(([id, customer, kind, amount, block, at, expires]) =>
        [id, customer, kind, formatAmount(parseStoredDecimal(amount!)), block, at, expires].join(' '),
      );
    expect(normal(a)).toEqual(normal(b));
  });

  it('given the runs, then each account balance carried forward equals the sum of its ledger entries', async () => {
    const sums = await withSnapshots.query(
      `SELECT customer, unit, sum(amount) FROM (SELECT entry_id, any(customer) AS customer, any(unit) AS unit, any(amount) AS amount FROM ledger_entries GROUP BY entry_id) GROUP BY customer, unit ORDER BY customer, unit`,
    );
    const carried = await withSnapshots.query(
      `SELECT customer, unit, argMax(balance, as_of) FROM credit_snapshots GROUP BY customer, unit ORDER BY customer, unit`,
    );
    const normal = (rows: string[][]) =>
      rows.map(([customer, unit, amount]) => [customer, unit, formatAmount(parseStoredDecimal(amount!))]);
    expect(normal(carried)).toEqual(normal(sums));
    expect(sums.map((r) => r[0])).toEqual(['buyer', 'capped', 'daily']);
  });

  it('given graduated tiers and a month cut into many runs, then each month costs what its total costs in one piece', async () => {
    const months = new Map<string, number>();
    for (const [at, calls] of callsPerDay()) {
      const month = new Date(at * 1000).toISOString().slice(0, 7);
      months.set(month, (months.get(month) ?? 0) + calls);
    }
    // Tiers: 0.5 each up to 50 calls in the month, 0.1 each above.
    const tiered = (n: number) =>
      money(Math.min(n, 50))
        .times('0.5')
        .plus(money(Math.max(n - 50, 0)).times('0.1'));
    const rows = await withSnapshots.query(
      `SELECT formatDateTime(effective_at, '%Y-%m') AS month, sum(amount) FROM (SELECT entry_id, any(amount) AS amount, any(effective_at) AS effective_at, any(meter) AS meter, any(kind) AS kind, any(customer) AS customer FROM ledger_entries GROUP BY entry_id) WHERE meter = 'calls' AND kind = 'usage' AND customer = 'daily' GROUP BY month ORDER BY month`,
    );
    expect(rows.map(([month, sum]) => [month, formatAmount(parseStoredDecimal(sum!).negated())])).toEqual(
      [...months].map(([month, n]) => [month, formatAmount(tiered(n))]),
    );
    expect(months.get('2026-01')).toBeGreaterThan(50);
  });

  it('given a settled window, when it is settled again exactly, then nothing new is posted', async () => {
    const again = await settle(withSnapshots, catalog, {
      fromSec: startSec + 9 * daySec,
      untilSec: startSec + 10 * daySec,
      nowSec: startSec + 60 * daySec,
    });
    expect(again.entriesPosted).toBe(0);
    expect(again.entriesAlreadyPosted).toBeGreaterThan(0);
  });
});
