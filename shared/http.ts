/**
 * The few HTTP pieces every drawdown service shares: a bounded body reader,
 * JSON and problem+json responses, and a tiny router. Node's own http module
 * keeps the gateway's hot path free of framework work.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authorize, type Auth, type RouteScope } from './auth.js';
import { storeUnavailable } from './clickhouse/store.js';
import { DrawdownError, isDrawdownError } from './errors.js';
import type { Logger } from './log.js';
import { requestTraceId } from './trace-context.js';

/**
 * Reads a request body, refusing it as soon as it passes `limitBytes` (from
 * Content-Length, or while streaming) and when it takes longer than
 * `timeoutMs` to arrive, so a slow or huge client cannot hold memory.
 */
export function readBody(req: IncomingMessage, limitBytes: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limitBytes) {
      reject(new DrawdownError('body_too_large', `body of ${declared} bytes exceeds the limit of ${limitBytes} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let received = 0;
    const timer = setTimeout(
      () => finish(new DrawdownError('request_timeout', `body not received within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      if (received > limitBytes) {
        finish(new DrawdownError('body_too_large', `body exceeds the limit of ${limitBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => finish();
    const onError = (error: Error): void => finish(error);
    function finish(error?: Error): void {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      if (error) {
        // Stop reading: the rest of an oversized or stalled body is never buffered.
        req.pause();
        reject(error);
      } else resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received));
    }
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * A client's X-Request-Id is kept when it is short printable ASCII without
 * spaces, so it can be searched for in logs and cannot forge log lines;
 * anything else is replaced by a fresh UUID.
 */
const requestIdPattern = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

export function requestIdFor(req: IncomingMessage): string {
  const header = req.headers['x-request-id'];
  const given = Array.isArray(header) ? header[0] : header;
  return given !== undefined && requestIdPattern.test(given) ? given : randomUUID();
}

export function sendProblem(res: ServerResponse, error: DrawdownError, closeConnection = false): void {
  const headers: Record<string, string> = {};
  if (error.retryAfterSeconds !== undefined) headers['retry-after'] = String(error.retryAfterSeconds);
  if (error.code === 'unauthorized') headers['www-authenticate'] = 'Bearer';
  // After refusing a body we did not read, the connection cannot carry another request.
  if (closeConnection) headers.connection = 'close';
  const problem = error.toProblem();
  // The router set X-Request-Id before any handler ran; the body repeats it so a pasted error finds its log lines.
  const requestId = res.getHeader('x-request-id');
  if (typeof requestId === 'string') problem.request_id = requestId;
  const text = JSON.stringify(problem);
  res.writeHead(error.status, {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export type Handler = (req: IncomingMessage, res: ServerResponse, params: string[]) => Promise<void>;

export interface Route {
  method: string;
  /** Anchored pattern; capture groups become `params`. */
  path: RegExp;
  /**
   * The API-key scope the route needs. Required, so no route can forget it;
   * `public` only for /healthz, /readyz and /metrics, which probes and
   * Prometheus reach from inside the network.
   */
  scope: RouteScope;
  handler: Handler;
}

/**
 * Dispatches to the first route whose path matches; turns thrown errors into
 * problem+json. Unless auth is off, a route's scope is checked before its
 * handler runs — so before any body is read, and a refused request does no
 * work: 401 without a valid key, 403 for a key without the scope.
 */
export function createRouter(
  routes: readonly Route[],
  log: Logger,
  auth: Auth,
  observe?: RequestObserver,
): (req: IncomingMessage, res: ServerResponse) => void {
  const templates = new Map(routes.map((r) => [r, routeTemplate(r.path)]));
  return (req, res) => {
    const path = loggablePath(req.url);
    // Every response carries the request's id, and every log line about it (via this child logger).
    const requestId = requestIdFor(req);
    res.setHeader('x-request-id', requestId);
    // Made only when something is logged: a child logger per request would cost the hot path.
    const requestLog = (): Logger => {
      // W3C traceparent's trace id (shared/trace-context.ts), so a request's lines join its trace.
      const traceId = requestTraceId(req);
      return log.child(traceId === undefined ? { requestId } : { requestId, trace_id: traceId });
    };
    // One line per request at debug: at info a busy gateway would log more than it ingests.
    if (log.isLevelEnabled('debug')) {
      const startedMs = performance.now();
      res.once('finish', () =>
        requestLog().debug(
          { method: req.method, path, status: res.statusCode, durationMs: Math.round(performance.now() - startedMs) },
          'request completed',
        ),
      );
    }
    let pathMatched = false;
    let template = 'unmatched';
    if (observe !== undefined) res.once('finish', () => observe(req.method ?? '', template, res.statusCode));
    for (const route of routes) {
      const match = route.path.exec(path);
      if (!match) continue;
      pathMatched = true;
      template = templates.get(route)!;
      if (route.method !== req.method) continue;
      let params: string[];
      try {
        if (auth !== 'off' && route.scope !== 'public') authorize(auth, req.headers.authorization, route.scope);
        params = match.slice(1).map((p) => decodeParam(p));
      } catch (error) {
        respondWithError(req, res, error, requestLog());
        return;
      }
      route.handler(req, res, params).catch((error: unknown) => respondWithError(req, res, error, requestLog()));
      return;
    }
    respondWithError(
      req,
      res,
      new DrawdownError(pathMatched ? 'method_not_allowed' : 'not_found', `${req.method} ${path}`),
      requestLog(),
    );
  };
}

/** Told of every response: its method, the route's path template (`unmatched` for none) and status. */
export type RequestObserver = (method: string, route: string, status: number) => void;

/** `^/v1/customers/([…]{1,384})/balance$` → `/v1/customers/{}/balance`: a bounded label for metrics. */
export function routeTemplate(path: RegExp): string {
  return path.source
    .replace(/^\^/, '')
    .replace(/\$$/, '')
    .replace(/\((?:[^()\\]|\\.)*\)/g, '{}')
    .replace(/\\\//g, '/');
}

/** A path segment, percent-decoded; a broken escape is the client's 400, not an exception in the server. */
function decodeParam(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new DrawdownError('request_invalid', `path segment ${JSON.stringify(segment)} is not valid percent-encoding`);
  }
}

/**
 * A request URL as it may be logged: the path alone. A query string can carry
 * a secret (a client that sends its key as `?api_key=`), and logs are read by
 * more people than keys are.
 */
export function loggablePath(url: string | undefined): string {
  const path = url ?? '/';
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/** The one place a thrown error becomes what the client sees. */
export function problemFor(error: unknown): DrawdownError {
  if (isDrawdownError(error)) return error;
  return storeUnavailable(error) ?? new DrawdownError('internal', 'internal error', { cause: error });
}

export function respondWithError(req: IncomingMessage, res: ServerResponse, error: unknown, log: Logger): void {
  const problem = problemFor(error);
  // Every refusal is one line at info or above, so the request_id a client pastes from an error body finds it at
  // the default level. A bug gets its stack; a dependency being away (503) is an operating condition, logged once
  // per request without one so an outage cannot flood the log.
  const refused = { status: problem.status, code: problem.code, method: req.method, path: loggablePath(req.url) };
  if (problem.code === 'internal') log.error({ err: error, ...refused }, 'request failed');
  else if (problem.status >= 500) {
    const cause = problem.cause instanceof Error ? problem.cause.message : undefined;
    log.warn(
      { ...refused, detail: problem.message, ...(cause === undefined ? {} : { cause }) },
      'request refused: dependency unavailable',
    );
  } else log.info(refused, 'request rejected');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendProblem(res, problem, !req.readableEnded);
}

export function queryParams(req: IncomingMessage): URLSearchParams {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
}

export async function readJsonBody(
  req: IncomingMessage,
  limitBytes = 1024 * 1024,
  timeoutMs = 30_000,
): Promise<unknown> {
  const body = await readBody(req, limitBytes, timeoutMs);
  if (body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new DrawdownError('body_malformed', `body is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}
