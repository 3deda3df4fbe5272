/** @type {import('jest').Config} */
const swc = ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }];
const common = { rootDir: __dirname, testEnvironment: 'node', transform: { '^.+\\.ts$': swc }, testTimeout: 30_000 };

// Two projects: jest runs a project's globalSetup only when one of its tests runs, so
// `jest test/unit` (fakes) needs no PostgreSQL; the integration and topology tests get one
// freshly migrated scratch database per run.
module.exports = {
  testTimeout: 30_000,
  maxWorkers: 2,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      // A new test folder goes here or in `unit` (a test in neither list does not run).
      testMatch: ['<rootDir>/test/integration/**/*.test.ts', '<rootDir>/test/topology/**/*.test.ts'],
      globalSetup: '<rootDir>/test/support/global-setup.ts',
      globalTeardown: '<rootDir>/test/support/global-teardown.ts',
    },
  ],
};
