// `skiff os flash` against dd, writing the same images to the same loop device.
// Run as root: node bench/flash.mjs [--runs N]   (see bench/README.md, "Flashing")
// SKIFF_BENCH_FLASH_CASES=raw,ram,direct,xz,zst,zst-builtin,verify,bmap picks cases (default: all).
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, rmSync, statSync, writeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  MB, ensureSkiffBuilt, fmtSec, log, measureOnce, median, parseBenchArgs, printComparison, sh,
} from './lib.mjs';

const { runs } = parseBenchArgs({ runs: { default: 7, help: 'measured flashes per case and tool' } });
const WORK = process.env.SKIFF_BENCH_FLASH_DIR || '/var/tmp/skiff-bench-flash';
/** Memory-backed copies for the RAM case: no disk, so what is left is each tool's own cost. */
const RAM = process.env.SKIFF_BENCH_FLASH_RAM_DIR || '/dev/shm/skiff-bench-flash';
const CASES = new Set((process.env.SKIFF_BENCH_FLASH_CASES || 'raw,ram,direct,xz,zst,zst-builtin,verify,bmap').split(','));
const GiB = 1024 * MB;

if (process.getuid?.() !== 0) {
  console.error('bench/flash.mjs needs root (loop devices, drop_caches)');
  process.exit(1);
}
const skiff = ensureSkiffBuilt();
mkdirSync(WORK, { recursive: true });
const loops = [];
const cleanup = () => {
  for (const l of loops.splice(0)) spawnSync('losetup', ['-d', l]);
};
process.on('exit', () => {
  cleanup();
  rmSync(RAM, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));

const dropCaches = () => {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
};
const canDrop = dropCaches();
log(canDrop ? 'dropping the page cache before every run' : 'WARNING: cannot drop caches; runs after the first read the image from memory');

/** A 1 GiB image that compresses like an OS image: system files (binaries, libraries, text), then zeros. */
function makeImage(file, size) {
  if (existsSync(file) && statSync(file).size === size) return;
  log(`making ${file}`);
  const fd = openSync(file, 'w');
  let written = 0;
  const limit = Math.floor(size * 0.75);
  const walk = (dir) => {
    let entries = [];
    try { entries = readdirSync(dir, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      if (written >= limit) return;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        try {
          const data = execFileSync('cat', [p], { maxBuffer: 256 * MB });
          const n = Math.min(data.length, limit - written);
          writeSync(fd, data, 0, n, written);
          written += n;
        } catch { /* unreadable: skip */ }
      }
    }
  };
  walk('/usr/lib');
  walk('/usr/share');
  if (written < limit) { // a thin system: random bytes make up the rest
    for (; written < limit; written += MB) writeSync(fd, randomBytes(MB), 0, MB, written);
  }
  closeSync(fd);
  execFileSync('truncate', ['-s', String(size), file]);
}

/** A mostly empty image: 4 GiB with 64 MiB of data in a few places. */
function makeSparseImage(file) {
  if (existsSync(file) && statSync(file).size === 4 * GiB) return;
  log(`making ${file}`);
  rmSync(file, { force: true });
  const fd = openSync(file, 'w');
  for (const at of [0, 1 * GiB, 2 * GiB + 12345 * 4096, 4 * GiB - 16 * MB]) {
    for (let i = 0; i < 16; i++) writeSync(fd, randomBytes(MB), 0, MB, at + i * MB);
  }
  closeSync(fd);
}

function ensureTool(tool, pkg) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0) return true;
  if (process.env.SKIFF_BENCH_NO_APT === '1') return false;
  log(`${tool} missing; apt-get install -y ${pkg}`);
  spawnSync('sh', ['-c', `apt-get install -y ${pkg} || (apt-get update && apt-get install -y ${pkg})`], { stdio: ['ignore', 'ignore', 'inherit'] });
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

function loopOn(file, size) {
  execFileSync('truncate', ['-s', String(size), file]);
  const dev = execFileSync('losetup', ['-f', '--show', file], { encoding: 'utf8' }).trim();
  loops.push(dev);
  return dev;
}

/** Median wall time of each command, skiff and the peer alternating, caches dropped before each. */
async function compare(name, skiffArgs, peerScript, skiffEnv = {}) {
  const ours = [];
  const theirs = [];
  for (let i = 0; i < runs; i++) {
    dropCaches();
    const a = await measureOnce(process.execPath, [skiff, ...skiffArgs], { env: { ...process.env, ...skiffEnv } });
    if (a.code !== 0) throw new Error(`skiff ${skiffArgs.join(' ')} failed: ${a.stderr}`);
    dropCaches();
    const b = await measureOnce('sh', ['-c', peerScript]);
    if (b.code !== 0) throw new Error(`${peerScript} failed: ${b.stderr}`);
    ours.push(a.wallSec);
    theirs.push(b.wallSec);
  }
  log(`${name}: skiff ${ours.map((s) => s.toFixed(2)).join(' ')} | peer ${theirs.map((s) => s.toFixed(2)).join(' ')}`);
  return { skiff: median(ours), peer: median(theirs) };
}

