/**
 * How a meter takes CloudEvents (docs/cloudevents.md): the event `type` it
 * counts, where in `data` its quantity is (`value_property`) and which
 * `data` members become its dimensions (`group_by`), as OpenMeter's meters
 * say it. Paths are a small, fixed subset of JSONPath, checked at catalog
 * apply so that ingest only ever walks a path it knows how to read.
 */
import { Problems, hostileKeys, isPlainObject } from '../shared/validate.js';
import type { Aggregation } from '../shared/events/meters.js';

/** One step into `data`: a member name or an array index. */
export type PathSegment = string | number;

export interface DataPath {
  /** As written in the catalog, e.g. `$.usage.tokens`. */
  text: string;
  segments: PathSegment[];
}

export interface EventMapping {
  /** The CloudEvents `type` this meter counts. */
  eventType: string;
  /** Where the quantity is; undefined for a count meter (each event counts 1). */
  value: DataPath | undefined;
  /** Declared dimension → where its value is. */
  groupBy: { dimension: string; path: DataPath }[];
}

export const eventMappingLimits = {
  eventTypeLengthMax: 256,
  pathLengthMax: 256,
  pathSegmentsMax: 16,
  arrayIndexMax: 9999,
} as const;

const nameSegment = /^\.([A-Za-z0-9_-]+)/;
const indexSegment = /^\[(\d{1,4})\]/;
const quotedSegment = /^\[(?:'([^'\\]+)'|"([^"\\]+)")\]/;

/**
 * `$` followed by `.name`, `['name']` / `["name"]` or `[n]` steps. Wildcards,
 * filters, slices and recursive descent are refused: each could select many
 * values, and a quantity or a dimension is exactly one.
 */
export function parseDataPath(text: string): { path: DataPath } | { problem: string } {
  const subset = "a JSONPath of the form $.name, $.a.b, $['a b'] or $.items[0]";
  if (text.length > eventMappingLimits.pathLengthMax)
    return { problem: `must be at most ${eventMappingLimits.pathLengthMax} characters` };
  if (!text.startsWith('$')) return { problem: `must start with $: ${subset}` };
  const segments: PathSegment[] = [];
  let rest = text.slice(1);
  while (rest.length > 0) {
    let match: RegExpExecArray | null;
    if ((match = nameSegment.exec(rest)) !== null) segments.push(match[1]!);
    else if ((match = quotedSegment.exec(rest)) !== null) segments.push(match[1] ?? match[2]!);
    else if ((match = indexSegment.exec(rest)) !== null) segments.push(Number(match[1]));
    else return { problem: `is not ${subset} (no wildcards, filters, slices or ..)` };
    rest = rest.slice(match[0].length);
  }
  if (segments.length === 0) return { problem: `must name a member of data: ${subset}` };
  if (segments.length > eventMappingLimits.pathSegmentsMax)
    return { problem: `may have at most ${eventMappingLimits.pathSegmentsMax} steps` };
  const hostile = segments.find((s) => typeof s === 'string' && hostileKeys.has(s));
  if (hostile !== undefined) return { problem: `may not name ${String(hostile)}` };
  return { path: { text, segments } };
}

/** The value at `path` in `data`, or undefined when any step is missing. Own members only. */
export function readDataPath(data: unknown, path: DataPath): unknown {
  let at: unknown = data;
  for (const segment of path.segments) {
    if (typeof segment === 'number') {
      if (!Array.isArray(at) || segment >= at.length) return undefined;
      at = at[segment];
    } else {
      if (!isPlainObject(at) || !Object.hasOwn(at, segment)) return undefined;
      at = at[segment];
    }
  }
  return at;
}

/** `data.usage.tokens`, `data['a b']`, `data.items[0]`: how a problem names the field in the event. */
export function dataField(path: DataPath): string {
  let out = 'data';
  for (const segment of path.segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += /^[A-Za-z0-9_-]+$/.test(segment) ? `.${segment}` : `[${JSON.stringify(segment)}]`;
  }
  return out;
}

/**
 * Reads a meter's `event_type`, `value_property` and `group_by` (`o` is the
 * meter's object, `at` its path). Every problem is added to `problems`;
 * returns undefined when the meter has no mapping or a problem was found.
 */
