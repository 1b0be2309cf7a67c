// Delta updates (issue 12): bytes a device downloads for a release, the time to make the delta on
// the server and to apply it on the device, and the device's memory during the apply.
//
//   node bench/deltas.mjs [--runs N] [--local-only] [--database sqlite|postgres|URL]
//
// The layer: one service (busybox:1.36 + `COPY app /app`) whose app layer is about 130 MB, made
// deterministically (seeded PRNG, so every run and every machine compares the same bytes): 39 MiB of
// random data (8 "binaries", incompressible) and about 90 MB of source-code-like text in 1,550
// files (gzip takes it to about a quarter, as it does real code). v1 and three v2s:
//   one-line  one line of one source file changed;
//   add-1mb   a new 1 MiB file of random data (an asset);
//   dep-bump  the files of one "dependency" (node_modules/dep: 150 text files and a 4 MiB native
//             binary, 13 MB, ~10% of the layer) as a version bump changes them: the binary new,
//             30% of the text lines rewritten.
// Every file of a v2 gets a new mtime, as a release built from a fresh checkout (CI) has.
//
// 1. Local (no server, no agent; always runs): the layer tars made with GNU tar (sorted, uid 0)
//    and, per change, skiff's delta format as the contract defines it (src/lib/api/deltas.ts):
//    `xdelta3 -e -9 -S none -A -n -B <source rounded up to MiB> -s v1.tar v2.tar`, then Brotli q9, as
//    the server makes it. Applied with skiff's own decoder (patchLayer from dist/lib/delta, in a
//    Node process of its own with the agent's V8 flags; its peak RSS and Node's RSS at its start),
//    which checks the result's sha256 against v2's; with `xdelta3 -d` when dist has no decoder, and
//    beside it as a reference. Each --runs times. The layer pull is the gzip -6 size of the v2
//    layer tar (what `docker push` stores). Peers, for context (balena-cli has no local figure to
//    compare): plain `xdelta3 -e` (its defaults) and `zstd --patch-from --long=28` (level 3),
//    their sizes and times.
// 2. End to end (unless --local-only): `skiff server` (SQLite by default) and one cloud-mode
//    `skiff agent` on this machine's engine (bench/cloud-lib.mjs startCloudDevice). v1 is deployed
//    with `skiff deploy FLEET --build`; per change, v1 is deployed again (the same image: the
//    fleet's previous release is then v1, so the server's background delta is v1 → v2), the device
//    pinned to v1, v2 deployed; the server's figure is its delta job's time from its log
//    (`[delta] <id> ready in N s`; else polled: GET /releases/:commit services[].delta from the
//    deploy's exit to `done`), one job per change. The v2 image `skiff deploy` built is
//    removed from the engine (the device shares the builder's engine, which would otherwise have
//    it already), and the device is pinned to v2. Apply = from that PATCH to the engine having the
//    v2 image ID (polled every 50 ms); then until the device reports v2 running. Repeated --runs
//    times (pinned back to v1, v2's image removed again): the delta is then cached on the server.
//    - bytes downloaded: the server's `[download] device <uuid> <delta|blob> <bytes> <path>` log lines
//      in the window, and the device's report (`updateDownload`);
//    - layer pull: the registry blob sizes (manifest) of the v2 layers v1 lacks;
//    - the agent's memory: idle VmRSS once before any update (median of 3 s of 100 ms samples with
//      v1 running), its RSS just before each apply, and the peak during the apply: VmHWM after
//      resetting it (`echo 5 > /proc/<pid>/clear_refs`, root) and VmRSS of the agent plus its child
//      processes sampled every 50 ms, the larger of the two; the table shows the largest of the
//      runs, and each run's is printed below it;
//    - how the device got the image (its report's method: delta or pull, and a fallback's reason).
//    The end-to-end part needs a server and agent that make and apply deltas (issue 12); on a
//    checkout without them it says so and prints the local part only.
//
// Goals (the issue): at least 50× fewer bytes than the layer pull for the one-line change; apply
// time under the time the pull takes at 10 Mbit/s (pull bytes × 8 / 10e6 s); the agent's peak RSS
// during the apply under its idle RSS + 64 MB.
//
// Needs xdelta3, zstd, GNU tar, and for the end-to-end part the engine and busybox:1.36 (made by
// scripts/demo-base-images.mjs when missing). Cleans up its processes, containers, temp dirs and
// images. Exits 1 when the benchmark cannot run; a missed goal still exits 0.

import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { REPO_ROOT, log, median, parseBenchArgs, printTable } from './lib.mjs';
import { engine, ensureBaseImage, imageIds, removeImages, sleep, waitFor, withCleanup } from './agent-lib.mjs';
import { api, checkDatabaseOption, ensureCommandsBuilt, procSample, startCloudDevice } from './cloud-lib.mjs';

const opts = parseBenchArgs({
  runs: { default: 3, help: 'measured runs per change (the local make/apply, and each device apply)' },
  options: {
    'local-only': { type: 'boolean', help: 'only the local part: no server, no agent' },
    database: { type: 'string', default: 'sqlite', check: checkDatabaseOption, help: 'the server\'s database for the end-to-end part: sqlite, postgres or a postgres:// URL' },
  },
});

