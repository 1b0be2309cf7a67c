#!/usr/bin/env node
// Development entry: compiles src/ incrementally (tsc), then runs like bin/run.js without the
// manifest, so a new or changed command is picked up without `npm run prepare-cli`.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json'), '--incremental', '--tsBuildInfoFile', path.join(root, 'node_modules/.cache/skiff-dev.tsbuildinfo')], { stdio: 'inherit' });

const { execute } = await import('@oclif/core');
const argv = process.argv.slice(2);
if (argv[0] === '--version' || argv[0] === '-v') argv[0] = 'version';
await execute({ args: argv, development: true, dir: import.meta.url });
