import { IncomingMessage } from 'node:http';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * Where a secret could sit in anything logged: the Authorization header of a
 * request (logged as `req`, `request`, or its bare `headers`, at the top level
 * or one level down), and an `apiKey` field. drawdown logs no request headers
 * today; this keeps a future `log.info({ req })` from writing an API key.
 */
export const redactPaths: readonly string[] = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'request.headers.authorization',
  '*.headers.authorization',
  '*.req.headers.authorization',
  'apiKey',
  '*.apiKey',
];

/** A URL without its query string: a key sent as `?api_key=` must not reach a log. */
function withoutQuery(url: unknown): unknown {
  if (typeof url !== 'string') return url;
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/** A logged request (`req` or `request`) keeps everything but its URL's query. */
function requestWithoutQuery(req: unknown): unknown {
  if (typeof req !== 'object' || req === null) return req;
  const r = req as { method?: unknown; url?: unknown; headers?: unknown };
  // A live request holds its socket; what matters of it is these three.
  if (req instanceof IncomingMessage) return { method: r.method, url: withoutQuery(r.url), headers: r.headers };
  return 'url' in req ? { ...req, url: withoutQuery(r.url) } : req;
}

/**
 * drawdown logs a request's `path`, never its URL; these keep a future
 * `log.info({ url: req.url })` or `log.info({ req })` from writing a query string.
 */
export const serializers = { url: withoutQuery, req: requestWithoutQuery, request: requestWithoutQuery };

/**
 * Structured JSON logs (stdout unless a destination is given); secrets are redacted by path, queries dropped from
 * URLs.
 */
export function createLogger(level: string, name: string, destination?: DestinationStream): Logger {
  const options = {
    name,
    level,
    base: { service: name },
    serializers,
    redact: { paths: [...redactPaths], censor: '[redacted]' },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
