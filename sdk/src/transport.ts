/**
 * One HTTP attempt, classified: a batch (POST {url}/v1/events with the
 * batch's MessagePack body and Idempotency-Key) into accepted, retry or
 * rejected; an API call (a hold, a release, an entitlement check) into its
 * answer or a failure to retry.
 *
 * Global fetch (Node 20's undici), not node:http: undici keeps connections
 * alive in a pool by default, AbortSignal.timeout bounds connect + send +
 * answer with one deadline, and it needs no dependency. A pooled socket the
 * gateway closed (a restart) surfaces as a network error, which is retried
 * like any other.
 */
import { isRetryable, parseRetryAfterMs } from './retry.js';

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
  body: Uint8Array<ArrayBuffer>;
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

type Exchange =
  | { kind: 'answered'; status: number; json: Record<string, unknown> | undefined; retryAfterMs: number | undefined }
  | { kind: 'network'; reason: string };

/** One request and its (capped) answer; a network error or timeout is an outcome, never a throw. */
async function exchange(
  url: string,
  init: { method: string; headers: Record<string, string>; body?: Uint8Array<ArrayBuffer> | string },
  requestTimeoutMs: number,
): Promise<Exchange> {
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, { ...init, signal: AbortSignal.timeout(requestTimeoutMs) });
    text = await readCapped(response);
  } catch (error) {
    return { kind: 'network', reason: networkReason(error) };
  }
  return {
    kind: 'answered',
    status: response.status,
    json: parseJsonObject(text),
    retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after'), Date.now()),
  };
}

function failure(answer: Exchange): Extract<AttemptOutcome, { kind: 'failed' }> {
  if (answer.kind === 'network')
    return { kind: 'failed', status: undefined, reason: answer.reason, retryAfterMs: undefined, problem: undefined };
  const code = typeof answer.json?.code === 'string' ? answer.json.code : undefined;
  return {
    kind: 'failed',
    status: answer.status,
    reason: `${answer.status}${code === undefined ? '' : ` ${code}`}`,
    retryAfterMs: answer.retryAfterMs,
    problem: answer.json,
  };
}

function headersFor(apiKey: string | undefined, extra: Record<string, string>): Record<string, string> {
  const headers: Record<string, string> = { accept: 'application/json', ...extra };
  if (apiKey !== undefined) headers.authorization = `Bearer ${apiKey}`;
  return headers;
}

export async function attemptBatch(request: AttemptRequest): Promise<AttemptOutcome> {
  const answer = await exchange(
    request.eventsUrl,
    {
      method: 'POST',
      headers: headersFor(request.apiKey, {
        'content-type': 'application/msgpack',
        'idempotency-key': request.idempotencyKey,
      }),
      body: request.body,
    },
    request.requestTimeoutMs,
  );
  if (answer.kind === 'answered' && answer.status >= 200 && answer.status < 300) {
    return {
      kind: 'accepted',
      status: answer.status,
      accepted: typeof answer.json?.accepted === 'number' ? answer.json.accepted : undefined,
    };
  }
  return failure(answer);
}

export interface CallRequest {
  url: string;
  method: 'GET' | 'POST';
  apiKey: string | undefined;
  /** Sent as Idempotency-Key, the same on every attempt of one call. */
  idempotencyKey?: string;
  /** A JSON body (POST). */
  body?: unknown;
  requestTimeoutMs: number;
}

export type CallOutcome =
  | { kind: 'answered'; status: number; json: Record<string, unknown> | undefined }
  | Extract<AttemptOutcome, { kind: 'failed' }>;

/**
 * One attempt of an API call. Any 2xx, and any 4xx that retrying cannot fix,
 * is `answered` (the caller reads the body or the problem); network errors,
 * timeouts, 408, 429 and 5xx are `failed`, as for batches.
 */
export async function attemptCall(request: CallRequest): Promise<CallOutcome> {
  const extra: Record<string, string> = {};
  if (request.body !== undefined) extra['content-type'] = 'application/json';
  if (request.idempotencyKey !== undefined) extra['idempotency-key'] = request.idempotencyKey;
  const answer = await exchange(
    request.url,
    {
      method: request.method,
      headers: headersFor(request.apiKey, extra),
      ...(request.body === undefined ? {} : { body: JSON.stringify(request.body) }),
    },
    request.requestTimeoutMs,
  );
  if (answer.kind === 'answered' && !isRetryable(answer.status))
    return { kind: 'answered', status: answer.status, json: answer.json };
  return failure(answer);
}
