/**
 * POST /api/v1/events, OpenMeter's ingest API (docs/cloudevents.md): one
 * CloudEvent (`application/cloudevents+json`), a batch
 * (`application/cloudevents-batch+json`), or either as `application/json`.
 * The CloudEvents become usage events (ingest/cloudevents.ts) and take the
 * path of a JSON batch on POST /v1/events: routed by customer, published, and
 * answered only after JetStream acknowledged every part — 204 with no body,
 * as OpenMeter answers. Anything invalid refuses the whole request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { decodeBatch } from '../shared/events/batch.js';
import { DrawdownError } from '../shared/errors.js';
import { readBody } from '../shared/http.js';
import type { EventMappings } from '../catalog/event-mapping.js';
import { checkContentEncoding } from './content-encoding.js';
import { convertCloudEvents } from './cloudevents.js';
import type { BatchPublisher } from './publisher.js';
import { routeBatch } from './route.js';
import type { Counter, Histogram } from 'prom-client';
import type { MeterDefinitions } from '../shared/events/meters.js';

type BodyShape = 'one' | 'batch' | 'either';

export const cloudEventsMediaTypes: Record<string, BodyShape> = {
  'application/cloudevents+json': 'one',
  'application/cloudevents-batch+json': 'batch',
  'application/json': 'either',
};

export function cloudEventsShape(contentType: string | undefined): BodyShape {
  const type = (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
  const shape = Object.hasOwn(cloudEventsMediaTypes, type) ? cloudEventsMediaTypes[type] : undefined;
  if (shape === undefined)
    throw new DrawdownError(
      'unsupported_media_type',
      `Content-Type ${JSON.stringify(type)} is not application/cloudevents+json, application/cloudevents-batch+json or application/json`,
    );
  return shape;
}

/** The decoded body as a list of CloudEvents, as its media type says it is. */
function asList(decoded: unknown, shape: BodyShape): unknown[] {
  if (Array.isArray(decoded)) {
    if (shape === 'one')
      throw new DrawdownError(
        'body_malformed',
        'application/cloudevents+json carries one CloudEvent (a JSON object); send an array as application/cloudevents-batch+json',
      );
    return decoded;
  }
  if (shape === 'batch')
    throw new DrawdownError('body_not_array', 'application/cloudevents-batch+json must be a JSON array of CloudEvents');
  return [decoded];
}

const noMappings: EventMappings = new Map();

/** What the route needs of the gateway's dependencies (ingest/gateway.ts IngestDeps has all of it). */
export interface CloudEventsDeps {
  publisher: Pick<BatchPublisher, 'publish' | 'partitions'>;
  meters: MeterDefinitions;
  catalogRevision: () => number;
  limits: { batchEventsMax: number; bodyBytesMax: number; bodyTimeoutMs: number; lateMs: number; skewMs: number };
  metrics: { events: Counter; batches: Counter<'outcome'>; batchSize: Histogram };
  now?: () => number;
  eventMappings?: () => EventMappings;
}

export function cloudEventsHandler(
  deps: CloudEventsDeps,
): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const now = deps.now ?? Date.now;
  return async (req, res) => {
    try {
      const shape = cloudEventsShape(req.headers['content-type']);
      checkContentEncoding(req.headers['content-encoding']);
      const body = await readBody(req, deps.limits.bodyBytesMax, deps.limits.bodyTimeoutMs);
      const receivedMs = now();
      const catalogRevision = deps.catalogRevision();
      const list = asList(decodeBatch(body, 'json'), shape);
      const eventsMax = deps.limits.batchEventsMax;
      if (list.length > eventsMax)
        throw new DrawdownError(
          'batch_too_many_events',
          `batch has ${list.length} CloudEvents; the limit is ${eventsMax}`,
        );
      const window = { receivedMs, lateMs: deps.limits.lateMs, skewMs: deps.limits.skewMs };
      const { events } = convertCloudEvents(list, deps.eventMappings?.() ?? noMappings, deps.meters, window);
      if (events.length === 0) {
        deps.metrics.batches.inc({ outcome: 'empty' });
        res.writeHead(204).end();
        return;
      }
      // One CloudEvent feeds every meter that maps its type, so the usage events are held to the limits too.
      if (events.length > eventsMax)
        throw new DrawdownError(
          'batch_too_many_events',
          `${list.length} CloudEvents map to ${events.length} usage events; the limit is ${eventsMax}`,
        );
      const usage = Buffer.from(JSON.stringify(events), 'utf8');
      if (usage.length > deps.limits.bodyBytesMax)
        throw new DrawdownError(
          'body_too_large',
          `${list.length} CloudEvents map to ${usage.length} bytes of usage events; the limit is ${deps.limits.bodyBytesMax}: send smaller batches`,
        );
      const parts = routeBatch(usage, 'json', events, deps.publisher.partitions);
      // No Idempotency-Key: a retry is recognised by its events' ids, derived from (source, id).
      await deps.publisher.publish(parts, 'json', receivedMs, undefined, catalogRevision, usage);
      deps.metrics.batches.inc({ outcome: 'accepted' });
      deps.metrics.events.inc(events.length);
      deps.metrics.batchSize.observe(events.length);
      res.writeHead(204).end();
    } catch (error) {
      deps.metrics.batches.inc({ outcome: error instanceof DrawdownError ? error.code : 'internal' });
      throw error;
    }
  };
}
