/**
 * A team coming from OpenMeter, end to end through a real all-in-one
 * drawdown (nats-server, chDB, API keys on): meters get their CloudEvents
 * mapping through the catalog API, usage arrives as CloudEvents built and
 * serialized by the `cloudevents` package on POST /api/v1/events, and the
 * customer's usage and balance come out as SPEC §7 example 1 says — with a
 * resent CloudEvent counted once, and every bad request refused whole,
 * naming the event and the field.
 */
import { CloudEvent, HTTP } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey, newKey } from '../shared/auth.js';
import { startDrawdown, type Running } from '../deploy/processes.js';
import type { NatsServerProcess } from '../deploy/nats-server.js';
import { startNats, tempDir, testConfig, waitForStreamDrained } from './harness.js';

const keys = { ingest: newKey(), read: newKey(), admin: newKey() };
const source = 'api-gateway';
const customer = 'ce-acme';

interface Answer {
  status: number;
  type: string | null;
  body: any;
}

async function call(
  url: string,
  init: { method: string; key?: string; headers?: Record<string, string>; body?: string },
) {
  const response = await fetch(url, {
    method: init.method,
    headers: { ...(init.key ? { authorization: `Bearer ${init.key}` } : {}), ...init.headers },
    ...(init.body === undefined ? {} : { body: init.body }),
  });
  const text = await response.text();
  return {
    status: response.status,
    type: response.headers.get('content-type'),
    body: text === '' ? undefined : JSON.parse(text),
  } satisfies Answer;
}

