// ESLint flat config: the recommended JavaScript and typescript-eslint rules (syntax only, no
// type information, so a lint of the whole tree takes seconds), with Prettier owning layout.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'coverage/', 'src/generated/', '.stack/', '.scratch/', '.sav3/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // `_name` marks a value kept on purpose (a destructured field left out, an unused callback argument).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      // `let x; … later x = new X()` is how a closure created earlier reaches a part built later
      // (database-module.ts: the probes and the switchover service); `x?.` guards the gap.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // Errors here that wrap another already carry its message, and pino's err serializer appends
      // every cause's message: a `cause` would print it twice in the logs.
      'preserve-caught-error': 'off',
    },
  },
  {
    // Tests, drills and benchmarks walk untyped JSON and YAML (compose files, API answers).
    files: ['test/**', 'support/**', 'bench/**', 'scripts/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // CommonJS configuration files (jest.config.js) and the scripts that run as plain Node.
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { module: 'writable', require: 'readonly', __dirname: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  prettier,
);