const KINDS = [
  { name: 'one-line', what: 'one line of one source file changed' },
  { name: 'add-1mb', what: 'a new 1 MiB random file' },
  { name: 'dep-bump', what: 'a dependency bumped (13 MB of files, ~10% of the layer)' },
];
const MiB = 1024 * 1024;
const V1_MTIME = new Date('2026-01-01T00:00:00Z');
const V2_MTIME = new Date('2026-02-01T00:00:00Z');
/** Brotli quality of the delta files (the server's choice; the VCDIFF of a small change is small, so 11 costs little). */
const BROTLI_QUALITY = 9;

// ---------------------------------------------------------------- the layer, deterministically

/** mulberry32: a small seeded PRNG, floats in [0, 1). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `bytes` of incompressible data, the same for the same seed (AES-256-CTR of zeros under a key from the seed). */
function randomData(seed, bytes) {
  const key = createHash('sha256').update(`skiff-bench-deltas:${seed}`).digest();
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(bytes)), c.final()]);
}

const KEYWORDS = ['const', 'let', 'return', 'if', 'else', 'for', 'await', 'async', 'function', 'export', 'import', 'from', 'new', 'throw', 'typeof', 'null', 'undefined', 'true', 'false', 'this'];
const WORDS = 'value item list map node state config options result error buffer stream index count size name path file data request response handler client server device release image layer token user fleet service target current next prev key entry cache queue timer signal event message line text byte chunk offset length total parse format read write open close start stop update apply check build push pull send load save find'.split(' ');

/** Lines of JavaScript-like source (identifiers of its own, nesting, comments, string and number literals) adding up to about `bytes`. */
function sourceLines(rand, bytes) {
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const ids = Array.from({ length: 40 }, () => {
    const b = pick(WORDS);
    return pick(WORDS) + b[0].toUpperCase() + b.slice(1) + (rand() < 0.3 ? String(Math.floor(rand() * 100)) : '');
  });
  const lines = [];
  let size = 0;
  let depth = 0;
  const line = () => {
    const r = rand();
    if (r < 0.12 && depth < 6) { depth++; return `${pick(['function', 'async function', 'export function'])} ${pick(ids)}(${pick(ids)}, ${pick(ids)}) {`; }
    if (r < 0.22 && depth > 0) { depth--; return '}'; }
    if (r < 0.42) return `${pick(KEYWORDS)} ${pick(ids)} = ${pick(ids)}.${pick(WORDS)}(${pick(ids)}, ${Math.floor(rand() * 1000)});`;
    if (r < 0.55) return `if (${pick(ids)} ${pick(['===', '!==', '<', '>='])} ${pick(ids)}) ${pick(['return', 'throw new Error(', 'continue;'])} ${pick(ids)};`;
    if (r < 0.65) return `// ${pick(WORDS)} the ${pick(WORDS)} ${pick(WORDS)} before ${pick(WORDS)} ${pick(WORDS)} (${pick(WORDS)})`;
    return `${pick(ids)}.${pick(WORDS)}${pick(['', 's'])}(${pick(ids)}${rand() < 0.5 ? `, '${pick(WORDS)}-${Math.floor(rand() * 10000)}'` : ''});`;
  };
  while (size < bytes) {
    const text = '  '.repeat(depth) + line();
    lines.push(text);
    size += text.length + 1;
  }
  return lines;
}

const SOURCE_FILES = 1400;
const DEP_FILES = 150;
const TEXT_FILE_BYTES = 60_000;

