/**
 * A settlement run's report: what it priced, deducted, granted, expired and
 * closed per customer, as the API and CLI show it (snake_case) and as
 * settlement_runs keeps it (bounded).
 */
import type { Decimal } from 'decimal.js';
import { formatAmount, money } from '../shared/money.js';
import { statementJson, type Statement } from './statement.js';
import { outstandingJson, type OutstandingJson, type OutstandingLine } from './unpriced.js';

export interface SettlementReport {
  runId: string;
  fromSec: number;
  untilSec: number;
  entriesPosted: number;
  entriesAlreadyPosted: number;
  /** True when this report is of an interrupted run that this call finished. */
  resumed?: boolean;
  /** The catalog revision the run priced with (absent when the catalog came from a file, not the store). */
  catalogRevision?: number;
  /** Months of credit snapshots dropped after the run (retention). */
  snapshotMonthsDropped?: number;
  /** Flush months (YYYYMM) of minute usage retention dropped after the run. */
  usageMonthsDropped?: number[];
  customers: Record<string, CustomerReport>;
}

export interface CustomerReport {
  rated: {
    meter: string;
    dimensions: string;
    rateVersion: string;
    unit: string;
    quantity: string;
    cost: string;
    late: boolean;
  }[];
  deducted: Record<string, string>;
  unrated: { meter: string; dimensions: string; quantity: string; reason: string }[];
  /** Credits used past the allowed negative balance, per unit: posted, and the customer is over limit. */
  overLimit: Record<string, string>;
  granted?: Record<string, string>;
  expired?: Record<string, string>;
  carried?: Record<string, string>;
  /** Credits billed as overage, per unit. */
  overage?: Record<string, string>;
  /** Billing terms whose end lies in the run's window: closed by this run (settlement/statement.ts). */
  closedTerms?: Statement[];
  /** Usage earlier runs could not price that this run priced and billed (settlement/unpriced.ts). */
  unpricedBilled?: { line: OutstandingLine; rateVersion: string; unit: string; cost: string }[];
  /** Unpriced usage still outstanding after this run: earlier runs' lines no rate prices yet, and this run's. */
  unpricedOutstanding?: OutstandingLine[];
}

/** Unpriced lines still outstanding after the run, over all customers. */
export function unpricedOutstandingCount(report: SettlementReport): number {
  let n = 0;
  for (const r of Object.values(report.customers)) n += r.unpricedOutstanding?.length ?? 0;
  return n;
}

/**
 * What settlement_runs keeps of a report: all of it up to
 * `storedReportCustomersMax` customers, else totals per unit — a run over
 * 100,000 customers would otherwise store one ~50 MB row. The ledger holds
 * every detail either way.
 */
export const storedReportCustomersMax = 1_000;

export function storedReport(report: SettlementReport): Record<string, unknown> {
  const customers = Object.values(report.customers);
  if (customers.length <= storedReportCustomersMax) return reportJson(report);
  const totals: Record<string, Record<string, Decimal>> = {};
  for (const r of customers) {
    for (const [field, byUnit] of [
      ['deducted', r.deducted],
      ['over_limit', r.overLimit],
      ['granted', r.granted],
      ['expired', r.expired],
      ['carried', r.carried],
      ['overage', r.overage],
    ] as const) {
      for (const [unit, amount] of Object.entries(byUnit ?? {})) {
        const t = (totals[unit] ??= {});
        t[field] = (t[field] ?? money(0)).plus(amount);
      }
    }
  }
  return {
    ...reportHeader(report),
    customer_count: customers.length,
    unrated_lines: customers.reduce((n, r) => n + r.unrated.length, 0),
    unpriced_outstanding_lines: unpricedOutstandingCount(report),
    closed_terms: customers.reduce((n, r) => n + (r.closedTerms?.length ?? 0), 0),
    totals: Object.fromEntries(
      Object.entries(totals).map(([unit, t]) => [
        unit,
        Object.fromEntries(Object.entries(t).map(([k, v]) => [k, formatAmount(v)])),
      ]),
    ),
  };
}

/** What every form of a report starts with: the run, its window and its catalog revision. */
function reportHeader(report: SettlementReport): Record<string, unknown> {
  return {
    run_id: report.runId,
    from: new Date(report.fromSec * 1000).toISOString(),
    until: new Date(report.untilSec * 1000).toISOString(),
    entries_posted: report.entriesPosted,
    entries_already_posted: report.entriesAlreadyPosted,
    resumed: report.resumed === true,
    catalog_revision: report.catalogRevision ?? null,
  };
}

/** The report as the HTTP API and the CLI show it: snake_case, instants as ISO-8601. */
export function reportJson(report: SettlementReport): Record<string, unknown> {
  return {
    ...reportHeader(report),
    customers: Object.fromEntries(
      Object.entries(report.customers).map(([customer, r]) => [
        customer,
        {
          rated: r.rated.map((x) => ({
            meter: x.meter,
            dimensions: JSON.parse(x.dimensions),
            rate_version: x.rateVersion,
            unit: x.unit,
            quantity: x.quantity,
            cost: x.cost,
            late: x.late,
          })),
          deducted: r.deducted,
          unrated: r.unrated.map((x) => ({
            meter: x.meter,
            dimensions: JSON.parse(x.dimensions),
            quantity: x.quantity,
            reason: x.reason,
          })),
          over_limit: r.overLimit,
          granted: r.granted ?? {},
          expired: r.expired ?? {},
          carried: r.carried ?? {},
          overage: r.overage ?? {},
          closed_terms: (r.closedTerms ?? []).map(statementJson),
          unpriced_billed: (r.unpricedBilled ?? []).map((b) => ({
            ...outstandingJson(b.line),
            rate_version: b.rateVersion,
            unit: b.unit,
            cost: b.cost,
          })),
          unpriced_outstanding: (r.unpricedOutstanding ?? []).map((line) => ({
            ...outstandingJson(line),
            reason: line.reason,
          })),
        },
      ]),
    ),
  };
}

/** Outstanding unpriced lines named per warning log line: a long list is several lines, each with the total. */
export const unpricedLinesPerLog = 50;

/** Outstanding after a run, as the warning logs name them: with the customer, meter, dimensions, since, reason. */
export function unpricedOutstandingLines(
  report: SettlementReport,
): ({ customer: string; reason: string } & OutstandingJson)[] {
  return Object.entries(report.customers).flatMap(([customer, r]) =>
    (r.unpricedOutstanding ?? []).map((line) => ({ customer, ...outstandingJson(line), reason: line.reason })),
  );
}

/**
 * What a run logs as warnings about outstanding unpriced usage (SPEC §4): every line named, `unpricedLinesPerLog`
 * to a log line, each log line with the run, the total and the position of its first line.
 */
export function unpricedWarnings(
  report: SettlementReport,
): { runId: string; total: number; first: number; lines: ReturnType<typeof unpricedOutstandingLines> }[] {
  const lines = unpricedOutstandingLines(report);
  const out = [];
  for (let i = 0; i < lines.length; i += unpricedLinesPerLog)
    out.push({
      runId: report.runId,
      total: lines.length,
      first: i + 1,
      lines: lines.slice(i, i + unpricedLinesPerLog),
    });
  return out;
}

export const unpricedWarningMessage =
  'unpriced usage outstanding: no rate prices it, nothing is posted for it until one does';
