/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`, after
 * vitest's own summary: CI reads that line to know how many tests ran (a run
 * that executed none must not pass as green).
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
      }
      // A file that failed to load has no tests to count, but it failed.
      if (module.state() === 'failed' && [...module.children.allTests()].length === 0) failed++;
    }
    // Written at exit, so it is the very last line, after vitest's own summary.
    process.once('exit', () => process.stdout.write(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`));
  }
}
