import { defineConfig } from 'vitest/config';

// Integration tests start real nats-server and clickhouse-server processes;
// on a 2-core machine two test files at a time is the most that stays stable.
export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**', 'dist/**'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    setupFiles: ['./test/fast-check-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // The summary line is for CI (see test/summary-reporter.ts).
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
