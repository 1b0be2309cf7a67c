import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Startup is a budget: heavy modules are imported inside the function that needs them.
const heavyModules = ['dockerode', 'simple-git', 'tar-fs', 'ora', 'inquirer', 'yaml', '@balena/dockerignore', 'multicast-dns', 'xz-decompress', 'fzstd', 'xxhash-wasm', 'unbzip2-stream', 'yauzl'].map((name) => ({
  name,
  message: 'Import heavy modules lazily (await import()) inside the function that needs them; type-only imports are fine.',
  allowTypeImports: true,
}));

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', '.cache/'] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', fetch: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', TextDecoder: 'readonly', Buffer: 'readonly', structuredClone: 'readonly' } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-imports': ['error', {
        paths: heavyModules,
      }],
    },
  },
  {
    files: ['src/lib/**/*.ts'],
    rules: {
      // Library code returns data; the command renders it.
      'no-console': 'error',
      // Layers point down: the domains never reach up into the CLI, UI, commands or process entries.
      'no-restricted-imports': ['error', {
        paths: heavyModules,
        patterns: [
          { group: ['**/cli/*', '**/ui/*', '**/commands/*', '**/commands/**', '../../agent/*'], message: 'src/lib never imports the CLI, UI or command layers; move the shared piece into src/lib (errors, text).' },
          { group: ['@oclif/*'], message: 'src/lib never imports oclif; flags belong in src/cli or the command.' },
        ],
      }],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**', 'scripts/**'],
    rules: { 'no-restricted-imports': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
