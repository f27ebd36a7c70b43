/**
 * Benchmark batches: realistic MessagePack bodies (100 customers, three
 * meters, dimensions), encoded once so the load generator spends no time on
 * them. Every batch has the same exact quantity total, so the end-to-end
 * check knows what ClickHouse must hold.
 */
import { Packr } from 'msgpackr';
import { Decimal } from 'decimal.js';

export const benchCustomers = 100;

export interface BenchBatch {
  body: Buffer;
  events: number;
  /** Exact token total per customer in one batch. */
  tokensPerCustomer: Map<string, Decimal>;
}

export function makeBatch(events: number, atMs: number): BenchBatch {
  const packr = new Packr({ useRecords: false });
  const models = ['Nano Banana', 'Nano Banana Pro', 'GPT Image 1.5'];
  const tokensPerCustomer = new Map<string, Decimal>();
  const list = [];
  for (let i = 0; i < events; i++) {
    const customer = `cust-${i % benchCustomers}`;
    if (i % 10 === 9) {
      list.push({ id: `i${i}`, customer, meter: 'images', timestamp: atMs + (i % 60_000), dimensions: { model: models[i % 3]!, resolution: '1K', input: 'prompt' } });
    } else {
      const quantity = `${100 + (i % 900)}.25`;
      tokensPerCustomer.set(customer, (tokensPerCustomer.get(customer) ?? new Decimal(0)).plus(quantity));
      list.push({ id: `t${i}`, customer, meter: 'gpt-4o.input_tokens', quantity, timestamp: atMs + (i % 60_000) });
    }
  }
  return { body: packr.pack(list), events, tokensPerCustomer };
}