/** Writes v1's `app/` folder under `dir`: lib/blob{0..6}.bin (5 MiB random each), src/ (1,400 files), node_modules/dep/ (150 files + a 4 MiB binary). */
function writeV1(dir) {
  const app = join(dir, 'app');
  mkdirSync(join(app, 'lib'), { recursive: true });
  for (let i = 0; i < 7; i++) writeFileSync(join(app, 'lib', `blob${i}.bin`), randomData(`blob${i}`, 5 * MiB));
  const rand = prng(1);
  for (let i = 0; i < SOURCE_FILES; i++) {
    const sub = join(app, 'src', `m${Math.floor(i / 100)}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `mod${i}.js`), `${sourceLines(rand, TEXT_FILE_BYTES).join('\n')}\n`);
  }
  const dep = join(app, 'node_modules', 'dep');
  mkdirSync(join(dep, 'lib'), { recursive: true });
  const depRand = prng(2);
  for (let i = 0; i < DEP_FILES; i++) writeFileSync(join(dep, 'lib', `part${i}.js`), `${sourceLines(depRand, TEXT_FILE_BYTES).join('\n')}\n`);
  writeFileSync(join(dep, 'native.node'), randomData('dep-native-1', 4 * MiB));
  writeFileSync(join(dep, 'package.json'), '{ "name": "dep", "version": "1.4.2" }\n');
  setMtimes(app, V1_MTIME);
}

/** Every file and folder under `dir` (and `dir`) to `when` (`touch -d`: one process for thousands of files). */
function setMtimes(dir, when) {
  const r = spawnSync('find', [dir, '-exec', 'touch', '-h', '-d', when.toISOString(), '{}', '+'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`find -exec touch: ${r.stderr}`);
}

/** v2 of `kind` under `dir`: a copy of v1's app/ with the change, every mtime new. */
function writeV2(v1Dir, dir, kind) {
  const app = join(dir, 'app');
  cpSync(join(v1Dir, 'app'), app, { recursive: true });
  if (kind === 'one-line') {
    const file = join(app, 'src', 'm4', 'mod421.js');
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[100] = `${lines[100].match(/^\s*/)[0]}const retryDelayMs = Math.min(backoffMs * 2, 30000); // was 10000`;
    writeFileSync(file, lines.join('\n'));
  } else if (kind === 'add-1mb') {
    mkdirSync(join(app, 'assets'), { recursive: true });
    writeFileSync(join(app, 'assets', 'splash.bin'), randomData('asset-1mb', MiB));
  } else if (kind === 'dep-bump') {
    const dep = join(app, 'node_modules', 'dep');
    const rand = prng(3);
    for (let i = 0; i < DEP_FILES; i++) {
      const file = join(dep, 'lib', `part${i}.js`);
      const fresh = sourceLines(rand, TEXT_FILE_BYTES);
      const lines = readFileSync(file, 'utf8').split('\n').map((l, j) => (l !== '' && rand() < 0.3 ? `${l.match(/^\s*/)[0]}${fresh[j % fresh.length].trim()}` : l));
      writeFileSync(file, lines.join('\n'));
    }
    writeFileSync(join(dep, 'native.node'), randomData('dep-native-2', 4 * MiB));
    writeFileSync(join(dep, 'package.json'), '{ "name": "dep", "version": "1.5.0" }\n');
  } else throw new Error(`unknown change ${kind}`);
  setMtimes(app, V2_MTIME);
}

/** The layer tar of `dir`/app as an image layer lays it out (entries sorted, owner 0). */
function layerTar(dir, out) {
  const r = spawnSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-C', dir, '-cf', out, 'app'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tar: ${r.stderr}`);
  return statSync(out).size;
}

// ---------------------------------------------------------------- measuring tools

/**
 * Runs a command to completion under GNU time: { ms, rssMB (its peak, ru_maxrss), stdout }.
 * Without /usr/bin/time the RSS is null.
 */
function timed(cmd, args) {
  const gnuTime = existsSync('/usr/bin/time');
  const rssFile = join(tmpdir(), `skiff-bench-deltas-time-${process.pid}`);
  const t0 = performance.now();
  const r = gnuTime
    ? spawnSync('/usr/bin/time', ['-f', '%M', '-o', rssFile, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 20 })
    : spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 20 });
  const ms = performance.now() - t0;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${String(r.stderr).trim()}`);
  let rssMB = null;
  if (gnuTime) {
    rssMB = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) / 1024;
    rmSync(rssFile, { force: true });
  }
  return { ms, rssMB, stdout: r.stdout };
}

/** xdelta3's -B as the server picks it (src/lib/server/deltas/generate.ts): the source's bytes rounded up to whole MiB, 1 MiB to 1 GiB, so the window holds the whole source. */
function sourceWindow(n) {
  return Math.min(1024 * MiB, Math.max(MiB, Math.ceil(n / MiB) * MiB));
}

/** gzip -6 size of a file (Go's gzip.DefaultCompression, what `docker push` stores), streamed. */
async function gzipSize(file) {
  let size = 0;
  const gzip = zlib.createGzip({ level: 6 });
  gzip.on('data', (chunk) => { size += chunk.length; });
  await pipeline(createReadStream(file), gzip);
  return size;
}

async function brotliFile(input, output) {
  const t0 = performance.now();
  await pipeline(createReadStream(input), zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY, [zlib.constants.BROTLI_PARAM_LGWIN]: 22, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: statSync(input).size } }), createWriteStream(output));
  return performance.now() - t0;
}

async function unbrotliFile(input, output) {
  const t0 = performance.now();
  await pipeline(createReadStream(input), zlib.createBrotliDecompress(), createWriteStream(output));
  return performance.now() - t0;
}

function sha256File(file) {
  return spawnSync('sha256sum', [file], { encoding: 'utf8' }).stdout.split(' ')[0];
}

// ---------------------------------------------------------------- formatting

const fmtBytes = (b) => (b == null ? 'n/a' : b >= 10 * MiB ? `${(b / MiB).toFixed(1)} MiB` : b >= MiB ? `${(b / MiB).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);
const fmtS = (ms) => (ms == null ? 'n/a' : `${(ms / 1000).toFixed(2)} s`);
const fmtX = (r) => (r == null || !Number.isFinite(r) ? 'n/a' : r >= 100 ? `${Math.round(r).toLocaleString('en-US')}×` : `${r.toFixed(1)}×`);
const fmtMBv = (mb) => (mb == null ? 'n/a' : `${mb.toFixed(1)} MB`);
const med = (xs) => { const v = xs.filter((x) => x != null && Number.isFinite(x)); return v.length ? median(v) : null; };
/** Seconds the pull takes at 10 Mbit/s. */
const pullAt10Mbit = (bytes) => (bytes * 8) / 10e6;

// ---------------------------------------------------------------- 1. local

/** skiff's layer decoder (src/lib/delta/layer-patch.ts) as built in dist/, when this checkout has it (set by findDecoder). */
let DECODER;
/** The V8 flags the agent sets on itself (src/agent/serve.ts AGENT_V8_FLAGS, e.g. --no-opt), so the local decoder runs as in the agent (set by findDecoder). */
let AGENT_FLAGS = [];

