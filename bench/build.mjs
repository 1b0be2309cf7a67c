// Build speed: the same 3-service fixture (examples/multi-service) built by `skiff build` and by
// `balena build` (balena-cli 22.5.5) on the same engine, warm (layer cache filled) and cold
// (--nocache), medians of N runs. Each tool gets its own project name so neither reuses the
// other's tags; the layer cache is the engine's and is shared, as it would be on a developer's
// machine. Informational: always exits 0.
//
//   node bench/build.mjs [--runs N] [--warmup N]
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import {
  REPO_ROOT, parseBenchArgs, bench, ensureSkiffBuilt, ensureBalena, balenaEnv, printComparison,
  fmtSec, fmtMB, fmtRatio, ratio, sh, log,
} from './lib.mjs';

const opts = parseBenchArgs({ runs: { default: 7, help: 'measured builds per case' }, options: { warmup: { default: 1, help: 'unmeasured warm-up runs before them' } } });
ensureSkiffBuilt();
const balena = ensureBalena();
// The fixture builds FROM busybox:1.36: make it locally when no registry is reachable.
sh(process.execPath, [path.join(REPO_ROOT, 'scripts/demo-base-images.mjs')]);

const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-bench-build-'));
const project = path.join(dir, 'multi-service');
cpSync(path.join(REPO_ROOT, 'examples/multi-service'), project, { recursive: true });

const skiff = path.join(REPO_ROOT, 'bin/run.js');
const common = ['--deviceType', 'intel-nuc', '--arch', 'amd64'];
const skiffArgs = (extra) => ['build', project, ...common, '--projectName', 'benchskiff', '--nologs', ...extra];
const balenaArgs = (extra) => ['build', project, ...common, '--projectName', 'benchbalena', '--nologs', ...extra];
const env = { ...process.env, CI: '1', NO_COLOR: '1' };

log(`fixture: ${project} (3 services), ${opts.runs} runs each after ${opts.warmup} warm-up`);
const r = {
  skiffWarm: await bench('skiff build (warm)', skiff, skiffArgs([]), { ...opts, env }),
  balenaWarm: await bench('balena build (warm)', balena, balenaArgs([]), { ...opts, env: { ...balenaEnv(balena), CI: '1' } }),
  skiffCold: await bench('skiff build (cold)', skiff, skiffArgs(['--nocache']), { ...opts, env }),
  balenaCold: await bench('balena build (cold)', balena, balenaArgs(['--nocache']), { ...opts, env: { ...balenaEnv(balena), CI: '1' } }),
};

printComparison(`Build of examples/multi-service (3 services), median of ${opts.runs}`, 'balena', [
  { measure: 'warm cache wall', skiff: r.skiffWarm.wall, peer: r.balenaWarm.wall, fmt: fmtSec },
  { measure: 'warm cache peak RSS', skiff: r.skiffWarm.rss, peer: r.balenaWarm.rss, fmt: fmtMB },
  { measure: 'cold (--nocache) wall', skiff: r.skiffCold.wall, peer: r.balenaCold.wall, fmt: fmtSec },
  { measure: 'cold (--nocache) peak RSS', skiff: r.skiffCold.rss, peer: r.balenaCold.rss, fmt: fmtMB },
]);
const failed = Object.values(r).filter((x) => x.code !== 0).map((x) => x.label);
if (failed.length) console.log(`\nNOTE: non-zero exit from: ${failed.join(', ')}; their figures are suspect.`);
console.log(`\nTargets: [${r.skiffWarm.wall <= r.balenaWarm.wall ? 'MET' : 'NOT MET'}] warm no slower than balena (${fmtRatio(ratio(r.skiffWarm.wall, r.balenaWarm.wall))})`
  + `  [${r.skiffCold.wall < r.balenaCold.wall ? 'MET' : 'NOT MET'}] cold faster through parallelism (${fmtRatio(ratio(r.skiffCold.wall, r.balenaCold.wall))})`);

for (const name of ['benchskiff', 'benchbalena']) {
  for (const svc of ['web', 'worker', 'cfg']) {
    try {
      sh('/usr/bin/docker', ['rmi', '-f', `${name}_${svc}`]);
    } catch {
      // already gone
    }
  }
}
rmSync(dir, { recursive: true, force: true });
