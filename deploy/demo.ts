/**
 * `npm run demo`: start the all-in-one on a fresh data directory, stream SPEC
 * §7 examples 1 and 2 through HTTP as MessagePack, settle, print balances and
 * ledger lines, and check the balances are exactly what the spec says.
 */
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { Packr } from 'msgpackr';
import type { Config } from '../shared/config.js';
import { startAllInOne } from './all-in-one.js';
import { example1, example2, type DemoEvent } from './workloads.js';

// A plain MessagePack encoder, as any client library would produce.
const packr = new Packr({ useRecords: false });

/** The parts of the API's answers the demo prints (docs/openapi.yaml has them whole). */
interface DemoEntry {
  kind: string;
  amount: string;
  meter: string;
  dimensions: Record<string, string> | null;
  quantity: string;
  source: string;
}
interface DemoBalance {
  units: { unit: string; settled: string; pending: string; available: string; display: string }[];
}

async function call(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<unknown> {
  const response = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${method} ${path} → ${response.status}: ${JSON.stringify(json)}`);
  return json;
}

async function sendEvents(base: string, events: DemoEvent[], key: string): Promise<number> {
  const response = await fetch(`${base}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/msgpack', 'idempotency-key': key },
    body: packr.pack(events),
  });
  const json = (await response.json()) as { accepted: number };
  if (response.status !== 202) throw new Error(`POST /v1/events → ${response.status}: ${JSON.stringify(json)}`);
  return json.accepted;
}

