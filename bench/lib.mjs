// Shared helpers for the benchmarks in bench/. Plain Node ESM, node: builtins only.
//
// How a run is measured
//   wall time  process.hrtime.bigint() from spawn() to the child's 'exit' event, in this
//              process (sub-millisecond resolution; GNU time's %e only has 10 ms).
//   peak RSS   GNU time's %M (the child's ru_maxrss, KiB), written to a temp file with -o so
//              it never mixes with the command's own output. If /usr/bin/time is missing we try
//              `apt-get install -y time` (as root, unless SKIFF_BENCH_NO_APT=1); if that fails
//              we fall back to polling VmHWM in /proc/<pid>/status every 2 ms, which can
//              miss a final spike and so reads slightly low.
//   stdio      stdout/stderr go to temp files (not pipes), so a detached grandchild that keeps
//              a pipe open cannot stretch the measured time.
//   runs       one unmeasured warm-up run (fills the page cache and Node's compile cache), then
//              N measured runs (default 7, `--runs N`, `--warmup N`); we report the median.
//              Every script takes `--runs N` and `--help` (parseBenchArgs).
//   units      MB = 2^20 bytes throughout (RSS KiB / 1024; du bytes / 1048576).

import { spawn, spawnSync, execFileSync } from 'node:child_process';
import {
  existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, writeFileSync,
  rmSync, readdirSync, lstatSync, cpSync, symlinkSync,
} from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { dirname, join, resolve, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setInterval, clearInterval } from 'node:timers';
import { parseArgs } from 'node:util';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const SKIFF_BIN = join(REPO_ROOT, 'bin', 'run.js');
export const CACHE_DIR = process.env.SKIFF_BENCH_CACHE || join(homedir(), '.cache', 'skiff-bench');
export const BALENA_VERSION = '22.5.5';

const GNU_TIME = '/usr/bin/time';

// ---------------------------------------------------------------- command line

/**
 * A bench script's options, declared in one place: `--runs N` (what a run is, and how many by
 * default, is the script's to say), `--help`, and the script's own whole-number options. An unknown
 * option or a bad value is one line on stderr and exit 2, never a stack trace.
 *
 *   const { runs, seconds } = parseBenchArgs({
 *     runs: { default: 1, help: 'pushes measured after the first' },
 *     options: { seconds: { default: 10, min: 1, help: 'idle sampling time' } },
 *   });
 *
 * `runs: null` says a script measures once (`--runs` is then refused, saying why). Option names
 * come back in camelCase (`--rollback-grace` is `rollbackGrace`). An option declared with
 * `type: 'string'` takes any value (its `check(value)` may return an error message), one with
 * `type: 'boolean'` is a switch without a value (false unless given).
 */
export function parseBenchArgs(spec = {}, argv = process.argv.slice(2)) {
  const script = basename(process.argv[1] ?? 'bench');
  const fail = (message) => {
    process.stderr.write(`${script}: ${message}\n`);
    process.exit(2);
  };
  const declared = {
    ...(spec.runs === null ? {} : { runs: { default: 7, min: 1, help: 'measured runs', ...spec.runs } }),
    ...spec.options,
  };
  const known = [...Object.keys(declared), 'help'].map((n) => `--${n}`).join(', ');
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { ...Object.fromEntries(Object.entries(declared).map(([n, o]) => [n, { type: o.type === 'boolean' ? 'boolean' : 'string' }])), help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    const option = /'(--?[\w-]+)/.exec(err.message)?.[1] ?? '';
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option === '--runs' && spec.runs === null) fail(`--runs does not apply: ${script} measures once${spec.measuresOnce ? ` (${spec.measuresOnce})` : ''}`);
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') fail(`unknown option ${option} (known: ${known})`);
    if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') fail(`no arguments are taken, only options (known: ${known})`);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') fail(option === '--help' || option === '-h' || declared[option.slice(2)]?.type === 'boolean' ? `${option} takes no value` : `${option} needs a value`);
    fail(err.message);
  }
  if (values.help) {
    const value = (o) => (o.type === 'boolean' ? '' : o.type === 'string' ? ' VALUE' : ' N');
    console.log(`usage: node bench/${script}${Object.entries(declared).map(([n, o]) => ` [--${n}${value(o)}]`).join('')}`);
    for (const [name, o] of Object.entries(declared)) console.log(`  --${name}${value(o)}  ${o.help}${o.type === 'boolean' ? '' : ` (default ${o.default === '' ? 'none' : o.default})`}`);
    process.exit(0);
  }
  const out = {};
  for (const [name, o] of Object.entries(declared)) {
    const key = name.replace(/-(\w)/g, (_, c) => c.toUpperCase());
    const raw = values[name];
    if (o.type === 'boolean') {
      out[key] = raw === true;
      continue;
    }
    if (o.type === 'string') {
      const problem = raw === undefined ? undefined : o.check?.(raw);
      if (problem) fail(`--${name}: ${problem}`);
      out[key] = raw ?? o.default;
      continue;
    }
    const n = raw === undefined ? o.default : /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!(n >= (o.min ?? 0))) fail(`--${name} takes a whole number of at least ${o.min ?? 0}, not '${raw}'`);
    out[key] = n;
  }
  return out;
}

