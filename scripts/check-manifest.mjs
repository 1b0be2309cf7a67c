// Fails when oclif.manifest.json is stale: regenerates it from dist/ and compares.
// oclif loads only the matched command thanks to this file, so a stale one breaks commands.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const file = 'oclif.manifest.json';
const committed = readFileSync(file, 'utf8');
execFileSync('npx', ['oclif', 'manifest'], { stdio: ['ignore', 'ignore', 'inherit'] });
const fresh = readFileSync(file, 'utf8');
// Key order is not meaningful (it follows the file system's directory order, which differs between
// machines), so compare with keys sorted at every level.
const sorted = (value) => {
  if (Array.isArray(value)) return value.map(sorted);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sorted(value[key])]));
  }
  return value;
};
const normalise = (text) => JSON.stringify(sorted(JSON.parse(text).commands));
if (normalise(committed) !== normalise(fresh)) {
  writeFileSync(file, committed);
  const before = JSON.parse(committed).commands;
  const after = JSON.parse(fresh).commands;
  const ids = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  const changed = ids.filter((id) => JSON.stringify(sorted(before[id])) !== JSON.stringify(sorted(after[id])));
  console.error(`${file} is stale (${changed.join(', ')}): run 'npm run prepare-cli' and commit ${file}.`);
  process.exit(1);
}
writeFileSync(file, committed);
console.log(`${file} is current.`);