async function waitForUsage(base: string, customer: string, expectedEvents: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const usage = (await call(base, 'GET', `/v1/customers/${customer}/usage?granularity=day&from=0`)) as {
      usage: { events: number }[];
    };
    const events = usage.usage.reduce((n, u) => n + u.events, 0);
    if (events === expectedEvents) return;
    if (Date.now() > deadline)
      throw new Error(`rater committed ${events} of ${expectedEvents} events for ${customer} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Credit holds (docs/holds.md) on acme's 88 credits: a request reserves 10 before its work, its usage names the
 * hold (one 3-credit image), and the release returns the rest; a hold bigger than what is left is refused.
 */
async function demoHolds(base: string, out: (line?: string) => void, acmeEvents: number): Promise<boolean> {
  const credits = async (): Promise<{ pending: string; held: string; available: string }> => {
    const balance = (await call(base, 'GET', '/v1/customers/acme/balance')) as {
      units: { unit: string; pending: string; held: string; available: string }[];
    };
    return balance.units.find((u) => u.unit === 'credits')!;
  };
  const show = async (what: string): Promise<string> => {
    const c = await credits();
    out(`  ${what.padEnd(44)} pending ${c.pending}, held ${c.held}, available ${c.available}`);
    return c.available;
  };
  out();
  out('acme — credit holds: reserve before the work, usage names the hold, release');
  const { hold } = (await call(
    base,
    'POST',
    '/v1/customers/acme/holds',
    { unit: 'credits', amount: '10' },
    { 'idempotency-key': 'demo-acme-request-1' },
  )) as { hold: { id: string } };
  const steps: [string, string][] = [['reserved 10 credits', await show('reserved 10 credits')]];
  const image = {
    id: 'demo-acme-held-image',
    customer: 'acme',
    meter: 'images',
    timestamp: Date.now(),
    dimensions: { model: 'Nano Banana', resolution: '1K', input: 'prompt' },
    hold: hold.id,
  };
  await sendEvents(base, [image], 'demo-acme-held-usage');
  await waitForUsage(base, 'acme', acmeEvents + 1, 30_000);
  steps.push(['its usage counted (one image, 3)', await show('its usage counted (one image, 3 credits)')]);
  const refused = await fetch(`${base}/v1/customers/acme/holds`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': 'demo-acme-request-2' },
    body: JSON.stringify({ unit: 'credits', amount: '200' }),
  });
  const problem = (await refused.json()) as { code: string; available: string };
  out(
    `  ${'a second request asks for 200'.padEnd(44)} → ${refused.status} ${problem.code} (available ${problem.available})`,
  );
  await call(base, 'POST', `/v1/holds/${hold.id}/release`, { wait_for_usage: false });
  steps.push(['released', await show('released: the unspent 7 return')]);
  const want = ['78', '78', '85'];
  const ok = refused.status === 402 && steps.every(([, available], i) => available === want[i]);
  out(ok ? 'holds OK: 88 → 78 while held, 78 with its usage in, 85 after release' : 'holds FAILED');
  return ok;
}

export async function runDemo(config: Config): Promise<number> {
  const dataDir = resolve(config.dataDir, 'demo');
  rmSync(dataDir, { recursive: true, force: true });
  const out = (line = ''): void => void process.stdout.write(`${line}\n`);
  out(`drawdown demo — all-in-one on nats-server + chDB in ${dataDir}`);
  const running = await startAllInOne({ ...config, dataDir, flushIntervalMs: 200 });
  try {
    const base = running.url!;
    // Usage a few minutes ago, so the whole of it lies before the settlement cut-off.
    const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 5 * 60_000;
    const workloads: [string, string, DemoEvent[], string][] = [
      ['acme', 'SPEC example 1: unified credits', example1('acme', atMs), '88'],
      ['studio', 'SPEC example 2: dimensional image prices', example2('studio', atMs), '0'],
    ];
    for (const [customer, title, events] of workloads) {
      // Bought just before the usage, so settlement draws the usage from this block.
      await call(
        base,
        'POST',
        `/v1/customers/${customer}/purchases`,
        { package: 'credits-100', effective_at: new Date(atMs - 60_000).toISOString() },
        { 'idempotency-key': `demo-${customer}-purchase` },
      );
      const accepted = await sendEvents(base, events, `demo-${customer}-batch-1`);
      // The same batch again, as a client retry would: counted once.
      await sendEvents(base, events, `demo-${customer}-batch-1`);
      out(`${title}: ${customer} bought 100 credits; ${accepted} events sent (and retried once)`);
    }
    for (const [customer, , events] of workloads) await waitForUsage(base, customer, events.length, 30_000);

    const report = (await call(base, 'POST', '/v1/settlements', {
      until: new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString(),
    })) as { run_id: string; entries_posted: number };
    out(`settlement ${report.run_id}: ${report.entries_posted} ledger entries posted`);

    let ok = true;
    for (const [customer, title, , expected] of workloads) {
      const balance = (await call(base, 'GET', `/v1/customers/${customer}/balance`)) as DemoBalance;
      const ledger = (await call(base, 'GET', `/v1/customers/${customer}/ledger`)) as { entries: DemoEntry[] };
      out();
      out(`${customer} — ${title}`);
      for (const e of ledger.entries) {
        const what =
          e.kind === 'usage'
            ? `${e.meter} ${e.dimensions && Object.keys(e.dimensions).length ? JSON.stringify(e.dimensions) + ' ' : ''}× ${e.quantity}`
            : e.source;
        out(`  ${e.kind.padEnd(8)} ${String(e.amount).padStart(12)}  ${what}`);
      }
      for (const unit of balance.units) {
        out(`  balance  ${unit.unit}: settled ${unit.settled}, pending ${unit.pending}, available ${unit.display}`);
        if (unit.unit === 'credits' && unit.available !== expected) {
          ok = false;
          out(`  MISMATCH: expected ${expected}`);
        }
      }
    }
    out();
    out(ok ? 'demo OK: balances match SPEC §7 (100 → 88 and 100 → 0)' : 'demo FAILED: balances differ from SPEC §7');
    const held = await demoHolds(base, out, workloads[0]![2].length);
    return ok && held ? 0 : 1;
  } finally {
    await running.stop();
  }
}
