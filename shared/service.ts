/**
 * The HTTP shell every drawdown process serves: its own routes plus
 * /healthz (the process is up), /readyz (its dependencies answer) and
 * /metrics (Prometheus).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, type Registry } from 'prom-client';
import type { Auth } from './auth.js';
import { createRouter, sendJson, type Route } from './http.js';
import type { Logger } from './log.js';

export interface ServiceOptions {
  host: string;
  port: number;
  routes: Route[];
  registry: Registry;
  ready: () => Promise<Record<string, boolean>>;
  log: Logger;
  /** The key table checked on every non-public route, or 'off'. */
  auth: Auth;
  /** Whole-request time limit (slow clients), in ms. */
  requestTimeoutMs: number;
}

const knownMethods: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export interface RunningService {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export async function startService(options: ServiceOptions): Promise<RunningService> {
  const routes: Route[] = [
    ...options.routes,
    {
      method: 'GET',
      path: /^\/healthz$/,
      // Health, readiness and metrics stay open: kubelet probes and Prometheus
      // reach them from inside the cluster without credentials. Keep them
      // inside the network (bind or filter), not behind keys.
      scope: 'public',
      handler: async (_req, res) => sendJson(res, 200, { status: 'ok' }),
    },
    {
      method: 'GET',
      path: /^\/readyz$/,
      scope: 'public',
      handler: async (_req, res) => {
        const checks = await options.ready();
        const ok = Object.values(checks).every(Boolean);
        sendJson(res, ok ? 200 : 503, { status: ok ? 'ready' : 'not_ready', checks });
      },
    },
    {
      method: 'GET',
      path: /^\/metrics$/,
      scope: 'public',
      handler: async (_req, res) => {
        const text = await options.registry.metrics();
        res.writeHead(200, { 'content-type': options.registry.contentType });
        res.end(text);
      },
    },
  ];
  // Every response, refusals before any handler (401, 403, 404, 405, 408) included. Labels stay
  // bounded: route templates, a known method or "other", and the status.
  const requests = new Counter({
    name: 'drawdown_http_requests_total',
    help: 'HTTP responses by method, route template and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [options.registry],
  });
  const observe = (method: string, route: string, status: number): void =>
    requests.inc({ method: knownMethods.has(method) ? method : 'other', route, status: String(status) });
  const server = createServer(
    { requestTimeout: options.requestTimeoutMs, headersTimeout: Math.min(options.requestTimeoutMs, 60_000) },
    createRouter(routes, options.log, options.auth, observe),
  );
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`;
  options.log.info({ url }, 'listening');
  return {
    server,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
