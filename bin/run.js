#!/usr/bin/env node
// Keep this file tiny: everything it imports is paid on every start.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { enableCompileCache } = require('node:module');
enableCompileCache?.();

// `skiff --version [--json]` is the `version` command, so it gets --json like every command.
const argv = process.argv.slice(2);
if (argv[0] === '--version' || argv[0] === '-v') argv[0] = 'version';

// A plain `skiff agent` runs for months on a small device: start it without oclif (less memory).
// Anything it does not handle itself (help, --json, a bad flag) falls through to oclif below.
const direct = argv[0] === 'agent' && (await import('../dist/agent/main.js')).startAgentDirectly;
if (!direct || !(await direct(argv.slice(1)))) {
  const { execute } = await import('@oclif/core');
  await execute({ args: argv, dir: import.meta.url });
}
