/**
 * What a notice is: its types, its JSON (the Standard Webhooks payload
 * shape, `{id, type, timestamp, data}`), its deterministic id and the stream
 * subject it is published on (docs/notices.md).
 */
import { createHash } from 'node:crypto';

export const noticeTypes = [
  'balance.low',
  'balance.exhausted',
  'balance.over_limit',
  'balance.recovered',
  'grant.expiring',
  'top_up.requested',
  'purchase.posted',
  'webhook.endpoint_disabled',
] as const;
export type NoticeType = (typeof noticeTypes)[number];

export interface Notice {
  /** Deterministic: the same crossing always has the same id (the stream's Nats-Msg-Id, the webhook-id). */
  id: string;
  type: NoticeType;
  /** When the crossing was observed (ISO-8601): the instant of the figures that crossed. */
  timestamp: string;
  /** Figures as decimal strings, ids as strings; customer and unit on every account notice. */
  data: Record<string, string | number | boolean | null>;
}

/** Subjects `drawdown.notices.<type>`, e.g. drawdown.notices.balance.low; the stream takes `drawdown.notices.>`. */
export const noticeSubjectPrefix = 'drawdown.notices';

export function noticeSubject(type: NoticeType): string {
  return `${noticeSubjectPrefix}.${type}`;
}

/**
 * `ntc_` + 22 characters (132 bits) of base64url(sha256(parts)). Parts are
 * printable (customer, unit and threshold texts, kinds, counters), so joining
 * them with NUL is unambiguous.
 */
export function noticeId(parts: readonly (string | number)[]): string {
  const hash = createHash('sha256').update(parts.map(String).join('\0')).digest('base64url');
  return `ntc_${hash.slice(0, 22)}`;
}

export function isNoticeType(value: unknown): value is NoticeType {
  return typeof value === 'string' && (noticeTypes as readonly string[]).includes(value);
}
