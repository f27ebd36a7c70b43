/**
 * drawdown's metrics as an operator sees them: a real Prometheus (Debian's
 * `prometheus`) scrapes a gateway, two raters owning disjoint partitions and
 * the settlement service, all on a real nats-server and clickhouse-server.
 * A known workload goes through, is settled, and Prometheus's HTTP API must
 * show the same numbers: events accepted, batches by outcome, rater commits
 * and lag, ClickHouse inserts, ledger entries and credits deducted by unit.
 * docs/metrics.md must name exactly the metrics /metrics serves, and every
 * query of the Grafana dashboard must run and name only real metrics.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { PrometheusServerProcess, type PromSample } from './prometheus-server.js';
import {
  api,
  postEvents,
  repoRoot,
  startClickHouse,
  startNats,
  streamState,
  tempDir,
  testConfig,
  waitForStreamDrained,
  type ClickHouseTarget,
} from './harness.js';

const scrapeIntervalMs = 1_000;
// Long enough for several scrapes and the rater's lag refresh; only a failing test waits this long.
const settleTimeoutMs = 60_000;

describe('metrics scraped by a real Prometheus', () => {
  const dir = tempDir('prometheus');
  let nats: NatsServerProcess;
  let clickhouse: ClickHouseTarget;
  let prometheus: PrometheusServerProcess;
  const running: Running[] = [];
  let gateway: Running;
  let settlementService: Running;
  const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;
  const customers = ['acme', 'globex', 'initech', 'umbrella'];
  // Each customer sends a batch of (index + 2) Nano Banana 1K images at 3 credits each.
  const sent = customers.map((customer, i) => ({ customer, events: i + 2 }));
  const eventsSent = sent.reduce((n, s) => n + s.events, 0);
  let report: { entries_posted: number; customers: Record<string, { deducted: Record<string, string> }> };
  let lastSequence: number;

  /** Polls Prometheus until `expr` satisfies `ok` (scrapes are periodic); returns the last answer either way. */
  async function eventually(expr: string, ok: (samples: PromSample[]) => boolean): Promise<PromSample[]> {
    const deadline = Date.now() + settleTimeoutMs;
    let samples = await prometheus.query(expr);
    while (!ok(samples) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      samples = await prometheus.query(expr);
    }
    return samples;
  }
  const total = (samples: PromSample[]): number => samples.reduce((sum, s) => sum + s.value, 0);

  beforeAll(async () => {
    nats = await startNats(dir.path);
    clickhouse = await startClickHouse('server', dir.path);
    const base = { natsUrl: nats.url, clickhouseUrl: clickhouse.url, partitions: 2 };
    gateway = await startDrawdown(testConfig(base), { ingest: true, rater: false, settlement: false });
    running.push(gateway);
    for (const owned of ['0', '1'])
      running.push(
        await startDrawdown(testConfig({ ...base, raterPartitions: owned }), {
          ingest: false,
          rater: true,
          settlement: false,
        }),
      );
    settlementService = await startDrawdown(testConfig(base), { ingest: false, rater: false, settlement: true });
    running.push(settlementService);
    const jobs = ['drawdown-ingest', 'drawdown-rater', 'drawdown-rater', 'drawdown-settlement'];
    prometheus = await PrometheusServerProcess.start({
      dir: `${dir.path}/prometheus`,
      scrapeIntervalMs,
      targets: running.map((r, i) => ({ address: new URL(r.url!).host, job: jobs[i]! })),
    });

    for (const { customer } of sent) {
      const bought = await api(settlementService.url!, 'POST', `/v1/customers/${customer}/purchases`, {
        package: 'credits-100',
        effective_at: new Date(atMs - 60_000).toISOString(),
      });
      expect(bought.status).toBe(201);
    }
    for (const { customer, events } of sent) {
      const batch = Array.from({ length: events }, (_, i) => ({
        id: `${customer}-${i}`,
        customer,
        meter: 'images',
        quantity: 1,
        timestamp: atMs + i * 1000,
        dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
      }));
      expect((await postEvents(gateway.url!, batch, { json: customer === 'acme' })).status).toBe(202);
    }
    // One refused batch, to be counted by outcome and not as events.
    expect(
      (await postEvents(gateway.url!, [{ id: 'bad', customer: 'acme', meter: 'no.such.meter', timestamp: atMs }]))
        .status,
    ).toBe(422);
    await waitForStreamDrained(nats.url);
    lastSequence = (await streamState(nats.url)).lastSeq;
    const settled = await api(settlementService.url!, 'POST', '/v1/settlements', {
      until: new Date(atMs + 5 * 60_000).toISOString(),
    });
    expect(settled.status).toBe(200);
    report = settled.body;
  });

  afterAll(async () => {
    await prometheus?.stop();
    for (const r of running.reverse()) await r.stop();
    await clickhouse?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('given four drawdown processes, when Prometheus scrapes them, then every target is up with process metrics', async () => {
    const up = await eventually('up', (s) => s.length === 4 && s.every((x) => x.value === 1));
    expect(up.map((s) => s.value)).toEqual([1, 1, 1, 1]);
    const cpu = await eventually('drawdown_process_cpu_seconds_total', (s) => s.length === 4);
    expect(new Set(cpu.map((s) => s.metric.job))).toEqual(
      new Set(['drawdown-ingest', 'drawdown-rater', 'drawdown-settlement']),
    );
    expect(await eventually('drawdown_nodejs_heap_size_used_bytes', (s) => s.length === 4)).toHaveLength(4);
  });

  it('given the known batches, when scraped, then events and batch sizes equal what was sent and the refused batch is counted by its code', async () => {
    expect(total(await eventually('drawdown_ingest_events_total', (s) => total(s) === eventsSent))).toBe(eventsSent);
    expect(total(await eventually('drawdown_ingest_batch_size_count', (s) => total(s) === sent.length))).toBe(
      sent.length,
    );
    expect(total(await eventually('drawdown_ingest_batch_size_sum', (s) => total(s) === eventsSent))).toBe(eventsSent);
    expect(
      total(await eventually('drawdown_ingest_batches_total{outcome="accepted"}', (s) => total(s) === sent.length)),
    ).toBe(sent.length);
    expect(
      total(await eventually('drawdown_ingest_batches_total{outcome="event_invalid"}', (s) => total(s) === 1)),
    ).toBe(1);
    // Every POST /v1/events is timed, the refused one too.
    expect(
      total(await eventually('drawdown_ingest_request_duration_seconds_count', (s) => total(s) === sent.length + 1)),
    ).toBe(sent.length + 1);
  });

  it('given both raters drained the stream, when scraped, then they aggregated every event, committed the last sequence and show no lag', async () => {
    expect(total(await eventually('drawdown_rater_events_total', (s) => total(s) === eventsSent))).toBe(eventsSent);
    const committed = await eventually('max(drawdown_rater_committed_sequence)', (s) => s[0]?.value === lastSequence);
    expect(committed[0]?.value).toBe(lastSequence);
    // One lag series per owned partition, each from its own rater, all zero once drained.
    const lag = await eventually('drawdown_rater_lag_messages', (s) => s.length === 2 && s.every((x) => x.value === 0));
    expect(lag.map((s) => [s.metric.partition, s.metric.instance !== undefined, s.value]).sort()).toEqual([
      ['0', true, 0],
      ['1', true, 0],
    ]);
    expect(new Set(lag.map((s) => s.metric.instance)).size).toBe(2);
    expect(
      total(await eventually('drawdown_clickhouse_insert_duration_seconds_count', (s) => total(s) >= 1)),
    ).toBeGreaterThanOrEqual(1);
    expect(total(await eventually('drawdown_clickhouse_insert_errors_total', (s) => s.length === 2))).toBe(0);
  });

  it('given the settlement run, when scraped, then entries posted and credits deducted by unit equal the settlement report', async () => {
    const deducted = new Map<string, number>();
    for (const customer of Object.values(report.customers)) {
      for (const [unit, amount] of Object.entries(customer.deducted))
        deducted.set(unit, (deducted.get(unit) ?? 0) + Number(amount));
    }
    // The report itself agrees with the workload: 3 credits an image.
    expect(Object.fromEntries(deducted)).toEqual({ credits: 3 * eventsSent });
    const byUnit = await eventually('drawdown_settlement_credits_deducted_total', (s) => total(s) === 3 * eventsSent);
    expect(Object.fromEntries(byUnit.map((s) => [s.metric.unit, s.value]))).toEqual(Object.fromEntries(deducted));
    expect(report.entries_posted).toBeGreaterThan(0);
    expect(
      total(await eventually('drawdown_settlement_entries_posted_total', (s) => total(s) === report.entries_posted)),
    ).toBe(report.entries_posted);
    expect(total(await eventually('drawdown_settlement_run_duration_seconds_count', (s) => total(s) === 1))).toBe(1);
  });

  /** Metric name → type, from the /metrics text of every running process. */
  async function servedMetrics(): Promise<Map<string, string>> {
    const served = new Map<string, string>();
    for (const r of running) {
      const text = await (await fetch(`${r.url}/metrics`)).text();
      for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) served.set(name!, type!);
    }
    return served;
  }

  it('given docs/metrics.md, when compared with what /metrics serves, then every metric is documented once with its type, and nothing more', async () => {
    const served = await servedMetrics();
    const doc = readFileSync(join(repoRoot, 'docs', 'metrics.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `(drawdown_[a-z0-9_]+)` \| (\w+) \|/gm)].map(
      ([, name, type]) => [name!, type!] as const,
    );
    expect(new Set(rows.map(([name]) => name)).size).toBe(rows.length);
    expect(new Map(rows)).toEqual(served);
  });

  it('given the Grafana dashboard, when its queries run on Prometheus, then each succeeds, names only served metrics, and all but the 5xx panel show data', async () => {
    const served = await servedMetrics();
    const dashboard = JSON.parse(
      readFileSync(join(repoRoot, 'deploy', 'grafana', 'drawdown-dashboard.json'), 'utf8'),
    ) as {
      panels: { title: string; targets?: { expr: string }[] }[];
      templating: { list: { name: string; allValue?: string }[] };
    };
    const allValue = (name: string): string => dashboard.templating.list.find((v) => v.name === name)!.allValue!;
    const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    expect(queries.length).toBeGreaterThan(15);
    const base = (name: string): string => name.replace(/_(bucket|sum|count)$/, '');
    for (const { panel, expr } of queries) {
      for (const [name] of expr.matchAll(/\bdrawdown_[a-z0-9_]+/g))
        expect({ panel, metric: served.has(name) || served.has(base(name)) ? 'served' : name }).toEqual({
          panel,
          metric: 'served',
        });
      // Grafana's $__rate_interval is at least four scrape intervals; one minute covers it here.
      // $job and $instance as the dashboard opens: "All", whose value is the variables' allValue.
      // A rate needs two scrapes of a series, so data is waited for; a query Prometheus refuses throws at once.
      const query = expr
        .replaceAll('$__rate_interval', '1m')
        .replaceAll('$job', allValue('job'))
        .replaceAll('$instance', allValue('instance'));
      if (panel.includes('5xx')) await prometheus.query(query);
      else
        expect({ panel, expr, empty: (await eventually(query, (s) => s.length > 0)).length === 0 }).toEqual({
          panel,
          expr,
          empty: false,
        });
    }
  });

  it("given the dashboard's job and instance variables, when resolved as Grafana does on Prometheus, then they list every scraped process", async () => {
    const dashboard = JSON.parse(
      readFileSync(join(repoRoot, 'deploy', 'grafana', 'drawdown-dashboard.json'), 'utf8'),
    ) as { templating: { list: { name: string; definition?: string; allValue?: string }[] } };
    const variable = (name: string) => dashboard.templating.list.find((v) => v.name === name)!;
    const values = async (name: string, expected: number): Promise<string[]> => {
      // label_values(<selector>, <label>): the label's values over the series the selector matches ($job: "All").
      const [, selector, label] = /^label_values\((.+), (\w+)\)$/.exec(variable(name).definition!)!;
      const expr = `group by (${label}) (${selector!.replaceAll('$job', variable('job').allValue!)})`;
      const samples = await eventually(expr, (s) => s.length >= expected);
      return samples.map((s) => s.metric[label!]!).sort();
    };
    expect(await values('job', 3)).toEqual(['drawdown-ingest', 'drawdown-rater', 'drawdown-settlement']);
    expect(await values('instance', running.length)).toEqual(running.map((r) => new URL(r.url!).host).sort());
  });
});
