/**
 * The SPEC §7 worked examples as event workloads, used by the demo and by
 * the end-to-end tests.
 */
export interface DemoEvent {
  id: string;
  customer: string;
  meter: string;
  quantity?: number | string;
  timestamp: number | string;
  dimensions?: Record<string, string>;
}

/** Example 1: 2,000,000 GPT-4o input tokens and 50 DALL-E 3 standard images → 12.00 credits. */
export function example1(customer: string, atMs: number): DemoEvent[] {
  const events: DemoEvent[] = [];
  // Four calls of 500,000 tokens, one as a decimal string, one with an ISO timestamp.
  events.push({ id: `${customer}-tok-1`, customer, meter: 'gpt-4o.input_tokens', quantity: 500_000, timestamp: atMs });
  events.push({
    id: `${customer}-tok-2`,
    customer,
    meter: 'gpt-4o.input_tokens',
    quantity: '500000',
    timestamp: atMs + 1_000,
  });
  events.push({
    id: `${customer}-tok-3`,
    customer,
    meter: 'gpt-4o.input_tokens',
    quantity: 499_999.5,
    timestamp: new Date(atMs + 2_000).toISOString(),
  });
  events.push({
    id: `${customer}-tok-4`,
    customer,
    meter: 'gpt-4o.input_tokens',
    quantity: '500000.5',
    timestamp: atMs + 61_000,
  });
  for (let i = 0; i < 50; i++) {
    events.push({
      id: `${customer}-img-${i}`,
      customer,
      meter: 'dall-e-3.images',
      timestamp: atMs + i * 1_000,
      dimensions: { quality: 'standard', size: '1024x1024' },
    });
  }
  return events;
}

/** Example 2: 10 + 4 + 2 + 5 images of the four dimensional rows → 30 + 20 + 20 + 30 = 100 credits. */
export function example2(customer: string, atMs: number): DemoEvent[] {
  const rows: [number, Record<string, string>][] = [
    [10, { model: 'Nano Banana', resolution: '1K', input: 'prompt' }],
    [4, { model: 'Nano Banana', resolution: '1K', input: 'prompt+image' }],
    [2, { model: 'Nano Banana Pro', resolution: '4K', input: 'prompt+multi-image' }],
    [5, { model: 'GPT Image 1.5', resolution: '2K', input: 'prompt' }],
  ];
  const events: DemoEvent[] = [];
  rows.forEach(([count, dimensions], r) => {
    for (let i = 0; i < count; i++) {
      // An undeclared dimension (request_id) is dropped, not priced.
      events.push({
        id: `${customer}-r${r}-${i}`,
        customer,
        meter: 'images',
        timestamp: atMs + i * 7_000,
        dimensions: { ...dimensions, request_id: `q${r}-${i}` },
      });
    }
  });
  return events;
}
