import { describe, expect, it } from 'vitest';
import { DrawdownError, type FieldProblem } from '../shared/errors.js';
import { dataField, eventMappings, parseDataPath, readDataPath, type DataPath } from './event-mapping.js';
import { parseCatalog } from './model.js';

function path(text: string): DataPath {
  const parsed = parseDataPath(text);
  if ('problem' in parsed) throw new Error(parsed.problem);
  return parsed.path;
}

/** The problems parseCatalog finds in a catalog of these meters; [] when it is valid. */
function meterProblems(...meters: Record<string, unknown>[]): FieldProblem[] {
  try {
    parseCatalog({ meters });
    return [];
  } catch (error) {
    if (error instanceof DrawdownError) return error.problems;
    throw error;
  }
}

const tokens = { key: 'tokens', aggregation: 'sum', dimensions: ['model'] };

describe('data paths', () => {
  it('reads names, quoted names and indexes, and nothing else', () => {
    const data = { usage: { tokens: 12, 'input tokens': '3.5' }, items: [{ n: 7 }] };
    expect(readDataPath(data, path('$.usage.tokens'))).toBe(12);
    expect(readDataPath(data, path("$.usage['input tokens']"))).toBe('3.5');
    expect(readDataPath(data, path('$.items[0].n'))).toBe(7);
    expect(readDataPath(data, path('$.items[1].n'))).toBeUndefined();
    expect(readDataPath(data, path('$.usage.tokens.deeper'))).toBeUndefined();
    expect(readDataPath(undefined, path('$.tokens'))).toBeUndefined();
    // Inherited members are not data.
    expect(readDataPath({}, path('$.toString'))).toBeUndefined();
  });

  it('refuses what could select many values, or none', () => {
    for (const text of ['tokens', '$', '$.*', '$..tokens', '$.items[*]', '$.items[0:2]', '$[?(@.a)]', '$.a.', '$.a b'])
      expect({ text, ok: !('problem' in parseDataPath(text)) }).toEqual({ text, ok: false });
    expect('problem' in parseDataPath('$.__proto__')).toBe(true);
    expect('problem' in parseDataPath(`$${'.a'.repeat(17)}`)).toBe(true);
  });

  it('names the field in the CloudEvent as a client wrote it', () => {
    expect(dataField(path('$.usage.tokens'))).toBe('data.usage.tokens');
    expect(dataField(path("$['input tokens']"))).toBe('data["input tokens"]');
    expect(dataField(path('$.items[2].n'))).toBe('data.items[2].n');
  });
});

describe('meters with a CloudEvents mapping, at catalog apply', () => {
  it('takes a sum meter with a value path and group_by on declared dimensions, and a count meter without a value', () => {
    const catalog = parseCatalog({
      meters: [
        { ...tokens, event_type: 'prompt', value_property: '$.tokens', group_by: { model: '$.model' } },
        { key: 'prompts', aggregation: 'count', event_type: 'prompt' },
        { key: 'plain' },
      ],
    });
    const table = eventMappings(catalog.meters.values());
    expect([...table.keys()]).toEqual(['prompt']);
    expect(table.get('prompt')!.map((m) => [m.meter, m.value?.text, m.groupBy.map((g) => g.dimension)])).toEqual([
      ['prompts', undefined, []],
      ['tokens', '$.tokens', ['model']],
    ]);
    // An archived meter takes no new CloudEvents.
    expect(eventMappings(catalog.meters.values(), new Set(['prompts', 'tokens'])).size).toBe(0);
  });

  it('names each bad field', () => {
    const problems = meterProblems(
      { ...tokens, event_type: 'prompt' },
      { key: 'c', aggregation: 'count', event_type: 'prompt', value_property: '$.n' },
      { ...tokens, key: 't2', event_type: 'prompt', value_property: '$..tokens', group_by: { region: '$.region' } },
      { ...tokens, key: 't3', event_type: '', value_property: '$.tokens', group_by: { model: 'model' } },
      { ...tokens, key: 't4', value_property: '$.tokens' },
      { ...tokens, key: 't5', eventType: 'prompt', valueProperty: '$.tokens' },
    );
    expect(problems.map((p) => [p.field, p.code])).toEqual([
      ['meters[0].value_property', 'required'],
      ['meters[1].value_property', 'not_allowed'],
      ['meters[2].value_property', 'format'],
      ['meters[2].group_by.region', 'unknown'],
      ['meters[3].event_type', 'format'],
      ['meters[3].group_by.model', 'format'],
      ['meters[4].event_type', 'required'],
      ['meters[5].eventType', 'unknown_field'],
      ['meters[5].valueProperty', 'unknown_field'],
    ]);
  });
});