// ---------------------------------------------------------------- small utilities

export function log(message) {
  process.stderr.write(`[bench] ${message}\n`);
}

/** Runs a command synchronously, its output to our stderr (stdout stays for the tables); throws on failure. */
export function sh(cmd, args, opts = {}) {
  log(`$ ${[cmd, ...args].join(' ')}${opts.cwd ? `   (in ${opts.cwd})` : ''}`);
  const result = spawnSync(cmd, args, { stdio: ['ignore', 2, 'inherit'], ...opts });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${result.status}`);
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export const MB = 1024 * 1024;
export const fmtSec = (s) => (s == null ? 'n/a' : `${s.toFixed(3)} s`);
export const fmtMB = (mb) => (mb == null ? 'n/a' : `${mb.toFixed(1)} MB`);
export const fmtRatio = (r) => (r == null || !Number.isFinite(r) ? 'n/a' : `${r.toFixed(2)}x`);
export const ratio = (a, b) => (a == null || b == null || b === 0 ? null : a / b);

/** Plain-text table; first column left-aligned, the rest right-aligned. */
export function printTable(headers, rows, title) {
  const cells = [headers, ...rows].map((row) => row.map((c) => String(c)));
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  const line = (row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ');
  if (title) console.log(`\n${title}`);
  console.log(line(cells[0]));
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const row of cells.slice(1)) console.log(line(row));
}

/** The comparison table the benchmarks share: measure | skiff | peer | ratio (skiff/peer). */
export function printComparison(title, peerName, rows) {
  printTable(
    ['measure', 'skiff', peerName, 'ratio (skiff/peer)'],
    rows.map(({ measure, skiff, peer, fmt }) => [measure, fmt(skiff), fmt(peer), fmtRatio(ratio(skiff, peer))]),
    title,
  );
}

/** Apparent size in bytes (`du -sb`, or a walk of the tree when GNU du is unavailable). */
export function diskUsageBytes(path) {
  if (!existsSync(path)) return 0;
  try {
    return Number.parseInt(execFileSync('du', ['-sb', path], { encoding: 'utf8' }).split(/\s/)[0], 10);
  } catch {
    let total = 0;
    const walk = (p) => {
      const st = lstatSync(p);
      total += st.size;
      if (st.isDirectory()) for (const entry of readdirSync(p)) walk(join(p, entry));
    };
    walk(path);
    return total;
  }
}

// ---------------------------------------------------------------- measuring a child process

let rssMethod;

/** 'gnu-time' or 'proc'; installs GNU time with apt-get once if it is missing and we can. */
export function rssMethodInUse() {
  if (rssMethod) return rssMethod;
  const works = () => existsSync(GNU_TIME)
    && spawnSync(GNU_TIME, ['-f', '%e %M', 'true'], { stdio: 'ignore' }).status === 0;
  if (!works() && process.env.SKIFF_BENCH_NO_APT !== '1' && process.getuid?.() === 0
      && spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0) {
    log('/usr/bin/time not found; trying apt-get install -y time');
    spawnSync('sh', ['-c', 'apt-get install -y time || (apt-get update && apt-get install -y time)'],
      { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  rssMethod = works() ? 'gnu-time' : 'proc';
  if (rssMethod === 'proc') log('peak RSS: GNU time unavailable, polling /proc/<pid>/status VmHWM (may read low)');
  return rssMethod;
}

function readVmHWM(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** One run: { wallSec, rssKB, code, stdout, stderr }. */
export function measureOnce(cmd, args, { env, cwd } = {}) {
  const method = rssMethodInUse();
  const dir = mkdtempSync(join(tmpdir(), 'skiff-bench-run-'));
  const timeFile = join(dir, 'time');
  const outFd = openSync(join(dir, 'out'), 'w');
  const errFd = openSync(join(dir, 'err'), 'w');
  const [file, argv] = method === 'gnu-time'
    ? [GNU_TIME, ['-f', '%e %M', '-o', timeFile, cmd, ...args]]
    : [cmd, args];
  return new Promise((resolvePromise, reject) => {
    let peak = 0;
    const start = process.hrtime.bigint();
    const child = spawn(file, argv, { cwd: cwd ?? REPO_ROOT, env: env ?? process.env, stdio: ['ignore', outFd, errFd] });
    const poll = method === 'proc' ? setInterval(() => { peak = Math.max(peak, readVmHWM(child.pid)); }, 2) : null;
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      const wallSec = Number(process.hrtime.bigint() - start) / 1e9;
      if (poll) clearInterval(poll);
      closeSync(outFd);
      closeSync(errFd);
      let rssKB = peak;
      if (method === 'gnu-time') {
        // GNU time appends "Command exited with non-zero status N" before the figures.
        const lines = readFileSync(timeFile, 'utf8').trim().split('\n');
        rssKB = Number(lines.at(-1).split(' ')[1]);
      }
      const stdout = readFileSync(join(dir, 'out'), 'utf8');
      const stderr = readFileSync(join(dir, 'err'), 'utf8');
      rmSync(dir, { recursive: true, force: true });
      resolvePromise({ wallSec, rssKB, code: signal ? 128 : code, stdout, stderr });
    });
  });
}

/**
 * Warm-up + N measured runs of one command; returns medians.
 * { label, wall (s), rss (MB), walls[], rssMBs[], code, sample (first run's output) }.
 * A non-zero exit is reported (not fatal) so one broken command doesn't hide the others.
 */
export async function bench(label, cmd, args, { runs = 7, warmup = 1, env, cwd } = {}) {
  for (let i = 0; i < warmup; i++) await measureOnce(cmd, args, { env, cwd });
  const walls = [];
  const rssMBs = [];
  let first;
  for (let i = 0; i < runs; i++) {
    const r = await measureOnce(cmd, args, { env, cwd });
    first ??= r;
    walls.push(r.wallSec);
    rssMBs.push(r.rssKB / 1024);
  }
  const result = { label, wall: median(walls), rss: median(rssMBs), walls, rssMBs, code: first.code };
  log(`${label.padEnd(22)} median ${fmtSec(result.wall)}  ${fmtMB(result.rss)}`
    + `  (walls ${walls.map((w) => w.toFixed(3)).join(' ')})`);
  if (first.code !== 0) {
    log(`WARNING: ${label} exited with ${first.code}; its output:\n${(first.stdout + first.stderr).trim().slice(0, 2000)}`);
  }
  return result;
}

// ---------------------------------------------------------------- skiff

/**
 * Builds skiff if dist/ has no commands. Uses tsconfig.build.json when it exists, else
 * tsconfig.json, then `oclif manifest`. Returns the path of bin/run.js.
 */
export function ensureSkiffBuilt() {
  const commandsDir = join(REPO_ROOT, 'dist', 'commands');
  const built = existsSync(commandsDir) && readdirSync(commandsDir).some((f) => f.endsWith('.js'));
  if (!built) {
    const tsconfig = existsSync(join(REPO_ROOT, 'tsconfig.build.json')) ? 'tsconfig.build.json' : 'tsconfig.json';
    log('dist/ is missing: building skiff');
    // tsc still emits when it reports type errors; carry on (with a warning) if it did, since
    // src/ may be mid-edit and startup cost hardly depends on it.
    try {
      sh('npx', ['tsc', '-p', tsconfig], { cwd: REPO_ROOT });
    } catch (error) {
      const emitted = existsSync(commandsDir) && readdirSync(commandsDir).some((f) => f.endsWith('.js'));
      if (!emitted) throw error;
      log(`WARNING: ${error.message}; benchmarking what it emitted`);
    }
    try {
      sh('npx', ['oclif', 'manifest'], { cwd: REPO_ROOT });
    } catch (error) {
      log(`WARNING: ${error.message}`);
    }
  }
  return SKIFF_BIN;
}

/**
 * The skiff binary to time. A release ships oclif.manifest.json (so oclif imports only the command
 * it runs); when the repo has none (e.g. mid-edit), we stage a release-like copy in a temp dir
 * (bin/, dist/, package.json, node_modules symlinked), generate the manifest there with the
 * repo's own `oclif`, and time that, leaving the working tree alone. Returns { bin, note, cleanup }.
 */
export function skiffForStartup() {
  ensureSkiffBuilt();
  if (existsSync(join(REPO_ROOT, 'oclif.manifest.json'))) return { bin: SKIFF_BIN, note: '', cleanup() {} };
  const stage = mkdtempSync(join(tmpdir(), 'skiff-bench-stage-'));
  const cleanup = () => rmSync(stage, { recursive: true, force: true });
  try {
    for (const entry of ['bin', 'dist', 'package.json']) cpSync(join(REPO_ROOT, entry), join(stage, entry), { recursive: true });
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(stage, 'node_modules'), 'dir');
    sh(join(REPO_ROOT, 'node_modules', '.bin', 'oclif'), ['manifest'], { cwd: stage });
    if (!existsSync(join(stage, 'oclif.manifest.json'))) throw new Error('oclif manifest wrote nothing');
    return {
      bin: join(stage, 'bin', 'run.js'),
      note: `the repo has no oclif.manifest.json: timed a staged copy with a generated manifest`,
      cleanup,
    };
  } catch (error) {
    cleanup();
    log(`WARNING: could not stage skiff with a manifest (${error.message})`);
    return {
      bin: SKIFF_BIN,
      note: 'no oclif.manifest.json: skiff was timed without one (oclif scans and imports dist/commands), slower than a release',
      cleanup() {},
    };
  }
}

// ---------------------------------------------------------------- balena-cli (the peer)

/**
 * Path of the balena binary. SKIFF_BENCH_BALENA wins (a ready install, e.g.
 * /tmp/balena-peer/node_modules/.bin/balena); otherwise balena-cli 22.5.5 is installed once into
 * $SKIFF_BENCH_CACHE/balena-cli (default ~/.cache/skiff-bench/balena-cli).
 */
export function ensureBalena() {
  if (process.env.SKIFF_BENCH_BALENA) {
    const bin = resolve(process.env.SKIFF_BENCH_BALENA);
    if (!existsSync(bin)) throw new Error(`SKIFF_BENCH_BALENA=${bin} does not exist`);
    return bin;
  }
  const dir = join(CACHE_DIR, 'balena-cli');
  const bin = join(dir, 'node_modules', '.bin', 'balena');
  const marker = join(dir, '.complete');
  if (existsSync(bin) && existsSync(marker) && readFileSync(marker, 'utf8').trim() === BALENA_VERSION) return bin;
  log(`installing balena-cli ${BALENA_VERSION} into ${dir} (takes a minute or two)`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  sh('npm', ['init', '-y'], { cwd: dir, stdio: 'ignore' });
  const pkgPath = join(dir, 'package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
  pkg.overrides = { 'unbzip2-stream': '1.4.3' };
  writeFileSync(pkgPath, `${JSON.stringify(pkg, null, 2)}\n`);
  sh('npm', ['i', `balena-cli@${BALENA_VERSION}`, '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: dir });
  if (!existsSync(bin)) throw new Error(`balena-cli installed but ${bin} is missing`);
  writeFileSync(marker, `${BALENA_VERSION}\n`);
  return bin;
}

/** The node_modules folder a balena binary lives in (for its install size). */
export function balenaNodeModules(bin) {
  for (let p = dirname(bin); p !== dirname(p); p = dirname(p)) {
    if (basename(p) === 'node_modules') return p;
  }
  throw new Error(`cannot find the node_modules folder above ${bin}`);
}

/** Env for running balena as a user would: its bin folder on PATH (it spawns `balena`). */
export function balenaEnv(bin) {
  return { ...process.env, PATH: `${dirname(bin)}:${process.env.PATH ?? ''}` };
}

// ---------------------------------------------------------------- bare oclif CLI (the floor)

const HELLO_JS = `import { Command, Flags } from '@oclif/core';

export default class Hello extends Command {
  static description = 'Say hello.';
  static examples = ['<%= config.bin %> hello', '<%= config.bin %> hello --name world'];
  static flags = {
    name: Flags.string({ char: 'n', description: 'Who to greet.', default: 'world' }),
  };

  async run() {
    const { flags } = await this.parse(Hello);
    this.log(\`hello \${flags.name}\`);
  }
}
`;

const RUN_JS = `#!/usr/bin/env node
import { execute } from '@oclif/core';

await execute({ dir: import.meta.url });
`;

/** The oclif.manifest.json \`oclif manifest\` would write for the one command (fallback). */
function handWrittenManifest() {
  return {
    commands: {
      hello: {
        aliases: [], args: {}, description: 'Say hello.',
        examples: ['<%= config.bin %> hello', '<%= config.bin %> hello --name world'],
        flags: {
          name: {
            char: 'n', description: 'Who to greet.', name: 'name', default: 'world',
            hasDynamicHelp: false, multiple: false, type: 'option',
          },
        },
        hasDynamicHelp: false, hiddenAliases: [], id: 'hello', pluginAlias: 'bare-oclif',
        pluginName: 'bare-oclif', pluginType: 'core', strict: true, enableJsonFlag: false,
        isESM: true, relativePath: ['dist', 'commands', 'hello.js'],
      },
    },
    version: '1.0.0',
  };
}

/**
 * A bare one-command oclif v4 CLI in $SKIFF_BENCH_CACHE/bare-oclif: @oclif/core only (no plugins),
 * command `hello` as plain JS, bin/run.js calling execute(), and an oclif.manifest.json.
 * @oclif/core is pinned to the version skiff has installed (falls back to ^4) so the floor
 * uses the same framework code. Returns the path of bin/run.js.
 */
export function ensureBareOclif() {
  let coreSpec = '^4';
  try {
    coreSpec = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', '@oclif', 'core', 'package.json'), 'utf8')).version;
  } catch { /* skiff not installed: take the newest v4 */ }
  const dir = join(CACHE_DIR, 'bare-oclif');
  const bin = join(dir, 'bin', 'run.js');
  const marker = join(dir, '.complete');
  if (existsSync(marker) && readFileSync(marker, 'utf8').trim() === coreSpec) return bin;

  log(`creating the bare oclif CLI (@oclif/core@${coreSpec}) in ${dir}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  mkdirSync(join(dir, 'dist', 'commands'), { recursive: true });
  const pkg = {
    name: 'bare-oclif', version: '1.0.0', private: true, type: 'module',
    bin: { bare: './bin/run.js' },
    files: ['bin', 'dist', 'oclif.manifest.json'],
    oclif: { bin: 'bare', dirname: 'bare', commands: './dist/commands', topicSeparator: ' ' },
    dependencies: { '@oclif/core': coreSpec },
  };
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  writeFileSync(join(dir, 'dist', 'commands', 'hello.js'), HELLO_JS);
  writeFileSync(bin, RUN_JS, { mode: 0o755 });
  sh('npm', ['i', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: dir });

  // Generate the manifest with the oclif CLI skiff already has; write it by hand otherwise.
  const localOclif = join(REPO_ROOT, 'node_modules', '.bin', 'oclif');
  let generated = false;
  if (existsSync(localOclif)) {
    try {
      sh(localOclif, ['manifest'], { cwd: dir });
      generated = existsSync(join(dir, 'oclif.manifest.json'));
    } catch (error) {
      log(`oclif manifest failed (${error.message}); writing the manifest by hand`);
    }
  }
  if (!generated) {
    writeFileSync(join(dir, 'oclif.manifest.json'), `${JSON.stringify(handWrittenManifest(), null, 2)}\n`);
  }
  writeFileSync(marker, `${coreSpec}\n`);
  return bin;
}