describe('OpenMeter-compatible CloudEvents ingest, end to end', () => {
  const dir = tempDir('cloudevents');
  let nats: NatsServerProcess;
  let drawdown: Running;
  let base: string;
  // Well inside the lateness window, and before the settlement cut-off.
  const atMs = Math.floor(Date.now() / 60_000) * 60_000 - 30 * 60_000;
  const time = new Date(atMs).toISOString();
  const untilIso = new Date(atMs + 20 * 60_000).toISOString();

  /** One CloudEvent in structured mode, exactly as the cloudevents package writes it. */
  function sendOne(event: CloudEvent<unknown>, key = keys.ingest): Promise<Answer> {
    const message = HTTP.structured(event);
    return call(`${base}/api/v1/events`, {
      method: 'POST',
      key,
      headers: message.headers as Record<string, string>,
      body: message.body as string,
    });
  }

  /** A batch, as OpenMeter's clients send one: the events' own JSON in an array. */
  function sendBatch(events: CloudEvent<unknown>[]): Promise<Answer> {
    return call(`${base}/api/v1/events`, {
      method: 'POST',
      key: keys.ingest,
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify(events.map((e) => e.toJSON())),
    });
  }

  function prompt(id: string, tokens: unknown, attributes: Record<string, unknown> = {}): CloudEvent<unknown> {
    return new CloudEvent({ id, source, type: 'prompt', subject: customer, time, data: { tokens }, ...attributes });
  }

  type Attributes = Record<string, unknown>;
  function image(id: string, count: number, quality: string, attributes: Attributes = {}): CloudEvent<unknown> {
    return new CloudEvent({
      id,
      source,
      type: 'image.generated',
      subject: customer,
      time,
      data: { count, image: { quality, size: '1024x1024' } },
      ...attributes,
    });
  }

  const answers: Record<string, Answer> = {};

  beforeAll(async () => {
    nats = await startNats(dir.path);
    const apiKeys = JSON.stringify(
      Object.entries(keys).map(([scope, key]) => ({ id: `k-${scope}`, sha256: hashKey(key), scopes: [scope] })),
    );
    drawdown = await startDrawdown(
      testConfig({ natsUrl: nats.url, clickhouseUrl: `chdb:${dir.path}/chdb`, auth: 'required', apiKeys }),
      { ingest: true, rater: true, settlement: true },
    );
    base = drawdown.url!;

    // The demo catalog's meters, given the mappings an OpenMeter meter would have.
    const catalog = await call(`${base}/v1/catalog`, { method: 'GET', key: keys.admin });
    const meters = catalog.body.document.meters as Record<string, unknown>[];
    const mapping: Record<string, Record<string, unknown>> = {
      'gpt-4o.input_tokens': { event_type: 'prompt', value_property: '$.tokens' },
      'dall-e-3.images': {
        event_type: 'image.generated',
        value_property: '$.count',
        group_by: { quality: '$.image.quality', size: '$.image.size' },
      },
    };
    answers.badMeter = await call(`${base}/v1/catalog/meters/dall-e-3.images`, {
      method: 'PUT',
      key: keys.admin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        ...meters.find((m) => m.key === 'dall-e-3.images'),
        event_type: 'image.generated',
        value_property: '$.images[*].count',
        group_by: { style: '$.style' },
      }),
    });
    for (const [key, fields] of Object.entries(mapping)) {
      const put = await call(`${base}/v1/catalog/meters/${key}`, {
        method: 'PUT',
        key: keys.admin,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...meters.find((m) => m.key === key), ...fields }),
      });
      expect(put.status).toBe(200);
    }
    const bought = await call(`${base}/v1/customers/${customer}/purchases`, {
      method: 'POST',
      key: keys.admin,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'ce-buy-1' },
      body: JSON.stringify({ package: 'credits-100', effective_at: new Date(atMs - 60_000).toISOString() }),
    });
    expect(bought.status).toBe(201);

    // SPEC §7 example 1 as CloudEvents: 2,000,000 tokens in two prompts, and 50 standard images.
    answers.one = await sendOne(prompt('p-1', 1_500_000));
    answers.batch = await sendBatch([
      prompt('p-2', '500000'),
      image('i-1', 30, 'standard'),
      image('i-2', 20, 'standard'),
      // The same CloudEvent twice in one batch counts once.
      image('i-2', 20, 'standard'),
    ]);
    // A client retrying what was already accepted: counted once.
    answers.resent = await sendOne(prompt('p-1', 1_500_000));
    answers.resentBatch = await sendBatch([prompt('p-2', '500000'), image('i-1', 30, 'standard')]);
    // OpenMeter also takes one event as plain application/json; resent that way it is still the same event.
    answers.resentJson = await call(`${base}/api/v1/events`, {
      method: 'POST',
      key: keys.ingest,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(prompt('p-1', 1_500_000).toJSON()),
    });
    answers.arrayAsOne = await call(`${base}/api/v1/events`, {
      method: 'POST',
      key: keys.ingest,
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify([prompt('x-12', 10).toJSON()]),
    });

    // Refused whole: nothing of these may reach the balance.
    answers.badBatch = await sendBatch([
      prompt('x-1', 1_000_000),
      image('x-2', 10, 'hd'),
      prompt('x-3', -5),
      prompt('x-4', 1_000),
    ]);
    answers.unknownType = await sendOne(
      new CloudEvent({ id: 'x-5', source, type: 'video.rendered', subject: customer }),
    );
    answers.noSubject = await sendOne(
      new CloudEvent({ id: 'x-6', source, type: 'prompt', time, data: { tokens: 10 } }),
    );
    answers.tooOld = await sendOne(prompt('x-7', 10, { time: new Date(Date.now() - 8 * 86_400_000).toISOString() }));
    answers.inFuture = await sendOne(prompt('x-8', 10, { time: new Date(Date.now() + 3_600_000).toISOString() }));
    answers.wrongScope = await sendOne(prompt('x-9', 10), keys.read);
    answers.noKey = await call(`${base}/api/v1/events`, {
      method: 'POST',
      headers: HTTP.structured(prompt('x-10', 10)).headers as Record<string, string>,
      body: HTTP.structured(prompt('x-10', 10)).body as string,
    });
    answers.wrongMedia = await call(`${base}/api/v1/events`, {
      method: 'POST',
      key: keys.ingest,
      headers: { 'content-type': 'text/plain' },
      body: HTTP.structured(prompt('x-11', 10)).body as string,
    });

    await waitForStreamDrained(nats.url);
    const settled = await call(`${base}/v1/settlements`, {
      method: 'POST',
      key: keys.admin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ until: untilIso }),
    });
    expect(settled.status).toBe(200);
  });

  afterAll(async () => {
    await drawdown?.stop();
    await nats?.stop();
    dir.remove();
  });

  it('answers accepted CloudEvents with 204 and no body, as OpenMeter does', () => {
    for (const name of ['one', 'batch', 'resent', 'resentBatch', 'resentJson'])
      expect({ name, status: answers[name]!.status, body: answers[name]!.body }).toEqual({
        name,
        status: 204,
        body: undefined,
      });
  });

  it('counts usage once per CloudEvent (source, id), however often it was sent: 2,000,000 tokens and 50 images', async () => {
    const usage = await call(`${base}/v1/customers/${customer}/usage?granularity=day`, {
      method: 'GET',
      key: keys.read,
    });
    expect(usage.status).toBe(200);
    expect((usage.body.usage as any[]).map((u) => [u.meter, u.dimensions, u.quantity, u.events]).sort()).toEqual(
      [
        ['dall-e-3.images', { quality: 'standard', size: '1024x1024' }, '50', 2],
        ['gpt-4o.input_tokens', {}, '2000000', 2],
      ].sort(),
    );
  });

  it('draws the balance down as SPEC example 1: 100 → 88', async () => {
    const balance = await call(`${base}/v1/customers/${customer}/balance`, { method: 'GET', key: keys.read });
    expect(balance.body.units.map((u: any) => [u.unit, u.settled, u.available])).toEqual([['credits', '88', '88']]);
    const ledger = await call(`${base}/v1/customers/${customer}/ledger`, { method: 'GET', key: keys.read });
    expect((ledger.body.entries as any[]).map((e) => [e.kind, e.meter, e.quantity, e.amount]).sort()).toEqual(
      [
        ['purchase', null, null, '100'],
        ['usage', 'dall-e-3.images', '50', '-2'],
        ['usage', 'gpt-4o.input_tokens', '2000000', '-10'],
      ].sort(),
    );
  });

  it('refuses a batch with one bad event whole, naming its index and field', () => {
    expect(answers.badBatch!.status).toBe(400);
    expect(answers.badBatch!.type).toMatch(/^application\/problem\+json/);
    expect(answers.badBatch!.body).toMatchObject({
      code: 'cloudevent_invalid',
      status: 400,
      detail: expect.stringMatching(/^\[2\]\.data\.tokens: /),
      errors: [{ index: 2, field: 'data.tokens', code: 'quantity_negative' }],
    });
    // Its good events (x-1: 1,000,000 tokens; x-2: 10 hd images) are in no usage above and no balance.
  });

  it('refuses an event type no meter maps, naming it, rather than taking usage nobody is charged for', () => {
    expect(answers.unknownType!.status).toBe(400);
    expect(answers.unknownType!.body.errors).toEqual([
      expect.objectContaining({
        index: 0,
        field: 'type',
        code: 'unmapped_type',
        message: expect.stringContaining('video.rendered'),
      }),
    ]);
  });

  it('refuses an event without subject, and one outside the lateness and skew window, naming the field', () => {
    expect([answers.noSubject!.status, answers.noSubject!.body.errors]).toEqual([
      400,
      [expect.objectContaining({ index: 0, field: 'subject', code: 'required' })],
    ]);
    expect([answers.tooOld!.status, answers.tooOld!.body.errors]).toEqual([
      400,
      [expect.objectContaining({ index: 0, field: 'time', code: 'timestamp_too_old' })],
    ]);
    expect([answers.inFuture!.status, answers.inFuture!.body.errors]).toEqual([
      400,
      [expect.objectContaining({ index: 0, field: 'time', code: 'timestamp_in_future' })],
    ]);
  });

  it('holds the route to the ingest scope and the CloudEvents media types', () => {
    expect([answers.noKey!.status, answers.noKey!.body.code]).toEqual([401, 'unauthorized']);
    expect([answers.wrongScope!.status, answers.wrongScope!.body.code]).toEqual([403, 'forbidden']);
    expect([answers.wrongMedia!.status, answers.wrongMedia!.body.code]).toEqual([415, 'unsupported_media_type']);
    expect([answers.arrayAsOne!.status, answers.arrayAsOne!.body.code]).toEqual([400, 'body_malformed']);
  });

  it('refused a meter mapping that breaks the rules at catalog apply, naming each field', () => {
    expect(answers.badMeter!.status).toBe(422);
    expect(answers.badMeter!.body.code).toBe('catalog_definition_invalid');
    expect((answers.badMeter!.body.errors as any[]).map((p) => [p.field, p.code])).toEqual([
      ['value_property', 'format'],
      ['group_by.style', 'unknown'],
    ]);
  });
});
