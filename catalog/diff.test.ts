import { describe, expect, it } from 'vitest';
import { diffDocuments, formatDiff } from './diff.js';
import { canonicalDocument, documentText, sha256Hex } from './document.js';

const base = {
  credit_units: [{ id: 'credits', name: 'Credits' }],
  meters: [
    { key: 'b', name: 'B' },
    { key: 'a', name: 'A', dimensions: ['x'] },
  ],
  rate_card: {
    versions: [
      { version: 'late', effective_from: '2026-03-01T00:00:00Z', rows: [] },
      { version: 'early', effective_from: '2026-02-01T01:00:00+02:00', rows: [] },
    ],
  },
};

describe('catalog documents and their diff', () => {
  it('given the same catalog in another order, then the canonical text and hash are the same', () => {
    const shuffled = {
      rate_card: { versions: [...base.rate_card.versions].reverse() },
      meters: [...base.meters].reverse(),
      credit_units: base.credit_units,
    };
    expect(documentText(canonicalDocument(shuffled))).toBe(documentText(canonicalDocument(base)));
    expect(sha256Hex(documentText(canonicalDocument(shuffled)))).toBe(sha256Hex(documentText(canonicalDocument(base))));
    // Versions sort by the instant they take effect, not by their text.
    expect((canonicalDocument(base).rate_card as any).versions.map((v: any) => v.version)).toEqual(['early', 'late']);
  });

  it('given changes, then it lists entities by kind and id with field-level detail', () => {
    const next = JSON.parse(JSON.stringify(base));
    next.meters[1].dimensions = ['x', 'y'];
    next.meters[0].name = 'Bee';
    next.meters.push({ key: 'c' });
    next.credit_units = [];
    next.rate_card.currency_note = 'USD';
    const changes = diffDocuments(canonicalDocument(base), canonicalDocument(next));
    expect(changes).toEqual([
      { kind: 'credit_unit', id: 'credits', change: 'removed', fields: [] },
      { kind: 'meter', id: 'a', change: 'changed', fields: [{ path: 'dimensions[1]', after: 'y' }] },
      { kind: 'meter', id: 'b', change: 'changed', fields: [{ path: 'name', before: 'B', after: 'Bee' }] },
      { kind: 'meter', id: 'c', change: 'added', fields: [] },
      {
        kind: 'document',
        id: '(top level)',
        change: 'changed',
        fields: [{ path: 'rate_card.currency_note', after: 'USD' }],
      },
    ]);
    expect(formatDiff(changes)).toBe(
      [
        '- credit unit credits (removed)',
        '~ meter a',
        '    dimensions[1]: (none) → "y"',
        '~ meter b',
        '    name: "B" → "Bee"',
        '+ meter c (added)',
        '~ document (top level)',
        '    rate_card.currency_note: (none) → "USD"',
        '1 added, 3 changed, 1 removed',
        '',
      ].join('\n'),
    );
    expect(diffDocuments(canonicalDocument(base), canonicalDocument(base))).toEqual([]);
    expect(formatDiff([])).toBe('no changes\n');
  });
});
