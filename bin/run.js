#!/usr/bin/env node
// Keep this file tiny: everything it imports is paid on every start.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { enableCompileCache } = require('node:module');
enableCompileCache?.();

// `skiff --version [--json]` is the `version` command, so it gets --json like every command.
const argv = process.argv.slice(2);
if (argv[0] === '--version' || argv[0] === '-v') argv[0] = 'version';

const { execute } = await import('@oclif/core');
await execute({ args: argv, dir: import.meta.url });
