/**
 * What a well-behaved client does (and the SDK does): send a batch under a
 * fixed Idempotency-Key and retry on connection errors, 429 and 5xx until the
 * gateway answers 2xx — with a bounded number of attempts.
 */
import { packr } from './harness.js';

export async function sendUntilAccepted(
  baseUrl: () => string,
  events: unknown[],
  key: string,
  attemptsMax = 300,
  delayMs = 100,
): Promise<{ attempts: number; duplicate: boolean }> {
  const body = packr.pack(events);
  let lastProblem = '';
  for (let attempt = 1; attempt <= attemptsMax; attempt++) {
    try {
      const response = await fetch(`${baseUrl()}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/msgpack', 'idempotency-key': key },
        body,
        signal: AbortSignal.timeout(5_000),
      });
      const json = (await response.json()) as { duplicate?: boolean; code?: string };
      if (response.status === 202) return { attempts: attempt, duplicate: json.duplicate === true };
      if (response.status !== 429 && response.status < 500)
        throw new Error(`batch ${key} refused: ${response.status} ${JSON.stringify(json)}`);
      lastProblem = `${response.status} ${json.code}`;
    } catch (error) {
      if ((error as Error).message.startsWith(`batch ${key} refused`)) throw error;
      lastProblem = (error as Error).message;
    }
    await new Promise((r) => setTimeout(r, delayMs));
  }
  throw new Error(`batch ${key} not accepted after ${attemptsMax} attempts (last: ${lastProblem})`);
}
