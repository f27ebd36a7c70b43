import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeSeqs, encodeSeqs } from './counted-log.js';

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
