import fc from 'fast-check';
import { it } from 'vitest';
import { sqlString } from './shared/sql.js';
it('a', () => {
  let t = Date.now(); const xs = fc.sample(fc.string({ unit: 'binary', maxLength: 64 }), 100); console.log('sample', Date.now() - t);
  t = Date.now(); for (const x of xs) sqlString(x); console.log('sql', Date.now() - t);
  t = Date.now(); fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 64 }), (s) => sqlString(s).length > 0)); console.log('assert', Date.now() - t);
});
