/**
 * createClient's options: every default and limit in one place, checked once
 * at construction (a bad option throws `option_invalid` naming it), then frozen.
 */
import { DrawdownSdkError } from './errors.js';
import type { RetryInfo } from './retry.js';

const KiB = 1024;
const MiB = 1024 * KiB;

export type FullPolicy = 'block' | 'drop';

export interface ClientOptions {
  /** The gateway's base URL, e.g. http://127.0.0.1:8080 (the SDK posts to `${url}/v1/events`). */
  url: string;
  /**
   * Base URL of the process serving credit holds (hold, release, entitlement): the settlement service started with
   * NATS, or the all-in-one. Default: `url` (right for `drawdown start`, where one port serves everything).
   */
  holdsUrl?: string;
  /**
   * An API key sent as `Authorization: Bearer <key>`: with the `ingest` scope for track(), hold() and release(),
   * and `read` as well for entitlement().
   */
  apiKey?: string;
  /** Events per request. The gateway takes up to 10,000 by default. */
  batchEventsMax?: number;
  /** Encoded bytes per request. The gateway takes up to 4 MiB by default. */
  batchBytesMax?: number;
  /** Longest time a tracked event waits before its batch is sent, in ms. */
  flushIntervalMs?: number;
  /** Events held in memory: waiting in a batch, queued, in flight and being retried. */
  bufferedEventsMax?: number;
  /** Encoded bytes held in memory, counted like bufferedEventsMax. */
  bufferedBytesMax?: number;
  /** What track() does when the buffer is full: wait for room, or drop the new event and count it. */
  whenFull?: FullPolicy;
  /** 'block' only: tracks allowed to wait for room at once; one more throws `too_many_waiting`. */
  blockedTracksMax?: number;
  /** Requests in flight at once (a batch waiting to retry holds its slot). */
  requestsInFlightMax?: number;
  /** One request's time limit, in ms; a timed-out request is retried under the same key. */
  requestTimeoutMs?: number;
  /** Attempts per batch, the first included. */
  retryAttemptsMax?: number;
  /** No attempt starts later than this after the first, in ms. Keep it below the gateway's duplicate window. */
  retryElapsedMaxMs?: number;
  /** First back-off, in ms; doubled per attempt. */
  retryDelayBaseMs?: number;
  /** Longest back-off, in ms (Retry-After may ask for longer, up to retryAfterMaxMs). */
  retryDelayMaxMs?: number;
  /** Longest Retry-After the SDK obeys, in ms: a guard against a broken proxy asking for hours. */
  retryAfterMaxMs?: number;
  /**
   * hold(), release() and entitlement(): no attempt starts later than this after the first, in ms. They sit on a
   * request path, so they give up far sooner than batches do (attempts are also capped by retryAttemptsMax).
   */
  callRetryElapsedMaxMs?: number;
  /** Called once per batch that failed for good (a 4xx, or retries exhausted). */
  onError?: (error: DrawdownSdkError) => void;
  /** Called before each retry with the reason and the delay chosen. */
  onRetry?: (info: RetryInfo) => void;
}

export interface ResolvedOptions extends Required<Omit<ClientOptions, 'apiKey' | 'onError' | 'onRetry'>> {
  apiKey: string | undefined;
  onError: ((error: DrawdownSdkError) => void) | undefined;
  onRetry: ((info: RetryInfo) => void) | undefined;
  eventsUrl: string;
}

