/**
 * CloudEvents 1.0 (structured JSON, as OpenMeter ingests them) → drawdown
 * usage events: one per meter whose `event_type` is the event's `type`
 * (docs/cloudevents.md). The usage events are then held to exactly the rules
 * of POST /v1/events (shared/events/event.ts); a problem is reported against
 * the CloudEvent field it came from (`subject`, `time`, `data.tokens`), so a
 * client is told what to fix in what it sent.
 */
import { createHash } from 'node:crypto';
import { dataField, readDataPath, type EventMappings, type MappedMeter } from '../catalog/event-mapping.js';
import { problemsListedMax } from '../shared/events/batch.js';
import { parseEvent, type TimestampWindow } from '../shared/events/event.js';
import type { MeterDefinitions } from '../shared/events/meters.js';
import { DrawdownError, type FieldProblem } from '../shared/errors.js';
import { Problems, hostileKeys, isPlainObject } from '../shared/validate.js';

export const cloudEventLimits = {
  /** `id` and `source` are hashed into the usage event's id, so only a sanity bound applies. */
  idLengthMax: 1024,
  sourceLengthMax: 1024,
  typeLengthMax: 256,
} as const;

/** CloudEvents 1.0 §3.1.1: attribute names are lower-case ASCII letters and digits. */
const attributeName = /^[a-z0-9]{1,20}$/;

/** A usage event as POST /v1/events takes it, derived from one CloudEvent for one meter. */
export interface DerivedEvent {
  id: string;
  customer: string;
  meter: string;
  timestamp: string | number;
  quantity?: unknown;
  dimensions?: Record<string, string>;
}

export interface Conversion {
  events: DerivedEvent[];
  /** CloudEvents dropped because an earlier one in the batch had the same (source, id). */
  repeats: number;
}

/**
 * The usage event id for a CloudEvent and a meter: the same (source, id,
 * meter) always gives the same id, so a resent CloudEvent is the same usage
 * event to the rater's dedupe (docs/exactly-once.md §2a), and two meters fed
 * by one CloudEvent get two ids. 46 characters, inside the 128 of an event id.
 */
export function derivedEventId(source: string, id: string, meter: string): string {
  return `ce_${createHash('sha256')
    .update(JSON.stringify([source, id, meter]))
    .digest('base64url')}`;
}

/** Where parseEvent's fields came from in the CloudEvent. */
function cloudEventField(field: string, meter: MappedMeter): string {
  if (field === 'customer') return 'subject';
  if (field === 'timestamp') return 'time';
  if (field === 'meter') return 'type';
  if (field === 'quantity' && meter.value !== undefined) return dataField(meter.value);
  if (field.startsWith('dimensions.')) {
    const dimension = field.slice('dimensions.'.length);
    const mapped = meter.groupBy.find((g) => g.dimension === dimension);
    if (mapped !== undefined) return dataField(mapped.path);
  }
  return field === 'dimensions' ? 'data' : field;
}

function stringAttribute(
  problems: Problems,
  event: Record<string, unknown>,
  name: string,
  index: number,
  lengthMax: number,
): string | undefined {
  const value = event[name];
  if (typeof value === 'string' && value.length >= 1 && value.length <= lengthMax) return value;
  problems.add(
    name,
    value === undefined || value === null ? 'required' : typeof value === 'string' ? 'length' : 'type',
    `${name} is required: a string of 1–${lengthMax} characters`,
    index,
  );
  return undefined;
}

/** Checks the CloudEvents envelope; returns what conversion needs, or undefined after adding problems. */
function readEnvelope(
  raw: unknown,
  index: number,
  problems: Problems,
): { id: string; source: string; type: string; subject: string; time: string | undefined; data: unknown } | undefined {
  if (!isPlainObject(raw)) {
    problems.add('', 'type', 'a CloudEvent must be a JSON object', index);
    return undefined;
  }
  const before = problems.list.length;
  for (const key of Object.keys(raw)) {
    if (hostileKeys.has(key)) problems.add(key, 'hostile_key', `attribute ${key} is not allowed`, index);
    else if (key === 'data_base64')
      problems.add(key, 'unsupported', 'data must be a JSON object; data_base64 (binary data) is not accepted', index);
    else if (!attributeName.test(key))
      problems.add(
        key,
        'attribute_name',
        `${JSON.stringify(key.slice(0, 64))} is not a CloudEvents attribute name (1–20 lower-case letters and digits)`,
        index,
      );
  }
  if (raw.specversion !== '1.0')
    problems.add(
      'specversion',
      raw.specversion === undefined ? 'required' : 'unsupported',
      'specversion must be "1.0"',
      index,
    );
  const id = stringAttribute(problems, raw, 'id', index, cloudEventLimits.idLengthMax);
  const source = stringAttribute(problems, raw, 'source', index, cloudEventLimits.sourceLengthMax);
  const type = stringAttribute(problems, raw, 'type', index, cloudEventLimits.typeLengthMax);
  // OpenMeter requires subject too: it names who used what, here the customer.
  const subject = stringAttribute(problems, raw, 'subject', index, 128);
  const { time, data, datacontenttype, dataschema } = raw;
  // Optional attributes may be null (CloudEvents JSON format §2.4); an absent time is the time received, as OpenMeter.
  if (time !== undefined && time !== null && typeof time !== 'string')
    problems.add('time', 'type', 'time must be an RFC 3339 timestamp string, e.g. 2026-01-01T00:00:00Z', index);
  if (
    datacontenttype !== undefined &&
    datacontenttype !== null &&
    (typeof datacontenttype !== 'string' ||
      datacontenttype.split(';', 1)[0]!.trim().toLowerCase() !== 'application/json')
  )
    problems.add('datacontenttype', 'unsupported', 'datacontenttype must be application/json', index);
  if (dataschema !== undefined && dataschema !== null && (typeof dataschema !== 'string' || dataschema.length === 0))
    problems.add('dataschema', 'type', 'dataschema must be a URI string', index);
  if (data !== undefined && data !== null && !isPlainObject(data))
    problems.add('data', 'type', 'data must be a JSON object', index);
  if (problems.list.length > before) return undefined;
  return {
    id: id!,
    source: source!,
    type: type!,
    subject: subject!,
    time: typeof time === 'string' ? time : undefined,
    data: data ?? undefined,
  };
}