const image = join(WORK, 'image.img');
makeImage(image, GiB);
const size = GiB;
if (!existsSync(`${image}.xz`)) sh('xz', ['-k', '-T0', '-6', '-f', image]);
if (!existsSync(`${image}.zst`)) sh('zstd', ['-q', '-k', '-f', '-19', '-T0', image]);
const target = loopOn(join(WORK, 'target.bin'), size + 64 * MB);
const dd = (input) => `${input} | dd of=${target} bs=4M iflag=fullblock conv=fsync status=none`;

const rows = [];
const through = (r, bytes) => ({ skiff: bytes / MB / r.skiff, peer: bytes / MB / r.peer });
const fmtRate = (v) => `${v.toFixed(0)} MB/s`;
const add = (measure, r, bytes) => {
  const t = through(r, bytes);
  rows.push({ measure: `${measure} (time)`, skiff: r.skiff, peer: r.peer, fmt: fmtSec });
  rows.push({ measure: `${measure} (throughput)`, skiff: t.skiff, peer: t.peer, fmt: fmtRate });
  return t;
};
const flash = (img, ...extra) => ['os', 'flash', img, '--drive', target, '--yes', ...extra];

const ratios = [];
if (CASES.has('raw')) {
  const t = add('1 GiB raw, no verify', await compare('raw', flash(image, '--no-verify'), `dd if=${image} of=${target} bs=4M conv=fsync status=none`), size);
  ratios.push(['raw, loop device on disk', t.skiff / t.peer]);
}
if (CASES.has('ram')) {
  // The same with the image and the loop device's backing file in memory (tmpfs).
  mkdirSync(RAM, { recursive: true });
  const ramImage = join(RAM, 'image.img');
  if (!existsSync(ramImage)) sh('cp', [image, ramImage]);
  const ramTarget = loopOn(join(RAM, 'target.bin'), size + 64 * MB);
  const t = add('1 GiB raw, no verify, all in RAM', await compare('ram', ['os', 'flash', ramImage, '--drive', ramTarget, '--yes', '--no-verify'], `dd if=${ramImage} of=${ramTarget} bs=4M conv=fsync status=none`), size);
  ratios.push(['raw, loop device in RAM', t.skiff / t.peer]);
}
if (CASES.has('direct')) {
  // Not the peer, a reference: dd writing around the page cache as skiff does.
  add('1 GiB raw vs dd oflag=direct', await compare('direct', flash(image, '--no-verify'), `dd if=${image} of=${target} bs=4M oflag=direct conv=fsync status=none`), size);
}
if (CASES.has('xz')) add('1 GiB from .xz', await compare('xz', flash(`${image}.xz`, '--no-verify'), dd(`xz -dc ${image}.xz`)), size);
if (CASES.has('zst')) add('1 GiB from .zst', await compare('zst', flash(`${image}.zst`, '--no-verify'), dd(`zstd -dc ${image}.zst`)), size);
// skiff without the system zstd: its built-in decoder (fzstd), the fallback where zstd is not installed.
if (CASES.has('zst-builtin')) add('1 GiB from .zst, built-in decoder', await compare('zst-builtin', flash(`${image}.zst`, '--no-verify'), dd(`zstd -dc ${image}.zst`), { SKIFF_SYSTEM_DECOMPRESSORS: '0' }), size);
if (CASES.has('verify')) rows.push({ measure: '1 GiB raw, write + verify (time)', ...(await compare('verify', flash(image), `dd if=${image} of=${target} bs=4M conv=fsync status=none && cmp -n ${size} ${image} ${target}`)), fmt: fmtSec });

// bmap: a mostly empty 4 GiB image; bmaptool makes the map when Debian's bmap-tools is there.
if (CASES.has('bmap')) {
  const sparse = join(WORK, 'sparse.img');
  makeSparseImage(sparse);
  const bmapFile = join(WORK, 'sparse.bmap');
  if (!existsSync(bmapFile)) {
    if (!ensureTool('bmaptool', 'bmap-tools')) throw new Error('bmaptool is needed for the bmap case (apt-get install bmap-tools)');
    sh('bmaptool', ['create', '-o', bmapFile, sparse]);
  }
  const bigTarget = loopOn(join(WORK, 'target-4g.bin'), 4 * GiB);
  rows.push({
    measure: '4 GiB sparse image + bmap, no verify (time)',
    ...(await compare('bmap', ['os', 'flash', sparse, '--drive', bigTarget, '--yes', '--no-verify', '--bmap', bmapFile], `dd if=${sparse} of=${bigTarget} bs=4M conv=fsync status=none`)),
    fmt: fmtSec,
  });
}

printComparison(`skiff os flash vs dd (loop device on ${WORK}; median of ${runs}; page cache ${canDrop ? 'dropped before each run' : 'NOT dropped'})`, 'dd', rows);
for (const [name, ratio] of ratios) {
  console.log(`throughput ratio skiff/dd conv=fsync, ${name}: ${ratio.toFixed(2)} (target >= 0.95: ${ratio >= 0.95 ? 'met' : 'NOT met'})`);
}