function baseUrl(name: string, text: unknown): string {
  let url: URL;
  try {
    url = new URL(text as string);
  } catch {
    invalid(name, `must be an absolute http(s) URL, got ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    invalid(name, `must be http or https, got ${url.protocol}`);
  return url.href.endsWith('/') ? url.href.slice(0, -1) : url.href;
}

/**
 * Defaults sit well under the gateway's limits (10,000 events, 4 MiB) so a default client is never refused for size.
 */
export const defaultOptions = Object.freeze({
  batchEventsMax: 1_000,
  batchBytesMax: 1 * MiB,
  flushIntervalMs: 1_000,
  bufferedEventsMax: 20_000,
  bufferedBytesMax: 16 * MiB,
  whenFull: 'block' as FullPolicy,
  blockedTracksMax: 10_000,
  requestsInFlightMax: 4,
  requestTimeoutMs: 10_000,
  retryAttemptsMax: 15, // with the default back-off, 40–60 s of outage before retryElapsedMaxMs ends it
  retryElapsedMaxMs: 60_000, // well inside the gateway's 10-minute duplicate window
  retryDelayBaseMs: 100,
  retryDelayMaxMs: 10_000,
  retryAfterMaxMs: 60_000,
  callRetryElapsedMaxMs: 10_000, // a user waits on a hold: past 10 s, answer them and decide without drawdown
});

const integerLimits: Record<keyof typeof defaultOptions & string, [number, number] | undefined> = {
  batchEventsMax: [1, 1_000_000],
  batchBytesMax: [1 * KiB, 64 * MiB],
  flushIntervalMs: [1, 3_600_000],
  bufferedEventsMax: [1, 100_000_000],
  bufferedBytesMax: [1 * KiB, 4096 * MiB],
  whenFull: undefined,
  blockedTracksMax: [0, 10_000_000],
  requestsInFlightMax: [1, 256],
  requestTimeoutMs: [1, 3_600_000],
  retryAttemptsMax: [1, 1_000],
  retryElapsedMaxMs: [0, 24 * 3_600_000],
  retryDelayBaseMs: [1, 3_600_000],
  retryDelayMaxMs: [1, 3_600_000],
  retryAfterMaxMs: [0, 24 * 3_600_000],
  callRetryElapsedMaxMs: [0, 24 * 3_600_000],
};

function invalid(name: string, message: string): never {
  throw new DrawdownSdkError('option_invalid', `createClient option ${name} ${message}`);
}

export function resolveOptions(options: ClientOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) invalid('(options)', 'must be an object');
  const base = baseUrl('url', options.url);
  const holdsUrl = options.holdsUrl === undefined ? base : baseUrl('holdsUrl', options.holdsUrl);
  if (
    options.apiKey !== undefined &&
    (typeof options.apiKey !== 'string' || !/^[A-Za-z0-9._~+/-]+=*$/.test(options.apiKey))
  ) {
    invalid('apiKey', 'must be a non-empty token of [A-Za-z0-9._~+/-]');
  }
  const resolved: Record<string, unknown> = { ...defaultOptions };
  for (const [name, limits] of Object.entries(integerLimits)) {
    const value = (options as unknown as Record<string, unknown>)[name];
    if (value === undefined) continue;
    if (limits !== undefined) {
      if (typeof value !== 'number' || !Number.isSafeInteger(value))
        invalid(name, `must be an integer, got ${String(value)}`);
      if (value < limits[0] || value > limits[1])
        invalid(name, `must be between ${limits[0]} and ${limits[1]}, got ${value}`);
    }
    resolved[name] = value;
  }
  if (resolved.whenFull !== 'block' && resolved.whenFull !== 'drop')
    invalid('whenFull', `must be 'block' or 'drop', got ${String(resolved.whenFull)}`);
  for (const name of ['onError', 'onRetry'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function') invalid(name, 'must be a function');
  }
  const bufferedEventsMax = resolved.bufferedEventsMax as number;
  const bufferedBytesMax = resolved.bufferedBytesMax as number;
  // A full batch must fit the buffer, or a batch could never be sealed by size.
  if ((resolved.batchEventsMax as number) > bufferedEventsMax)
    invalid(
      'batchEventsMax',
      `(${String(resolved.batchEventsMax)}) must not exceed bufferedEventsMax (${bufferedEventsMax})`,
    );
  if ((resolved.batchBytesMax as number) > bufferedBytesMax)
    invalid(
      'batchBytesMax',
      `(${String(resolved.batchBytesMax)}) must not exceed bufferedBytesMax (${bufferedBytesMax})`,
    );
  return Object.freeze({
    ...(resolved as Omit<ResolvedOptions, 'apiKey' | 'onError' | 'onRetry' | 'eventsUrl' | 'url' | 'holdsUrl'>),
    url: base,
    holdsUrl,
    eventsUrl: `${base}/v1/events`,
    apiKey: options.apiKey,
    onError: options.onError,
    onRetry: options.onRetry,
  });
}
