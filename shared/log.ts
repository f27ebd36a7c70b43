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

/** Structured JSON logs (stdout unless a destination is given); secrets are redacted by path. */
export function createLogger(level: string, name: string, destination?: DestinationStream): Logger {
  const options = { name, level, base: { service: name }, redact: { paths: [...redactPaths], censor: '[redacted]' } };
  return destination === undefined ? pino(options) : pino(options, destination);
}
