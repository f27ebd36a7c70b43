/**
 * Credit snapshots are bounded: the table is partitioned by month of as_of,
 * and after each run settlement drops the months older than the newest
 * completed run's end minus DRAWDOWN_SNAPSHOT_RETENTION_DAYS. An account
 * whose snapshots were dropped is rebuilt from its ledger, so it settles
 * exactly as before. A table from before partitioning is migrated at start.
 * On chDB and on clickhouse-server 18.16.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCatalog } from '../catalog/model.js';
import { openStore } from '../shared/clickhouse/open.js';
import { creditSnapshotColumns, ensureSchema } from '../shared/clickhouse/schema.js';
import { usageMinuteColumns } from '../shared/clickhouse/usage-minute.js';
import type { Store } from '../shared/clickhouse/store.js';
import { formatAmount, parseStoredDecimal } from '../shared/money.js';
import { encodeTsv, tsvDateTime } from '../shared/tsv.js';
import { purchasePackage } from '../settlement/purchases.js';
import { settle } from '../settlement/settle.js';
import { type SettlementReport } from '../settlement/report.js';
import { startClickHouse, tempDir, type ClickHouseTarget } from './harness.js';

const daySec = 86_400;
const sec = (iso: string): number => Date.parse(iso) / 1000;
const retentionDays = 35;

const catalog = parseCatalog({
  credit_units: [{ id: 'credits', name: 'Credits' }],
  meters: [{ key: 'tokens', aggregation: 'sum' }],
  rate_card: {
    versions: [
      {
        version: 'v1',
        effective_from: '2025-12-01T00:00:00Z',
        rows: [{ meter: 'tokens', unit: 'credits', price: { model: 'unit', amount: '1' } }],
      },
    ],
  },
  packages: [{ id: 'credits-100', price: { currency: 'USD', amount: '100' }, credits: '100', unit: 'credits' }],
  plans: [],
  subscriptions: [],
});

/** The table as it was created before retention: no PARTITION BY. */
const unpartitioned = `CREATE TABLE credit_snapshots (customer String, unit String, as_of DateTime('UTC'), run_id String, inputs_before DateTime('UTC'), balance Decimal(38, 9), state String) ENGINE = ReplacingMergeTree ORDER BY (as_of, customer, unit)`;