/** Looks for the decoder and the agent's flags in dist/ (after a build, if the script made one). */
function findDecoder() {
  const file = join(REPO_ROOT, 'dist', 'lib', 'delta', 'layer-patch.js');
  DECODER = existsSync(file) ? pathToFileURL(file).href : undefined;
  try {
    AGENT_FLAGS = /AGENT_V8_FLAGS = '([^']*)'/.exec(readFileSync(join(REPO_ROOT, 'dist', 'agent', 'serve.js'), 'utf8'))?.[1].split(' ').filter(Boolean) ?? [];
  } catch {
    AGENT_FLAGS = [];
  }
}

/** Runs patchLayer on one delta file (argv: module, delta, base, out, diffID, size); prints { ms, startMB, hwmMB }. */
const DECODE_JS = `
import { createReadStream, readFileSync } from 'node:fs';
const [mod, delta, base, out, diffId, size] = process.argv.slice(1);
const { patchLayer } = await import(mod);
const startMB = process.memoryUsage().rss / 1048576;
const t0 = performance.now();
await patchLayer(createReadStream(delta), [base], out, { diffId, size: Number(size), label: 'the layer' });
const ms = performance.now() - t0;
const hwmMB = Number(/VmHWM:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
console.log(JSON.stringify({ ms, startMB, hwmMB }));
`;

async function localPart(work, versions) {
  const results = {};
  const v1Tar = join(work, 'v1.tar');
  const v1Size = layerTar(versions.v1, v1Tar);
  log(`v1 layer tar ${fmtBytes(v1Size)}`);
  for (const kind of KINDS) {
    const v2Tar = join(work, `${kind.name}.tar`);
    const v2Size = layerTar(versions[kind.name], v2Tar);
    const pullBytes = await gzipSize(v2Tar);
    const v2Sha = sha256File(v2Tar);
    const vcdiff = join(work, `${kind.name}.vcdiff`);
    const delta = join(work, `${kind.name}.vcdiff.br`);
    const out = join(work, `${kind.name}.out`);
    const make = []; const apply = []; const applyRss = []; const applyStart = []; const makeRss = []; const xdApply = []; const xdApplyRss = [];
    let deltaBytes; let vcdiffBytes;
    for (let run = 0; run < opts.runs; run++) {
      const enc = timed('xdelta3', ['-e', '-9', '-S', 'none', '-A', '-n', '-B', String(sourceWindow(v1Size)), '-f', '-s', v1Tar, v2Tar, vcdiff]);
      const brMs = await brotliFile(vcdiff, delta);
      make.push(enc.ms + brMs);
      makeRss.push(enc.rssMB);
      vcdiffBytes = statSync(vcdiff).size;
      deltaBytes = statSync(delta).size;
      rmSync(vcdiff);
      // skiff's own decoder (the agent's: Brotli → streaming VCDIFF over the base by position),
      // in a Node process of its own so its peak RSS is the decoder's plus Node's.
      if (DECODER) {
        const dec = JSON.parse(timed(process.execPath, [...AGENT_FLAGS, '--input-type=module', '-e', DECODE_JS, DECODER, delta, v1Tar, out, `sha256:${v2Sha}`, String(v2Size)]).stdout);
        apply.push(dec.ms);
        applyRss.push(dec.hwmMB);
        applyStart.push(dec.startMB);
      }
      // xdelta3 -d: the reference decoder (and the whole apply when this checkout has no decoder).
      const unbrMs = await unbrotliFile(delta, vcdiff);
      const xd = timed('xdelta3', ['-d', '-f', '-s', v1Tar, vcdiff, out]);
      xdApply.push(unbrMs + xd.ms);
      xdApplyRss.push(xd.rssMB);
      if (sha256File(out) !== v2Sha) throw new Error(`${kind.name}: xdelta3 -d did not give the v2 layer back`);
      rmSync(out);
      rmSync(vcdiff);
    }
    if (!DECODER) { apply.push(...xdApply); applyRss.push(...xdApplyRss); }
    // Peers: their own defaults, once per run as well (sizes do not vary; times do).
    const xd = []; const zs = [];
    let xdBytes; let zsBytes;
    for (let run = 0; run < opts.runs; run++) {
      const peer = join(work, `${kind.name}.peer`);
      xd.push(timed('xdelta3', ['-e', '-f', '-s', v1Tar, v2Tar, peer]).ms);
      xdBytes = statSync(peer).size;
      zs.push(timed('zstd', ['-q', '-f', '--long=28', `--patch-from=${v1Tar}`, v2Tar, '-o', peer]).ms);
      zsBytes = statSync(peer).size;
      rmSync(peer);
    }
    rmSync(v2Tar);
    results[kind.name] = {
      v2Size, pullBytes, deltaBytes, vcdiffBytes, makeMs: med(make), makeRssMB: med(makeRss), applyMs: med(apply), applyRssMB: Math.max(...applyRss.filter((x) => x != null)), applyStartMB: med(applyStart),
      xdApplyMs: med(xdApply), xdApplyRssMB: Math.max(...xdApplyRss.filter((x) => x != null)),
      xdelta3: { bytes: xdBytes, ms: med(xd) }, zstd: { bytes: zsBytes, ms: med(zs) },
    };
    log(`${kind.name}: pull ${fmtBytes(pullBytes)}, delta ${fmtBytes(deltaBytes)} (VCDIFF ${fmtBytes(vcdiffBytes)}), make ${make.map((m) => fmtS(m)).join(' ')}, apply ${apply.map((m) => fmtS(m)).join(' ')}`);
  }
  return { v1Size, results };
}

