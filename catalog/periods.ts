/**
 * Grant and billing periods in UTC, from an anchor instant.
 *
 * Monthly periods keep the anchor's day of month, clamped to the month's
 * length, and return to it when the month allows: an anchor on Jan 31 gives
 * Feb 28 (29 in leap years), Mar 31, Apr 30, … — never drifting to the 28th.
 * Yearly periods do the same for Feb 29.
 */
export type Frequency = 'daily' | 'monthly' | 'yearly';

/** A calendar duration, e.g. for time-limited rollover ("expire 2 months after the period end"). */
export interface Duration {
  months: number;
  days: number;
}

/** ISO-8601 "P2M", "P30D", "P1Y", "P1M15D" → months and days; undefined if malformed. */
export function parseDuration(text: string): Duration | undefined {
  const match = /^P(?:(\d{1,3})Y)?(?:(\d{1,4})M)?(?:(\d{1,5})D)?$/.exec(text);
  if (match === null || text === 'P') return undefined;
  const months = Number(match[1] ?? 0) * 12 + Number(match[2] ?? 0);
  const days = Number(match[3] ?? 0);
  return months === 0 && days === 0 ? undefined : { months, days };
}

const dayMs = 86_400_000;

/** The longest lead time a notice may announce an expiry with (grant.expiring): a year. */
export const leadTimeMaxMs = 366 * dayMs;

/**
 * A notice lead time, ISO-8601 in days, hours and minutes only ("P7D",
 * "PT12H", "P1DT6H", "PT30M") → ms; undefined if malformed, zero, or longer
 * than `leadTimeMaxMs`. Months are refused: "expires within a month" would
 * mean a different span each month.
 */
export function parseLeadTime(text: string): number | undefined {
  const match = /^P(?:(\d{1,3})D)?(?:T(?:(\d{1,4})H)?(?:(\d{1,6})M)?)?$/.exec(text);
  if (match === null || text === 'P' || text.endsWith('T')) return undefined;
  const ms = Number(match[1] ?? 0) * dayMs + Number(match[2] ?? 0) * 3_600_000 + Number(match[3] ?? 0) * 60_000;
  return ms > 0 && ms <= leadTimeMaxMs ? ms : undefined;
}

/** Order of frequencies, for "a grant is never longer than its billing period". */
export const frequencyRank: Record<Frequency, number> = { daily: 0, monthly: 1, yearly: 2 };

function addMonthsClamped(anchorMs: number, months: number): number {
  const anchor = new Date(anchorMs);
  const year = anchor.getUTCFullYear();
  const month = anchor.getUTCMonth() + months;
  const targetYear = year + Math.floor(month / 12);
  const targetMonth = ((month % 12) + 12) % 12;
  const daysInTarget = new Date(Date.UTC(targetYear, targetMonth + 1, 0)).getUTCDate();
  const day = Math.min(anchor.getUTCDate(), daysInTarget);
  return Date.UTC(
    targetYear,
    targetMonth,
    day,
    anchor.getUTCHours(),
    anchor.getUTCMinutes(),
    anchor.getUTCSeconds(),
    anchor.getUTCMilliseconds(),
  );
}

/** Start of period `index` (0 = the anchor itself; negative goes back). */
export function periodStart(anchorMs: number, frequency: Frequency, index: number): number {
  switch (frequency) {
    case 'daily':
      return anchorMs + index * dayMs;
    case 'monthly':
      return addMonthsClamped(anchorMs, index);
    case 'yearly':
      return addMonthsClamped(anchorMs, index * 12);
  }
}

/** Index of the period containing `atMs` (periods are [start, next start)). */
export function periodIndexAt(anchorMs: number, frequency: Frequency, atMs: number): number {
  if (frequency === 'daily') return Math.floor((atMs - anchorMs) / dayMs);
  const monthsPer = frequency === 'monthly' ? 1 : 12;
  const a = new Date(anchorMs);
  const t = new Date(atMs);
  // An estimate from calendar months, then corrected by at most one step either way.
  let index = Math.floor(
    ((t.getUTCFullYear() - a.getUTCFullYear()) * 12 + (t.getUTCMonth() - a.getUTCMonth())) / monthsPer,
  );
  while (periodStart(anchorMs, frequency, index) > atMs) index--;
  while (periodStart(anchorMs, frequency, index + 1) <= atMs) index++;
  return index;
}

export interface Period {
  index: number;
  startMs: number;
  endMs: number;
}

export function periodAt(anchorMs: number, frequency: Frequency, atMs: number): Period {
  const index = periodIndexAt(anchorMs, frequency, atMs);
  return {
    index,
    startMs: periodStart(anchorMs, frequency, index),
    endMs: periodStart(anchorMs, frequency, index + 1),
  };
}

/**
 * Period starts in (fromMs, untilMs], i.e. the boundaries a settlement window
 * crosses. `limit` bounds the work: a window spanning more boundaries than
 * that is a caller error (settle in shorter windows).
 */
export function boundariesIn(
  anchorMs: number,
  frequency: Frequency,
  fromMs: number,
  untilMs: number,
  limit = 1_000,
): number[] {
  const out: number[] = [];
  let index = periodIndexAt(anchorMs, frequency, fromMs) + 1;
  for (
    let start = periodStart(anchorMs, frequency, index);
    start <= untilMs;
    start = periodStart(anchorMs, frequency, ++index)
  ) {
    if (out.length >= limit)
      throw new RangeError(
        `more than ${limit} ${frequency} boundaries between ${new Date(fromMs).toISOString()} and ${new Date(untilMs).toISOString()}`,
      );
    out.push(start);
  }
  return out;
}

export function addDuration(atMs: number, duration: Duration): number {
  return addMonthsClamped(atMs, duration.months) + duration.days * dayMs;
}