describe.each(['chdb', 'server'] as const)('credit snapshot retention on %s', (backend) => {
  const dir = tempDir(`snapshot-retention-${backend}`);
  let clickhouse: ClickHouseTarget;
  let store: Store;
  let seq = 0;
  let legacyAfterMigration: string[][] = [];
  const monthsAfterRun: { untilSec: number; months: number[] }[] = [];
  const reports: SettlementReport[] = [];
  let purchaseId = '';

  const months = async (): Promise<number[]> =>
    (
      await store.query(
        "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = 'credit_snapshots' AND active ORDER BY partition",
      )
    ).map((r) => Number(r[0]));
  const usage = async (customer: string, atSec: number, tokens: string): Promise<void> => {
    seq++;
    await store.insert(
      'usage_minute',
      usageMinuteColumns,
      encodeTsv([[customer, 'tokens', '{}', tsvDateTime(atSec), tokens, '1', '0', String(seq), tsvDateTime(atSec)]]),
    );
  };

  beforeAll(async () => {
    clickhouse = await startClickHouse(backend, dir.path);
    store = await openStore(clickhouse.url);
    // A deployment from before retention: the old table with a snapshot in it.
    await store.command(unpartitioned);
    await store.insert(
      'credit_snapshots',
      creditSnapshotColumns,
      encodeTsv([
        [
          'legacy',
          'credits',
          tsvDateTime(sec('2025-12-01T00:00:00Z')),
          'run:0:1',
          tsvDateTime(sec('2025-12-01T00:00:00Z')),
          '7',
          '["0",[]]',
        ],
      ]),
    );
    await ensureSchema(store);
    legacyAfterMigration = await store.query(
      "SELECT customer, balance FROM credit_snapshots WHERE customer = 'legacy'",
    );

    // dormant buys 100 credits and uses 30 in January, then nothing until June; active uses 1 credit every day.
    purchaseId = (
      await purchasePackage(store, catalog, {
        customer: 'dormant',
        packageId: 'credits-100',
        idempotencyKey: 'jan',
        nowSec: sec('2026-01-02T00:00:00Z'),
        effectiveAtSec: sec('2026-01-02T00:00:00Z'),
      })
    ).entry.entryId;
    await usage('dormant', sec('2026-01-05T12:00:00Z'), '30');
    for (let untilSec = sec('2026-01-10T00:00:00Z'); untilSec <= sec('2026-06-29T00:00:00Z'); untilSec += 10 * daySec) {
      for (let at = untilSec - 10 * daySec; at < untilSec; at += daySec) await usage('active', at + 3_600, '1');
      if (untilSec === sec('2026-06-29T00:00:00Z')) await usage('dormant', untilSec - 2 * daySec, '20');
      reports.push(
        await settle(store, catalog, { untilSec, nowSec: untilSec + 60, snapshotRetentionDays: retentionDays }),
      );
      monthsAfterRun.push({ untilSec, months: await months() });
    }
  }, 120_000);

  afterAll(async () => {
    await store?.close();
    await clickhouse?.stop();
    dir.remove();
  });

  it('given a credit_snapshots table from before partitioning, then start-up migrates it to monthly partitions and keeps its rows', async () => {
    expect(
      legacyAfterMigration.map(([customer, balance]) => [customer, formatAmount(parseStoredDecimal(balance!))]),
    ).toEqual([['legacy', '7']]);
    const ddl = (await store.query('SHOW CREATE TABLE credit_snapshots'))[0]?.[0];
    expect(ddl).toMatch(/PARTITION BY toYYYYMM\(as_of\)/);
  });

  it('given runs over six months, then after every run no month older than the newest run end minus the retention remains', () => {
    expect(monthsAfterRun.length).toBeGreaterThan(15);
    for (const { untilSec, months } of monthsAfterRun) {
      const cutoff = new Date((untilSec - retentionDays * daySec) * 1000);
      const cutoffMonth = cutoff.getUTCFullYear() * 100 + cutoff.getUTCMonth() + 1;
      expect(
        months.every((m) => m >= cutoffMonth),
        `${new Date(untilSec * 1000).toISOString()}: ${months.join(', ')}`,
      ).toBe(true);
      // The month of the newest run's snapshots is always kept.
      const end = new Date(untilSec * 1000);
      expect(months).toContain(end.getUTCFullYear() * 100 + end.getUTCMonth() + 1);
    }
    // Bounded: after the last run (June 29; cutoff May 25) only May and June remain.
    expect(new Date(monthsAfterRun.at(-1)!.untilSec * 1000).toISOString()).toBe('2026-06-29T00:00:00.000Z');
    expect(monthsAfterRun.at(-1)!.months).toEqual([202605, 202606]);
    expect(reports.some((r) => (r.snapshotMonthsDropped ?? 0) > 0)).toBe(true);
  });

  it('given an account whose snapshots were all dropped, when it has usage again, then it is rebuilt from its ledger and draws from its purchase', async () => {
    const rows = await store.query(
      `SELECT count() FROM credit_snapshots WHERE customer = 'dormant' AND as_of < toDateTime(${sec('2026-06-29T00:00:00Z')}, 'UTC')`,
    );
    expect(rows[0]![0]).toBe('0');
    const june = reports.find((r) => r.untilSec === sec('2026-06-29T00:00:00Z'))!;
    expect(june.customers.dormant).toMatchObject({ deducted: { credits: '20' }, overLimit: {} });
    const entries = await store.query(
      `SELECT any(kind), any(amount), any(block_id) FROM ledger_entries WHERE customer = 'dormant' GROUP BY entry_id HAVING any(kind) = 'usage' ORDER BY toUnixTimestamp(any(effective_at))`,
    );
    // Both usages come out of the purchased block: 100 − 30 − 20 = 50 left.
    expect(entries.map(([kind, amount, block]) => [kind, formatAmount(parseStoredDecimal(amount!)), block])).toEqual([
      ['usage', '-30', purchaseId],
      ['usage', '-20', purchaseId],
    ]);
    const balance = (
      await store.query(`SELECT argMax(balance, as_of) FROM credit_snapshots WHERE customer = 'dormant'`)
    )[0]?.[0];
    expect(formatAmount(parseStoredDecimal(balance!))).toBe('50');
  });
});