function printLocal(local) {
  const decoder = DECODER ? `skiff's decoder (dist/lib/delta/layer-patch.js patchLayer, in a Node process of its own with the agent's V8 flags: ${AGENT_FLAGS.join(' ') || 'none found'})` : 'Brotli decode + xdelta3 -d (this checkout has no decoder of its own in dist/)';
  printTable(
    ['change', 'layer pull (gzip -6)', 'skiff delta', 'ratio', 'make', 'apply', DECODER ? 'apply RSS: Node at start → peak' : 'apply peak RSS', 'goal: apply < pull at 10 Mbit/s'],
    KINDS.map(({ name }) => {
      const r = local.results[name];
      const pullS = pullAt10Mbit(r.pullBytes);
      return [name, fmtBytes(r.pullBytes), fmtBytes(r.deltaBytes), fmtX(r.pullBytes / r.deltaBytes), fmtS(r.makeMs), fmtS(r.applyMs),
        DECODER ? `${fmtMBv(r.applyStartMB)} → ${fmtMBv(r.applyRssMB)}` : fmtMBv(r.applyRssMB), `${fmtS(r.applyMs)} vs ${pullS.toFixed(1)} s: ${r.applyMs / 1000 < pullS ? 'met' : 'missed'}`];
    }),
    `Local: skiff's delta format on the layer tars (v1 ${fmtBytes(local.v1Size)}), medians of ${opts.runs}. make = xdelta3 -e -9 -S none -A -n -B ${fmtBytes(sourceWindow(local.v1Size))} + Brotli q${BROTLI_QUALITY} (as the server); apply = ${decoder}`,
  );
  printTable(
    ['change', 'skiff (xdelta3 -9 -S none + Brotli)', 'xdelta3 (defaults)', 'zstd --patch-from --long=28', 'skiff / xdelta3', 'skiff / zstd', 'apply: skiff', 'apply: xdelta3 -d (time, RSS)'],
    KINDS.map(({ name }) => {
      const r = local.results[name];
      return [name, `${fmtBytes(r.deltaBytes)} in ${fmtS(r.makeMs)}`, `${fmtBytes(r.xdelta3.bytes)} in ${fmtS(r.xdelta3.ms)}`, `${fmtBytes(r.zstd.bytes)} in ${fmtS(r.zstd.ms)}`,
        (r.deltaBytes / r.xdelta3.bytes).toFixed(2), (r.deltaBytes / r.zstd.bytes).toFixed(2), fmtS(r.applyMs), `${fmtS(r.xdApplyMs)}, ${fmtMBv(r.xdApplyRssMB)}`];
    }),
    'Peers: the same pair (balena-cli has no local delta to compare); the make times are encode only',
  );
}

// ---------------------------------------------------------------- 2. end to end

