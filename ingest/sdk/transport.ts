/**
 * One attempt to deliver one batch: POST {url}/v1/events with the batch's
 * MessagePack body and Idempotency-Key, classified into accepted, retry or
 * rejected.
 *
 * Global fetch (Node 20's undici), not node:http: undici keeps connections
 * alive in a pool by default, AbortSignal.timeout bounds connect + send +
 * answer with one deadline, and it needs no dependency. A pooled socket the
 * gateway closed (a restart) surfaces as a network error, which is retried
 * like any other.
 */
import { parseRetryAfterMs } from './retry.js';

export type AttemptOutcome =
  | { kind: 'accepted'; status: number; accepted: number | undefined }
  | {
      kind: 'failed';
      status: number | undefined;
      reason: string;
      retryAfterMs: number | undefined;
      problem: Record<string, unknown> | undefined;
    };

export interface AttemptRequest {
  eventsUrl: string;
  apiKey: string | undefined;
  idempotencyKey: string;
  body: Buffer;
  requestTimeoutMs: number;
}

/** The gateway's answers are small JSON; anything larger is cut off, not buffered. */
const responseBytesMax = 64 * 1024;

async function readCapped(response: Response): Promise<string> {
  if (response.body === null) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > responseBytesMax) {
      await reader.cancel();
      break;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function networkReason(error: unknown): string {
  const err = error as Error & { cause?: { code?: string; message?: string } };
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'request timed out';
  return err.cause?.code ?? err.cause?.message ?? err.message ?? String(error);
}

export async function attemptBatch(request: AttemptRequest): Promise<AttemptOutcome> {
  const headers: Record<string, string> = {
    'content-type': 'application/msgpack',
    'idempotency-key': request.idempotencyKey,
    accept: 'application/json',
  };
  if (request.apiKey !== undefined) headers.authorization = `Bearer ${request.apiKey}`;
  let response: Response;
  let text: string;
  try {
    response = await fetch(request.eventsUrl, {
      method: 'POST',
      headers,
      body: request.body,
      signal: AbortSignal.timeout(request.requestTimeoutMs),
    });
    text = await readCapped(response);
  } catch (error) {
    return {
      kind: 'failed',
      status: undefined,
      reason: networkReason(error),
      retryAfterMs: undefined,
      problem: undefined,
    };
  }
  const json = parseJsonObject(text);
  if (response.status >= 200 && response.status < 300) {
    return {
      kind: 'accepted',
      status: response.status,
      accepted: typeof json?.accepted === 'number' ? json.accepted : undefined,
    };
  }
  const code = typeof json?.code === 'string' ? json.code : undefined;
  return {
    kind: 'failed',
    status: response.status,
    reason: `${response.status}${code === undefined ? '' : ` ${code}`}`,
    retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after'), Date.now()),
    problem: json,
  };
}
