import { CloudEvent } from 'cloudevents';
import { describe, expect, it } from 'vitest';
import { eventMappings } from '../catalog/event-mapping.js';
import { meterDefinitions, parseCatalog } from '../catalog/model.js';
import { validateEvents } from '../shared/events/batch.js';
import { DrawdownError, type FieldProblem } from '../shared/errors.js';
import { convertCloudEvents, derivedEventId } from './cloudevents.js';

const catalog = parseCatalog({
  meters: [
    {
      key: 'tokens.input',
      aggregation: 'sum',
      dimensions: ['model'],
      event_type: 'prompt',
      value_property: '$.tokens.input',
      group_by: { model: '$.model' },
    },
    { key: 'tokens.output', aggregation: 'sum', event_type: 'prompt', value_property: '$.tokens.output' },
    { key: 'prompts', aggregation: 'count', event_type: 'prompt' },
    { key: 'seconds', aggregation: 'max', event_type: 'call', value_property: '$.seconds' },
  ],
});
const mappings = eventMappings(catalog.meters.values());
const meters = meterDefinitions(catalog);
const receivedMs = Date.parse('2026-11-30T12:00:00Z');
const window = { receivedMs, lateMs: 7 * 86_400_000, skewMs: 300_000 };

/** A CloudEvent as the cloudevents package writes it in structured mode. */
function ce(attributes: Record<string, unknown>): Record<string, unknown> {
  const event = new CloudEvent({
    source: 'svc',
    type: 'prompt',
    subject: 'acme',
    time: '2026-11-30T11:59:00.000Z',
    ...attributes,
  });
  return JSON.parse(JSON.stringify(event)) as Record<string, unknown>;
}

function problemsOf(raw: unknown[]): Pick<FieldProblem, 'index' | 'field' | 'code'>[] {
  try {
    convertCloudEvents(raw, mappings, meters, window);
  } catch (error) {
    if (error instanceof DrawdownError && error.code === 'cloudevent_invalid')
      return error.problems.map(({ index, field, code }) => ({ index, field, code }));
    throw error;
  }
  return [];
}