/** pid and its descendants (from /proc/<pid>/task/<tid>/children), for the RSS of an agent that spawns helpers. */
function processTree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    let tasks = [];
    try { tasks = readdirSync(`/proc/${out[i]}/task`); } catch { continue; }
    for (const tid of tasks) {
      try {
        for (const child of readFileSync(`/proc/${out[i]}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (child) out.push(Number(child));
      } catch { /* gone */ }
    }
  }
  return out;
}

/** VmRSS (MB) of a pid and its descendants, summed. */
function treeRssMB(pid) {
  let sum = 0;
  for (const p of processTree(pid)) sum += procSample(p)?.rssMB ?? 0;
  return sum;
}

/** Resets the kernel's RSS high-water mark (VmHWM) of a pid to its current RSS; false when not allowed. */
function resetPeak(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * What the server logs, as it comes: `[download] device <uuid> <delta|blob> <bytes> <path>` lines
 * (`since()` marks a point, `between(mark)` sums what came after it by kind), and its delta jobs
 * (`[delta] making <id>: <src repo>@<12 hex> → <dest repo>@<12 hex>`, `[delta] <id> ready in <s> s: …`
 * or `: none (…) after <s> s`): `made(src, dest)` gives { seconds, line } of the job for a pair of
 * manifest digests.
 */
function collectServerLog(child) {
  const seen = [];
  const jobs = new Map();
  let rest = '';
  const onData = (d) => {
    rest += d;
    const lines = rest.split('\n');
    rest = lines.pop();
    for (const line of lines) {
      const m = /\[download\] device (\S+) (delta|blob) (\d+) (\S+)/.exec(line);
      if (m) seen.push({ uuid: m[1], kind: m[2], bytes: Number(m[3]), path: m[4] });
      const making = /\[delta\] making (\S+): \S+@([0-9a-f]{12}) → \S+@([0-9a-f]{12})/.exec(line);
      if (making) jobs.set(making[1], { src: making[2], dest: making[3] });
      const done = /\[delta\] (\S+)(?: ready in ([\d.]+) s|: none .* after ([\d.]+) s)/.exec(line);
      if (done && jobs.has(done[1])) Object.assign(jobs.get(done[1]), { seconds: Number(done[2] ?? done[3]), line: line.trim() });
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  return {
    since: () => seen.length,
    between(mark) {
      const part = seen.slice(mark);
      const sum = (k) => part.filter((x) => x.kind === k).reduce((a, x) => a + x.bytes, 0);
      return { delta: sum('delta'), blob: sum('blob'), lines: part.length };
    },
    made(src, dest) {
      return [...jobs.values()].find((j) => j.seconds != null && j.src === src.slice(7, 19) && j.dest === dest.slice(7, 19));
    },
  };
}

/** A release's manifest for its one service: { config (digest), layers [{ digest, size }] }, from the registry through the server. */
async function serviceManifest(server, token, commit) {
  const release = await api(server.url, token, 'GET', `/releases/${commit}`);
  const s = release.services[0];
  const [, repository, digest] = /^[^/]+\/(.+)@(sha256:[0-9a-f]{64})$/.exec(s?.image ?? '') ?? [];
  if (!repository) throw new Error(`release ${commit} has no pushed image (${s?.image})`);
  const challenge = (await fetch(`${server.url}/v2/`)).headers.get('www-authenticate') ?? '';
  const service = /service="([^"]+)"/.exec(challenge)?.[1] ?? '';
  const tokenAnswer = await fetch(`${server.url}/auth/v1/token?service=${encodeURIComponent(service)}&scope=${encodeURIComponent(`repository:${repository}:pull`)}`, {
    headers: { authorization: `Basic ${Buffer.from(`${server.email}:${server.password}`).toString('base64')}` },
  });
  const pull = (await tokenAnswer.json()).token;
  const manifest = await (await fetch(`${server.url}/v2/${repository}/manifests/${digest}`, {
    headers: { authorization: `Bearer ${pull}`, accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
  })).json();
  return { image: s.image, config: manifest.config?.digest, layers: (manifest.layers ?? []).map((l) => ({ digest: l.digest, size: l.size })) };
}

async function e2ePart(onCleanup, versions) {
  ensureBaseImage();
  const runId = randomBytes(4).toString('hex');
  const before = await imageIds();
  // Every image of this run carries its label, whatever it is tagged (the agent's local names, the
  // registry's host): removed after the agent and its containers are gone (registered first, so it runs last).
  onCleanup(async () => {
    const { json } = await engine('GET', `/images/json?filters=${encodeURIComponent(JSON.stringify({ label: [`io.skiff.bench.deltas=${runId}`] }))}`);
    log(`removed ${await removeImages((json ?? []).map((i) => i.Id), before)} more image(s) with this run's label`);
  });
  const { server, token, skiff, fleet, project, agent } = await startCloudDevice(onCleanup, { name: 'deltas', database: opts.database });
  const serverLog = collectServerLog(server.child);
  writeFileSync(join(project, 'docker-compose.yml'), 'services:\n  app:\n    build: .\n    command: ["sh", "-c", "trap \'exit 0\' TERM; while :; do sleep 1 & wait $$!; done"]\n');
  writeFileSync(join(project, 'Dockerfile'), `FROM busybox:1.36\nLABEL io.skiff.bench.deltas=${runId}\nCOPY app /app\n`);

  const device = () => api(server.url, token, 'GET', `/devices/${agent.uuid}`);
  const release = (commit) => api(server.url, token, 'GET', `/releases/${commit}`);
  const deploy = async (dir, label) => {
    renameSync(join(dir, 'app'), join(project, 'app'));
    const t0 = performance.now();
    try {
      await skiff(['deploy', fleet, '--build', '--source', project, '--nologs'], `deploy ${label}`);
    } finally {
      renameSync(join(project, 'app'), join(dir, 'app'));
    }
    const exitAt = performance.now();
    const commit = (await api(server.url, token, 'GET', `/fleets/${encodeURIComponent(fleet)}`)).targetRelease;
    if (!commit) throw new Error(`deploy ${label}: the fleet has no target release`);
    log(`deployed ${label} as ${commit.slice(0, 7)} in ${fmtS(exitAt - t0)}`);
    return { commit, exitAt };
  };
  const pin = (commit) => api(server.url, token, 'PATCH', `/devices/${agent.uuid}`, { pinnedRelease: commit });
  const running = (commit, what, timeoutMs = 600_000) => waitFor(async () => {
    const d = await device();
    return d.runningRelease === commit && d.updateStatus === 'done' ? d : undefined;
  }, { timeoutMs, intervalMs: 100, what });
  /**
   * The delta job of a release's service once it ended (done, none, failed); null when the release
   * has none (same image as the previous release), undefined when the server has no delta support.
   */
  const deltaJob = async (commit) => {
    const first = (await release(commit)).services[0];
    if (first.delta === undefined || first.delta === null) return first.delta;
    return waitFor(async () => {
      const d = (await release(commit)).services[0].delta;
      return d && !['queued', 'running'].includes(d.status) ? d : undefined;
    }, { timeoutMs: 600_000, intervalMs: 100, what: `the delta of ${commit.slice(0, 7)}` });
  };
  const removeImage = async (id) => {
    const r = await engine('DELETE', `/images/${id}?force=1`);
    if (r.status !== 200 && r.status !== 404) throw new Error(`removing ${id}: ${r.status} ${r.text}`);
  };
  const hasImage = async (id) => (await engine('GET', `/images/${id}/json`)).status === 200;

  const v1 = await deploy(versions.v1, 'v1');
  await running(v1.commit, 'the device to run v1');
  const v1Manifest = await serviceManifest(server, token, v1.commit);
  const v1Layers = new Set(v1Manifest.layers.map((l) => l.digest));
  // Idle: before any update, v1 running and settled (after an update V8 keeps some of the heap it grew).
  await sleep(3000);
  const idle = [];
  for (let i = 0; i < 30; i++) { idle.push(procSample(agent.pid)?.rssMB); await sleep(100); }
  const idleMB = med(idle);
  log(`agent idle RSS ${fmtMBv(idleMB)} (v1 running)`);
  const results = {};
  let latestIsV1 = true;
  for (const kind of KINDS) {
    await pin(v1.commit);
    await running(v1.commit, 'the device back on v1');
    if (!latestIsV1) {
      // The fleet's latest is the previous change's v2: deploy v1 again, so the server's background
      // delta for the next release is from v1 (the device's pair), not from that v2.
      const again = await deploy(versions.v1, 'v1 again');
      const againManifest = await serviceManifest(server, token, again.commit);
      if (againManifest.config !== v1Manifest.config) log(`NOTE: v1 rebuilt as another image (${againManifest.config}); the server's background delta is then not the device's pair, which it makes on request`);
      await deltaJob(again.commit);
    }
    const v2 = await deploy(versions[kind.name], kind.name);
    latestIsV1 = false;
    const job = await deltaJob(v2.commit);
    if (job === undefined) return { unsupported: 'the server gives releases no delta (GET /releases/:commit services[].delta): this checkout has no delta support yet' };
    const polledMs = job ? performance.now() - v2.exitAt : null;
    const v2Manifest = await serviceManifest(server, token, v2.commit);
    const pullBytes = v2Manifest.layers.filter((l) => !v1Layers.has(l.digest)).reduce((a, l) => a + l.size, 0);
    if (job) log(`${kind.name}: background delta ${job.status} (${job.reason ?? `${fmtBytes(job.downloadBytes)} for a ${fmtBytes(job.pullBytes)} pull`}) ${fmtS(polledMs)} after the deploy's exit`);
    else log(`${kind.name}: the release has no background delta; the device's request makes it`);
    const v2Id = v2Manifest.config;

    const runs = [];
    for (let run = 0; run < opts.runs; run++) {
      if (run > 0) {
        await pin(v1.commit);
        await running(v1.commit, 'the device back on v1');
      }
      await removeImage(v2Id);
      if (await hasImage(v2Id)) throw new Error(`the engine still has ${v2Id}`);
      const beforeMB = procSample(agent.pid)?.rssMB;
      const canReset = resetPeak(agent.pid);
      let treeMax = treeRssMB(agent.pid);
      const sampler = setInterval(() => { treeMax = Math.max(treeMax, treeRssMB(agent.pid)); }, 50);
      const mark = serverLog.since();
      const agentMark = agent.output().length;
      const t0 = performance.now();
      await pin(v2.commit);
      let tImage;
      try {
        await waitFor(async () => ((await hasImage(v2Id)) ? (tImage = performance.now()) : undefined), { timeoutMs: 600_000, intervalMs: 50, what: `the v2 image of ${kind.name} on the engine` });
        await running(v2.commit, `the device to run ${kind.name}`);
      } finally {
        clearInterval(sampler);
      }
      const tRun = performance.now();
      const hwm = canReset ? procSample(agent.pid)?.hwmMB : null;
      await sleep(500); // the server's last [download] lines
      const got = serverLog.between(mark);
      const report = (await device()).updateDownload?.services?.app;
      for (const line of agent.output().slice(agentMark).split('\n')) if (/delta/i.test(line)) log(`  agent: ${line.trim()}`);
      runs.push({ applyMs: tImage - t0, runMs: tRun - t0, beforeMB, peakMB: Math.max(hwm ?? 0, treeMax), got, report });
      log(`${kind.name} run ${run + 1}: image in ${fmtS(tImage - t0)}, running in ${fmtS(tRun - t0)}, downloaded ${fmtBytes(got.delta)} delta + ${fmtBytes(got.blob)} blobs, peak ${fmtMBv(Math.max(hwm ?? 0, treeMax))} (agent VmHWM ${fmtMBv(hwm)}, agent + children sampled ${fmtMBv(treeMax)}), report ${JSON.stringify(report ?? null)}`);
    }
    // The server's own figure for the job (its log), else the polled one (from the deploy's exit to
    // done: a job that started before the exit reads short).
    const made = await waitFor(() => serverLog.made(v1Manifest.image.split('@')[1], v2Manifest.image.split('@')[1]), { timeoutMs: 5000, what: 'the delta job in the server log' }).catch(() => undefined);
    const genMs = made ? made.seconds * 1000 : polledMs;
    if (made) log(`${kind.name}: ${made.line}`);
    const delta = job ?? (await release(v2.commit)).services[0].delta ?? { status: 'none', downloadBytes: null };
    results[kind.name] = {
      pullBytes, job: delta, genMs, genFrom: made ? 'log' : 'poll', idleMB, beforeMB: med(runs.map((r) => r.beforeMB)),
      downloaded: med(runs.map((r) => r.got.delta + r.got.blob)),
      applyMs: med(runs.map((r) => r.applyMs)), runMs: med(runs.map((r) => r.runMs)),
      peakMB: Math.max(...runs.map((r) => r.peakMB)), peaksMB: runs.map((r) => r.peakMB),
      methods: [...new Set(runs.map((r) => r.report?.method ?? '?'))].join('/'),
      fallback: runs.map((r) => r.report?.fallback).find((f) => f),
    };
  }
  return { results, database: server.database };
}

function printE2e(e2e) {
  printTable(
    ['change', 'layer pull (registry)', 'delta (server)', 'downloaded (device)', 'ratio', 'make (server)', 'apply (device)', 'to running', 'agent RSS: idle, before → peak', 'used'],
    KINDS.map(({ name }) => {
      const r = e2e.results[name];
      return [name, fmtBytes(r.pullBytes), r.job.status === 'done' ? fmtBytes(r.job.downloadBytes) : `${r.job.status}`, fmtBytes(r.downloaded), fmtX(r.pullBytes / r.downloaded),
        `${fmtS(r.genMs)}${r.genFrom === 'poll' ? ' (polled)' : ''}`, fmtS(r.applyMs), fmtS(r.runMs), `${fmtMBv(r.idleMB)}, ${fmtMBv(r.beforeMB)} → ${fmtMBv(r.peakMB)}`, r.methods];
    }),
    `End to end (skiff server on ${e2e.database === 'sqlite' ? 'SQLite' : 'PostgreSQL'}, one cloud-mode agent on this engine), medians of ${opts.runs} applies. make = the server's delta job (its log), once per change; apply = pin to v2 → the engine has v2's image ID; to running = → the device reports v2 running; downloaded = the server's [download] lines`,
  );
  // Each apply's own peak, in order: the table's is the largest, and a rise from apply to apply is
  // memory the agent kept.
  console.log(`Agent peak RSS per apply, in order: ${KINDS.map(({ name }) => `${name} ${e2e.results[name].peaksMB.map((m) => m.toFixed(1)).join(', ')} MB`).join('; ')}.`);
  for (const { name } of KINDS) {
    const r = e2e.results[name];
    if (r.methods !== 'delta') console.log(`NOTE ${name}: the device did not use the delta (${r.methods}): ${r.fallback ?? 'no reason reported'}; its figures are a pull's.`);
  }
}

function printGoals(local, e2e) {
  const rows = [];
  const src = e2e ? e2e.results : local.results;
  const bytesOf = (r) => (e2e ? r.downloaded : r.deltaBytes);
  const note = (r) => (e2e && r.methods !== 'delta' ? ` (${r.methods}, not a delta)` : '');
  const one = src['one-line'];
  const r1 = one.pullBytes / bytesOf(one);
  rows.push(['one-line: ≥ 50× fewer bytes than the layer pull', `${fmtX(r1)} (${fmtBytes(bytesOf(one))} vs ${fmtBytes(one.pullBytes)})${note(one)}`, r1 >= 50 ? 'met' : 'missed']);
  for (const { name } of KINDS) {
    const r = src[name];
    const limit = pullAt10Mbit(r.pullBytes);
    rows.push([`${name}: apply < pull at 10 Mbit/s`, `${fmtS(r.applyMs)} vs ${limit.toFixed(1)} s${note(r)}`, r.applyMs / 1000 < limit ? 'met' : 'missed']);
  }
  if (e2e) {
    for (const { name } of KINDS) {
      const r = e2e.results[name];
      rows.push([`${name}: agent peak RSS < idle + 64 MB`, `${fmtMBv(r.peakMB)} vs ${fmtMBv(r.idleMB + 64)}${note(r)}`, r.peakMB < r.idleMB + 64 ? 'met' : 'missed']);
    }
  } else rows.push(['agent peak RSS < idle + 64 MB', 'needs the end-to-end part', 'n/a']);
  printTable(['goal (issue 12)', 'figure', ''], rows, `Goals (${e2e ? 'end to end' : 'local part'})`);
}

// ---------------------------------------------------------------- main

for (const tool of ['xdelta3', 'zstd', 'tar']) {
  if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) {
    process.stderr.write(`deltas.mjs: ${tool} is missing (apt-get install ${tool})\n`);
    process.exit(1);
  }
}

