import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCounted, decodeSeqs, encodeCounted, encodeSeqs, messageFingerprint } from './counted-log.js';

const decoded = (text: string): number[] => {
  const out: number[] = [];
  decodeSeqs(text, (seq) => out.push(seq));
  return out;
};

describe('the record of counted stream sequences', () => {
  it('writes runs as ranges and single sequences alone, in order, whatever order they were counted in', () => {
    expect(encodeSeqs([1063, 1041, 1042, 1043, 1070, 1071])).toBe('1041-1043,1063,1070-1071');
    expect(encodeSeqs([])).toBe('');
    expect(encodeSeqs([9_007_199_254_740_991])).toBe('9007199254740991');
  });

  it('reads back exactly the sequences written, each once, for any set of sequences', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 5_000 }), { maxLength: 300 }), (seqs) => {
        expect(decoded(encodeSeqs(seqs))).toEqual([...seqs].sort((a, b) => a - b));
      }),
    );
  });

  it.each(['x', '5-3', '0', '1,,2', '-4', '3-', '1.5'])('refuses %j rather than guess what was counted', (text) => {
    expect(() => decoded(text)).toThrow(/malformed message_seqs/);
  });
});

describe('the record of counted messages, with fingerprints (issue 16: replicas can disagree on what a sequence holds)', () => {
  const read = (text: string): [number, string | undefined][] => {
    const out: [number, string | undefined][] = [];
    decodeCounted(text, (seq, fingerprint) => out.push([seq, fingerprint]));
    return out;
  };
  const a = messageFingerprint(new Uint8Array([1, 2, 3]));
  const b = messageFingerprint(new Uint8Array([1, 2, 4]));

  it('tells two messages apart by their bytes, in 16 hex digits', () => {
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    expect(a).not.toBe(b);
    expect(messageFingerprint(new Uint8Array([1, 2, 3]))).toBe(a);
  });

  it('writes each message as sequence:fingerprint in sequence order, two messages under one sequence included', () => {
    const text = encodeCounted([
      { seq: 812, fingerprint: b },
      { seq: 808, fingerprint: b },
      { seq: 808, fingerprint: a },
    ]);
    expect(text).toBe([`808:${a < b ? a : b}`, `808:${a < b ? b : a}`, `812:${b}`].join(','));
    expect(read(text)).toEqual([
      [808, a < b ? a : b],
      [808, a < b ? b : a],
      [812, b],
    ]);
    expect(encodeCounted([])).toBe('');
  });

  it('reads a record written before fingerprints as its sequences, any message under them', () => {
    expect(read('1041-1043,1063')).toEqual([
      [1041, undefined],
      [1042, undefined],
      [1043, undefined],
      [1063, undefined],
    ]);
  });

  it.each(['808:', '808:xyz', `0:${'a'.repeat(16)}`, `x:${'a'.repeat(16)}`, `808:${'A'.repeat(16)}`])(
    'refuses %j rather than guess what was counted',
    (text) => {
      expect(() => read(text)).toThrow(/malformed message_seqs/);
    },
  );
});
