// The example project builds FROM busybox:1.36. Where no registry is reachable (CI, offline
// benches) and the engine lacks it, make it locally from this machine's busybox-static.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, symlinkSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const tag = process.argv[2] ?? 'busybox:1.36';
const docker = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const has = () => {
  try {
    execFileSync(docker, ['image', 'inspect', tag], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
if (has()) process.exit(0);
try {
  execFileSync(docker, ['pull', tag], { stdio: 'ignore' });
  process.exit(0);
} catch {
  // offline: build it below
}
const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-busybox-'));
const root = path.join(dir, 'root');
mkdirSync(path.join(root, 'bin'), { recursive: true });
mkdirSync(path.join(root, 'tmp'));
copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox');
for (const a of applets) symlinkSync('busybox', path.join(root, 'bin', a));
execFileSync('tar', ['-C', root, '-cf', path.join(dir, 'rootfs.tar'), '.']);
writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\nADD rootfs.tar /\nENV PATH=/bin\nCMD ["sh"]\n');
execFileSync(docker, ['build', '-q', '-t', tag, dir], { stdio: 'inherit', env: { ...process.env, DOCKER_BUILDKIT: '0' } });
rmSync(dir, { recursive: true, force: true });
console.error(`made ${tag} locally from /bin/busybox (no registry reachable)`);
