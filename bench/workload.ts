/**
 * Benchmark batches: realistic MessagePack bodies (100 customers, three
 * meters, dimensions), encoded once so the load generator spends no time
 * encoding. Each request still needs fresh event ids (the rater drops
 * repeated ids), so every id starts with an 8-character slot that
 * `nextBody()` overwrites in a copy of the template with a request counter:
 *
 *   id = "<slot8>-t123"   slot8 = request number in base 36, zero-padded
 *
 * Every batch of one template has the same exact quantity total, so the
 * end-to-end check knows what ClickHouse must hold.
 */
import { Packr } from 'msgpackr';
import { Decimal } from 'decimal.js';

export const benchCustomers = 100;
const slotBytes = 8;
const placeholder = '@'.repeat(slotBytes);

export interface BenchBatch {
  /** The template body (placeholder ids): what the raw JetStream baseline publishes. */
  body: Buffer;
  events: number;
  /** Exact token total per customer in one batch. */
  tokensPerCustomer: Map<string, Decimal>;
  /** A copy of the template with ids unique to this call (process-wide counter). */
  nextBody(): Buffer;
}

let requestCounter = 0;

/** `variant` shifts customers and quantities so batch sizes differ in content, not only length. */
export function makeBatch(events: number, atMs: number, variant = 0): BenchBatch {
  const packr = new Packr({ useRecords: false });
  const models = ['Nano Banana', 'Nano Banana Pro', 'GPT Image 1.5'];
  const resolutions = ['1K', '2K', '4K'];
  const tokensPerCustomer = new Map<string, Decimal>();
  const list = [];
  for (let i = 0; i < events; i++) {
    const customer = `cust-${(i * 7 + variant) % benchCustomers}`;
    // Spread over a minute so rows aggregate per (customer, meter, minute, dimensions).
    const timestamp = atMs + ((i * 37) % 60_000);
    if (i % 10 === 9) {
      list.push({
        id: `${placeholder}-i${i}`,
        customer,
        meter: 'images',
        timestamp,
        dimensions: { model: models[i % 3]!, resolution: resolutions[(i >> 2) % 3]!, input: 'prompt' },
      });
    } else {
      const quantity = `${100 + ((i + variant) % 900)}.25`;
      tokensPerCustomer.set(customer, (tokensPerCustomer.get(customer) ?? new Decimal(0)).plus(quantity));
      list.push({ id: `${placeholder}-t${i}`, customer, meter: 'gpt-4o.input_tokens', quantity, timestamp });
    }
  }
  const body = packr.pack(list);
  const slots: number[] = [];
  const needle = Buffer.from(placeholder);
  for (let at = body.indexOf(needle); at !== -1; at = body.indexOf(needle, at + slotBytes)) slots.push(at);
  if (slots.length !== events) throw new Error(`found ${slots.length} id slots for ${events} events`);
  const digits = Buffer.alloc(slotBytes);
  return {
    body,
    events,
    tokensPerCustomer,
    nextBody(): Buffer {
      const n = requestCounter++;
      const text = n.toString(36).padStart(slotBytes, '0');
      digits.write(text, 'latin1');
      const copy = Buffer.allocUnsafe(body.length);
      body.copy(copy);
      for (const at of slots) digits.copy(copy, at);
      return copy;
    },
  };
}
