import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', '.cache/'] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', fetch: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', TextDecoder: 'readonly', Buffer: 'readonly', structuredClone: 'readonly' } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Startup is a budget: heavy modules are imported inside the function that needs them.
      'no-restricted-imports': ['error', {
        paths: ['dockerode', 'simple-git', 'tar-fs', 'ora', 'inquirer', 'yaml', '@balena/dockerignore', 'multicast-dns', 'xz-decompress', 'fzstd', 'xxhash-wasm', 'unbzip2-stream', 'yauzl'].map((name) => ({
          name,
          message: 'Import heavy modules lazily (await import()) inside the function that needs them; type-only imports are fine.',
          allowTypeImports: true,
        })),
      }],
    },
  },
  {
    files: ['src/lib/**/*.ts'],
    ignores: ['src/lib/cli/**', 'src/lib/ui/**'],
    rules: {
      // Library code returns data; the command renders it.
      'no-console': 'error',
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**', 'scripts/**'],
    rules: { 'no-restricted-imports': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
