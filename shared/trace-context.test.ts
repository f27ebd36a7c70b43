import { describe, expect, it } from 'vitest';
import { boundTracestate, formatTraceparent, incomingTrace, parseTraceparent } from './trace-context.js';

const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
const parentId = '00f067aa0ba902b7';

describe('traceparent', () => {
  it('given the spec example, when parsed, then trace id, parent id and flags come out and format back the same', () => {
    const parsed = parseTraceparent(`00-${traceId}-${parentId}-01`);
    expect(parsed).toEqual({ traceId, parentId, flags: 1 });
    expect(formatTraceparent(parsed!)).toBe(`00-${traceId}-${parentId}-01`);
    expect(parseTraceparent(`00-${traceId}-${parentId}-00`)?.flags).toBe(0);
  });

  it.each([
    ['absent', undefined],
    ['empty', ''],
    ['all-zero trace id', `00-${'0'.repeat(32)}-${parentId}-01`],
    ['all-zero parent id', `00-${traceId}-${'0'.repeat(16)}-01`],
    ['uppercase hex', `00-${traceId.toUpperCase()}-${parentId}-01`],
    ['version ff', `ff-${traceId}-${parentId}-01`],
    ['version not hex', `0g-${traceId}-${parentId}-01`],
    ['trace id one digit short', `00-${traceId.slice(1)}-${parentId}-01`],
    ['parent id one digit long', `00-${traceId}-${parentId}0-01`],
    ['flags one digit', `00-${traceId}-${parentId}-1`],
    ['version 00 with a trailing field', `00-${traceId}-${parentId}-01-extra`],
    ['underscores for dashes', `00_${traceId}_${parentId}_01`],
    ['two headers joined by Node', `00-${traceId}-${parentId}-01, 00-${traceId}-${parentId}-01`],
    ['a header given twice as an array', [`00-${traceId}-${parentId}-01`]],
  ])('given %s, when parsed, then it is ignored', (_name, header) => {
    expect(parseTraceparent(header)).toBeUndefined();
  });

  it('given a later version, when parsed, then its first four fields are read and it is forwarded as version 00', () => {
    const later = parseTraceparent(`cc-${traceId}-${parentId}-01-what-the-future-adds`);
    expect(later).toEqual({ traceId, parentId, flags: 1 });
    expect(formatTraceparent(later!)).toBe(`00-${traceId}-${parentId}-01`);
    expect(parseTraceparent(`cc-${traceId}-${parentId}-01x`)).toBeUndefined();
  });
});

describe('tracestate', () => {
  it('given list members, when bounded, then they are carried as sent', () => {
    expect(boundTracestate('congo=t61rcWkgMzE,rojo=00f067aa0ba902b7')).toBe('congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
    expect(boundTracestate(['a=1', 'b=2'])).toBe('a=1,b=2');
  });

  it('given more than 512 characters or 32 members, when bounded, then whole members are kept up to the limit', () => {
    const long = Array.from({ length: 40 }, (_, i) => `vendor${i}=${'x'.repeat(20)}`).join(',');
    const bounded = boundTracestate(long)!;
    expect(bounded.length).toBeLessThanOrEqual(512);
    expect(long.startsWith(bounded)).toBe(true);
    expect(bounded.endsWith('x')).toBe(true);
    const many = Array.from({ length: 40 }, (_, i) => `v${i}=1`).join(',');
    expect(boundTracestate(many)!.split(',')).toHaveLength(32);
  });

  it('given control characters, empty text or nothing, when bounded, then there is no tracestate', () => {
    expect(boundTracestate('a=1\r\nb=2')).toBeUndefined();
    expect(boundTracestate(' , ')).toBeUndefined();
    expect(boundTracestate(undefined)).toBeUndefined();
  });

  it('given an invalid traceparent, when the incoming trace is read, then its tracestate is dropped with it', () => {
    expect(incomingTrace('00-bad', 'congo=1')).toBeUndefined();
    expect(incomingTrace(`00-${traceId}-${parentId}-01`, 'congo=1')).toEqual({
      parent: { traceId, parentId, flags: 1 },
      traceparent: `00-${traceId}-${parentId}-01`,
      tracestate: 'congo=1',
    });
  });
});