await withCleanup(async (onCleanup) => {
  log(`load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  if (!opts.localOnly) ensureCommandsBuilt(); // before the local part, which uses dist's decoder when there is one
  findDecoder();
  const work = mkdtempSync(join(tmpdir(), 'skiff-bench-deltas-'));
  onCleanup(() => rmSync(work, { recursive: true, force: true }));
  const versions = { v1: join(work, 'v1') };
  let t0 = performance.now();
  writeV1(versions.v1);
  for (const kind of KINDS) {
    versions[kind.name] = join(work, kind.name);
    writeV2(versions.v1, versions[kind.name], kind.name);
  }
  log(`made v1 and ${KINDS.length} changes in ${fmtS(performance.now() - t0)}`);
  t0 = performance.now();
  const local = await localPart(work, versions);
  log(`local part in ${fmtS(performance.now() - t0)}`);
  console.log(`\nThe layer: ${fmtBytes(local.v1Size)} tar (39 MiB random, the rest source-like text). Changes: ${KINDS.map((k) => `${k.name} = ${k.what}`).join('; ')}; every v2 file with a new mtime (a fresh checkout).`);
  printLocal(local);
  let e2e;
  if (!opts.localOnly) {
    t0 = performance.now();
    const answer = await e2ePart(onCleanup, versions);
    if (answer.unsupported) console.log(`\nEnd to end: not run: ${answer.unsupported}.`);
    else e2e = answer;
    log(`end-to-end part in ${fmtS(performance.now() - t0)}`);
  }
  if (e2e) printE2e(e2e);
  printGoals(local, e2e);
});
