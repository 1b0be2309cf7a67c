#!/usr/bin/env -S node --import tsx
// Runs the TypeScript sources directly (no build step); for development only.
const { execute } = await import('@oclif/core');
const argv = process.argv.slice(2);
if (argv[0] === '--version' || argv[0] === '-v') argv[0] = 'version';
await execute({ args: argv, development: true, dir: import.meta.url });
