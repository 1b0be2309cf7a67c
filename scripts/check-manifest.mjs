// Fails when oclif.manifest.json is stale: regenerates it from dist/ and compares.
// oclif loads only the matched command thanks to this file, so a stale one breaks commands.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const file = 'oclif.manifest.json';
const committed = readFileSync(file, 'utf8');
execFileSync('npx', ['oclif', 'manifest'], { stdio: ['ignore', 'ignore', 'inherit'] });
const fresh = readFileSync(file, 'utf8');
const normalise = (text) => JSON.stringify(JSON.parse(text).commands);
if (normalise(committed) !== normalise(fresh)) {
  writeFileSync(file, committed);
  console.error(`${file} is stale: run 'npm run prepare-cli' and commit ${file}.`);
  process.exit(1);
}
writeFileSync(file, committed);
console.log(`${file} is current.`);
