// oclif writes the manifest's commands in the file system's directory order, which differs between
// runs and machines; sorted, a rebuild leaves the committed file unchanged.
import { readFileSync, writeFileSync } from 'node:fs';

const file = 'oclif.manifest.json';
const manifest = JSON.parse(readFileSync(file, 'utf8'));
manifest.commands = Object.fromEntries(Object.keys(manifest.commands).sort().map((id) => [id, manifest.commands[id]]));
writeFileSync(file, `${JSON.stringify(manifest, null, 2)}\n`);