describe('CloudEvents to usage events', () => {
  it('maps one CloudEvent to one usage event per meter of its type, with exact quantities and group_by dimensions', () => {
    const { events, repeats } = convertCloudEvents(
      [ce({ id: 'e1', data: { tokens: { input: '1234.5', output: 77 }, model: 'gpt-4o' } })],
      mappings,
      meters,
      window,
    );
    expect(repeats).toBe(0);
    expect(events).toEqual([
      {
        id: derivedEventId('svc', 'e1', 'prompts'),
        customer: 'acme',
        meter: 'prompts',
        timestamp: '2026-11-30T11:59:00.000Z',
      },
      {
        id: derivedEventId('svc', 'e1', 'tokens.input'),
        customer: 'acme',
        meter: 'tokens.input',
        timestamp: '2026-11-30T11:59:00.000Z',
        quantity: '1234.5',
        dimensions: { model: 'gpt-4o' },
      },
      {
        id: derivedEventId('svc', 'e1', 'tokens.output'),
        customer: 'acme',
        meter: 'tokens.output',
        timestamp: '2026-11-30T11:59:00.000Z',
        quantity: 77,
      },
    ]);
    // What POST /v1/events would make of them: the same rules, exactly.
    expect(validateEvents(events, meters, window).map((e) => [e.meter, e.scaled, e.dimensions])).toEqual([
      ['prompts', 1_000_000_000n, '{}'],
      ['tokens.input', 1_234_500_000_000n, '{"model":"gpt-4o"}'],
      ['tokens.output', 77_000_000_000n, '{}'],
    ]);
  });

  it('derives ids from (source, id, meter) alone, so a resent CloudEvent is the same usage event', () => {
    expect(derivedEventId('svc', 'e1', 'seconds')).toBe(derivedEventId('svc', 'e1', 'seconds'));
    expect(derivedEventId('svc', 'e1', 'seconds')).toMatch(/^ce_[A-Za-z0-9_-]{43}$/);
    const distinct = new Set([
      derivedEventId('svc', 'e1', 'seconds'),
      derivedEventId('svc2', 'e1', 'seconds'),
      derivedEventId('svc', 'e2', 'seconds'),
      derivedEventId('svc', 'e1', 'prompts'),
      // No separator games: ("a,b", "c") is not ("a", "b,c").
      derivedEventId('a","b', 'c', 'seconds'),
      derivedEventId('a', 'b","c', 'seconds'),
    ]);
    expect(distinct.size).toBe(6);
  });

  it('keeps the first of two CloudEvents with one (source, id) in a batch, as OpenMeter does', () => {
    const first = ce({ id: 'same', type: 'call', data: { seconds: 5 } });
    const again = ce({ id: 'same', type: 'call', data: { seconds: 9 }, subject: 'other' });
    const elsewhere = ce({ id: 'same', type: 'call', source: 'svc2', data: { seconds: 3 } });
    const { events, repeats } = convertCloudEvents([first, again, elsewhere], mappings, meters, window);
    expect(repeats).toBe(1);
    expect(events.map((e) => [e.customer, e.quantity])).toEqual([
      ['acme', 5],
      ['acme', 3],
    ]);
  });

  it('takes an event without time (or with null) at the time it was received, as OpenMeter does', () => {
    const { time: _time, ...untimed } = ce({ id: 'u1', type: 'call', data: { seconds: 1 } });
    const { events } = convertCloudEvents([untimed, { ...untimed, id: 'u2', time: null }], mappings, meters, window);
    expect(events.map((e) => e.timestamp)).toEqual([receivedMs, receivedMs]);
  });

  it('leaves an absent or null group_by value out, and writes numbers and booleans as text', () => {
    const { events } = convertCloudEvents(
      [
        ce({ id: 'g1', data: { tokens: { input: 1, output: 1 } } }),
        ce({ id: 'g2', data: { tokens: { input: 1, output: 1 }, model: null } }),
        ce({ id: 'g3', data: { tokens: { input: 1, output: 1 }, model: 4 } }),
      ],
      mappings,
      meters,
      window,
    );
    expect(events.filter((e) => e.meter === 'tokens.input').map((e) => e.dimensions)).toEqual([
      undefined,
      undefined,
      { model: '4' },
    ]);
  });

  it('refuses a batch naming each bad event by index and the field as the client sent it', () => {
    expect(
      problemsOf([
        ce({ id: 'ok', type: 'call', data: { seconds: 1 } }),
        ce({ id: 'b1', type: 'call', data: { seconds: -1 } }),
        ce({ id: 'b2', type: 'call', data: {} }),
        ce({ id: 'b3', type: 'nobody.maps.this' }),
        ce({ id: 'b4', type: 'call', subject: 'not a customer!', data: { seconds: 1 } }),
        ce({ id: 'b5', type: 'call', time: '2026-11-01T00:00:00Z', data: { seconds: 1 } }),
        ce({ id: 'b6', data: { tokens: { input: 'lots', output: 1 }, model: { name: 'x' } } }),
        ce({ id: 'b7', type: 'call', data: { seconds: null } }),
      ]),
    ).toEqual([
      { index: 1, field: 'data.seconds', code: 'quantity_negative' },
      { index: 2, field: 'data.seconds', code: 'required' },
      { index: 3, field: 'type', code: 'unmapped_type' },
      { index: 4, field: 'subject', code: 'format' },
      { index: 5, field: 'time', code: 'timestamp_too_old' },
      { index: 6, field: 'data.model', code: 'type' },
      { index: 6, field: 'data.tokens.input', code: 'quantity_malformed' },
      { index: 7, field: 'data.seconds', code: 'quantity_type' },
    ]);
  });

  it('reports a subject or time problem once for a CloudEvent that feeds three meters', () => {
    expect(
      problemsOf([
        ce({ id: 'm', subject: 'a b', time: '2099-01-01T00:00:00Z', data: { tokens: { input: 1, output: 2 } } }),
      ]),
    ).toEqual([
      { index: 0, field: 'subject', code: 'format' },
      { index: 0, field: 'time', code: 'timestamp_in_future' },
    ]);
  });

  it('holds the envelope to CloudEvents 1.0 where the cloudevents package cannot write a bad one', () => {
    // Hand-written on purpose: these are what a broken producer sends, which the package refuses to build.
    const good = ce({ id: 'env', type: 'call', data: { seconds: 1 } });
    const { subject: _subject, ...noSubject } = good;
    expect(
      problemsOf([
        noSubject,
        { ...good, specversion: '0.3' },
        { ...good, id: '' },
        { ...good, time: 'yesterday' },
        { ...good, time: 1_700_000_000_000 },
        { ...good, data: [1, 2] },
        { ...good, data: undefined, data_base64: 'AAAA' },
        { ...good, Subject: 'acme' },
        { ...good, datacontenttype: 'text/plain' },
        'not an event',
      ]),
    ).toEqual([
      { index: 0, field: 'subject', code: 'required' },
      { index: 1, field: 'specversion', code: 'unsupported' },
      { index: 2, field: 'id', code: 'length' },
      { index: 3, field: 'time', code: 'type' },
      { index: 4, field: 'time', code: 'type' },
      { index: 5, field: 'data', code: 'type' },
      { index: 6, field: 'data_base64', code: 'unsupported' },
      { index: 7, field: 'Subject', code: 'attribute_name' },
      { index: 8, field: 'datacontenttype', code: 'unsupported' },
      { index: 9, field: '', code: 'type' },
    ]);
  });

  it('names the event and field in the detail a person reads', () => {
    try {
      convertCloudEvents(
        [ce({ id: 'x', type: 'call', data: { seconds: 1 } }), ce({ id: 'y', type: 'call' })],
        mappings,
        meters,
        window,
      );
      expect.unreachable();
    } catch (error) {
      expect((error as DrawdownError).status).toBe(400);
      expect((error as DrawdownError).message).toMatch(
        /^\[1\]\.data\.seconds: meter seconds takes its quantity from \$\.seconds/,
      );
    }
  });
});