export function parseEventMapping(
  problems: Problems,
  o: Record<string, unknown>,
  at: string,
  aggregation: Aggregation,
  dimensions: readonly string[],
): EventMapping | undefined {
  const before = problems.list.length;
  // OpenMeter's camelCase spellings (eventType, …) are refused as unknown fields, naming the snake_case one.
  const { event_type: eventType, value_property: valueProperty, group_by: groupBy } = o;
  if (eventType === undefined) {
    if (valueProperty !== undefined)
      problems.add(`${at}.event_type`, 'required', `${at}.value_property needs ${at}.event_type`);
    if (groupBy !== undefined) problems.add(`${at}.event_type`, 'required', `${at}.group_by needs ${at}.event_type`);
    return undefined;
  }
  if (
    typeof eventType !== 'string' ||
    eventType.length < 1 ||
    eventType.length > eventMappingLimits.eventTypeLengthMax ||
    /[\x00-\x1f\x7f]/.test(eventType)
  ) {
    problems.add(
      `${at}.event_type`,
      typeof eventType === 'string' ? 'format' : 'type',
      `${at}.event_type must be a CloudEvents type: 1–${eventMappingLimits.eventTypeLengthMax} characters, no control characters`,
    );
  }

  let value: DataPath | undefined;
  if (aggregation === 'count') {
    if (valueProperty !== undefined)
      problems.add(
        `${at}.value_property`,
        'not_allowed',
        `${at}.value_property must be left out: a count meter counts events, each as 1`,
      );
  } else if (valueProperty === undefined) {
    problems.add(
      `${at}.value_property`,
      'required',
      `${at}.value_property is required: a ${aggregation} meter needs the path of its quantity in data, e.g. $.tokens`,
    );
  } else if (typeof valueProperty !== 'string') {
    problems.add(`${at}.value_property`, 'type', `${at}.value_property must be a string such as $.tokens`);
  } else {
    const parsed = parseDataPath(valueProperty);
    if ('problem' in parsed) problems.add(`${at}.value_property`, 'format', `${at}.value_property ${parsed.problem}`);
    else value = parsed.path;
  }

  const mapped: EventMapping['groupBy'] = [];
  if (groupBy !== undefined) {
    if (!isPlainObject(groupBy)) {
      problems.add(
        `${at}.group_by`,
        'type',
        `${at}.group_by must map dimension names to paths, e.g. {"model": "$.model"}`,
      );
    } else {
      for (const [dimension, text] of Object.entries(groupBy)) {
        const field = `${at}.group_by.${dimension}`;
        if (hostileKeys.has(dimension))
          problems.add(field, 'hostile_key', `${at}.group_by may not have the key ${dimension}`);
        else if (!dimensions.includes(dimension))
          problems.add(
            field,
            'unknown',
            `${at}.group_by names ${dimension}, which the meter does not declare in dimensions (only declared dimensions are kept)`,
          );
        else if (typeof text !== 'string') problems.add(field, 'type', `${field} must be a string such as $.model`);
        else {
          const parsed = parseDataPath(text);
          if ('problem' in parsed) problems.add(field, 'format', `${field} ${parsed.problem}`);
          else mapped.push({ dimension, path: parsed.path });
        }
      }
    }
  }
  if (problems.list.length > before) return undefined;
  mapped.sort((a, b) => (a.dimension < b.dimension ? -1 : 1));
  return { eventType: eventType as string, value, groupBy: mapped };
}

/** A meter as ingest maps CloudEvents to it. */
export interface MappedMeter {
  meter: string;
  value: DataPath | undefined;
  groupBy: EventMapping['groupBy'];
}

/** Event type → the meters that count it, in meter key order. */
export type EventMappings = ReadonlyMap<string, readonly MappedMeter[]>;

/** The table ingest looks event types up in; `skip` holds meters closed to new events (archived). */
export function eventMappings(
  meters: Iterable<{ key: string; events: EventMapping | undefined }>,
  skip: ReadonlySet<string> = new Set(),
): EventMappings {
  const table = new Map<string, MappedMeter[]>();
  for (const meter of meters) {
    if (meter.events === undefined || skip.has(meter.key)) continue;
    const list = table.get(meter.events.eventType) ?? [];
    list.push({ meter: meter.key, value: meter.events.value, groupBy: meter.events.groupBy });
    table.set(meter.events.eventType, list);
  }
  for (const list of table.values()) list.sort((a, b) => (a.meter < b.meter ? -1 : 1));
  return table;
}
