/**
 * Standard Webhooks signing (https://www.standardwebhooks.com, spec
 * "Signature scheme"): the secret is `whsec_` + base64 of 24 random bytes;
 * the signature is `v1,` + base64(HMAC-SHA256(secret bytes,
 * `${webhook-id}.${webhook-timestamp}.${body}`)), the timestamp in whole
 * seconds. Receivers verify with any Standard Webhooks library (the tests
 * use the `standardwebhooks` npm package, not this file).
 */
import { createHmac, randomBytes } from 'node:crypto';

const secretPrefix = 'whsec_';

export function newWebhookSecret(): string {
  return `${secretPrefix}${randomBytes(24).toString('base64')}`;
}

export function signatureOf(secret: string, id: string, timestampSec: number, body: string): string {
  const key = Buffer.from(secret.startsWith(secretPrefix) ? secret.slice(secretPrefix.length) : secret, 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampSec}.${body}`).digest('base64')}`;
}

/** The headers of one attempt: signed at the attempt's own time, so a retry carries a fresh timestamp. */
export function webhookHeaders(secret: string, id: string, nowMs: number, body: string): Record<string, string> {
  const timestampSec = Math.floor(nowMs / 1000);
  return {
    'content-type': 'application/json',
    'user-agent': 'drawdown-webhooks/1',
    'webhook-id': id,
    'webhook-timestamp': String(timestampSec),
    'webhook-signature': signatureOf(secret, id, timestampSec, body),
  };
}