/**
 * Converts a batch of decoded CloudEvents; throws 400 cloudevent_invalid
 * naming every problem (event index and field, up to 100) — nothing of a
 * batch with any problem is converted. A later CloudEvent with the (source,
 * id) of an earlier one in the batch is dropped, as OpenMeter's dedupe does.
 */
export function convertCloudEvents(
  raw: readonly unknown[],
  mappings: EventMappings,
  meters: MeterDefinitions,
  window: TimestampWindow,
): Conversion {
  const problems = new Problems();
  const events: DerivedEvent[] = [];
  const seen = new Set<string>();
  let repeats = 0;
  for (let i = 0; i < raw.length && problems.list.length < problemsListedMax; i++) {
    const envelope = readEnvelope(raw[i], i, problems);
    if (envelope === undefined) continue;
    const mapped = mappings.get(envelope.type);
    if (mapped === undefined) {
      problems.add(
        'type',
        'unmapped_type',
        `no meter takes events of type ${JSON.stringify(envelope.type.slice(0, 128))}: set event_type on a meter in the catalog`,
        i,
      );
      continue;
    }
    const reported = new Set<string>();
    const derived = mapped.map((meter) => deriveEvent(envelope, meter, window, i, problems, reported, meters));
    // A repeat is still checked (the whole batch is valid or refused), then left out.
    const identity = JSON.stringify([envelope.source, envelope.id]);
    if (seen.has(identity)) repeats++;
    else {
      seen.add(identity);
      for (const event of derived) if (event !== undefined) events.push(event);
    }
  }
  if (!problems.empty) throw invalid(problems.list.slice(0, problemsListedMax));
  return { events, repeats };
}

function deriveEvent(
  envelope: NonNullable<ReturnType<typeof readEnvelope>>,
  meter: MappedMeter,
  window: TimestampWindow,
  index: number,
  problems: Problems,
  reported: Set<string>,
  meters: MeterDefinitions,
): DerivedEvent | undefined {
  const local = new Problems();
  const event: DerivedEvent = {
    id: derivedEventId(envelope.source, envelope.id, meter.meter),
    customer: envelope.subject,
    meter: meter.meter,
    timestamp: envelope.time ?? window.receivedMs,
  };
  if (meter.value !== undefined) {
    const value = readDataPath(envelope.data, meter.value);
    const field = dataField(meter.value);
    // An absent quantity means 1 on POST /v1/events; here it means the event lacks what the meter counts.
    if (value === undefined || value === null)
      local.add(
        field,
        value === null ? 'quantity_type' : 'required',
        `meter ${meter.meter} takes its quantity from ${meter.value.text}: a number or decimal string`,
        index,
      );
    else event.quantity = value;
  }
  const dimensions: Record<string, string> = {};
  for (const { dimension, path } of meter.groupBy) {
    const value = readDataPath(envelope.data, path);
    // Absent is no dimension (rates without a match on it apply), as an event that leaves it out.
    if (value === undefined || value === null) continue;
    if (typeof value === 'string') dimensions[dimension] = value;
    else if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean')
      dimensions[dimension] = String(value);
    else
      local.add(
        dataField(path),
        'type',
        `meter ${meter.meter} groups by ${path.text}: a string, number or boolean`,
        index,
      );
  }
  if (Object.keys(dimensions).length > 0) event.dimensions = dimensions;
  parseEvent(event, index, meters, window, local);
  // One CloudEvent feeding several meters would repeat a subject or time problem once per meter.
  for (const problem of local.list) {
    const field = problem.field === '' ? '' : cloudEventField(problem.field, meter);
    const key = `${field}\u0000${problem.code}`;
    if (reported.has(key)) continue;
    reported.add(key);
    problems.add(field, problem.code, cloudEventMessage(problem), index);
  }
  return local.empty ? event : undefined;
}

/** parseEvent words its problems for POST /v1/events; these say it in the CloudEvent's terms. */
function cloudEventMessage(problem: FieldProblem): string {
  if (problem.field === 'timestamp')
    return problem.code === 'type'
      ? 'time must be an RFC 3339 timestamp with a zone, e.g. 2026-01-01T00:00:00Z'
      : problem.message.replace(/^timestamp /, 'time ');
  if (problem.field === 'customer') return 'subject is the customer id: 1–128 characters of [A-Za-z0-9._:@-]';
  return problem.message;
}

function invalid(listed: FieldProblem[]): DrawdownError {
  const first = listed[0]!;
  return new DrawdownError(
    'cloudevent_invalid',
    `[${first.index}]${first.field === '' ? '' : `.${first.field}`}: ${first.message}${listed.length > 1 ? ` (and ${listed.length - 1} more problem(s) listed)` : ''}`,
    { problems: listed },
  );
}
