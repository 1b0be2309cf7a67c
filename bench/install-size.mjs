// Install size: what `npm i -g skiff` would put on disk vs balena-cli 22.5.5.
//   skiff   package.json + package-lock.json copied to a temp dir,
//           `npm ci --omit=dev --ignore-scripts --no-audit --no-fund`, then du -sb node_modules,
//           plus du -sb dist/ (the published code; bin/ and the manifest are a few KB).
//   balena  du -sb of the node_modules its install lives in (balena-cli itself included).
// Informational: exits 0 unless an install fails.
//
//   node bench/install-size.mjs
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  REPO_ROOT, ensureSkiffBuilt, ensureBalena, balenaNodeModules, diskUsageBytes, sh, log,
  parseBenchArgs, printComparison, fmtMB, fmtRatio, ratio, MB,
} from './lib.mjs';

parseBenchArgs({ runs: null, measuresOnce: 'sizes on disk do not vary between runs' });

const TARGET_RATIO = 0.1; // under a tenth of balena's

/** Number of packages npm installed (entries of node_modules/.package-lock.json). */
function packageCount(nodeModules) {
  try {
    const lock = JSON.parse(readFileSync(join(nodeModules, '.package-lock.json'), 'utf8'));
    return Object.keys(lock.packages ?? {}).filter((k) => k.includes('node_modules/')).length;
  } catch {
    return null;
  }
}

ensureSkiffBuilt();
const balenaBin = ensureBalena();

const dir = mkdtempSync(join(tmpdir(), 'skiff-bench-install-'));
let note = '';
try {
  copyFileSync(join(REPO_ROOT, 'package.json'), join(dir, 'package.json'));
  const hasLock = existsSync(join(REPO_ROOT, 'package-lock.json'));
  if (hasLock) copyFileSync(join(REPO_ROOT, 'package-lock.json'), join(dir, 'package-lock.json'));
  const flags = ['--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'];
  try {
    if (!hasLock) throw new Error('no package-lock.json');
    sh('npm', ['ci', ...flags], { cwd: dir });
  } catch (error) {
    // e.g. package.json edited without refreshing the lock: resolve afresh, and say so.
    note = `npm ci failed (${error.message}); sizes come from \`npm install --omit=dev\` instead`;
    log(`WARNING: ${note}`);
    rmSync(join(dir, 'node_modules'), { recursive: true, force: true });
    sh('npm', ['install', ...flags], { cwd: dir });
  }

  // The desk CLI without the agent's database (better-sqlite3 is an optional dependency, so a
  // laptop whose native build fails, or `--omit=optional`, still gets a working CLI).
  const lean = mkdtempSync(join(tmpdir(), 'skiff-bench-install-lean-'));
  copyFileSync(join(dir, 'package.json'), join(lean, 'package.json'));
  if (hasLock) copyFileSync(join(REPO_ROOT, 'package-lock.json'), join(lean, 'package-lock.json'));
  sh('npm', [hasLock ? 'ci' : 'install', ...flags, '--omit=optional'], { cwd: lean });
  const leanModules = diskUsageBytes(join(lean, 'node_modules')) / MB;
  rmSync(lean, { recursive: true, force: true });

  const skiffModules = diskUsageBytes(join(dir, 'node_modules')) / MB;
  const skiffDist = diskUsageBytes(join(REPO_ROOT, 'dist')) / MB;
  const skiffTotal = skiffModules + skiffDist;
  const balenaModulesDir = balenaNodeModules(balenaBin);
  const balenaTotal = diskUsageBytes(balenaModulesDir) / MB;

  console.log(`\nInstall size (du -sb, MB = 2^20 bytes); balena: ${balenaModulesDir}`);
  printComparison('skiff vs balena-cli 22.5.5', 'balena', [
    { measure: 'node_modules (production)', skiff: skiffModules, peer: balenaTotal, fmt: fmtMB },
    { measure: 'dist/ (own code)', skiff: skiffDist, peer: null, fmt: fmtMB },
    { measure: 'total installed', skiff: skiffTotal, peer: balenaTotal, fmt: fmtMB },
    { measure: 'total, --omit=optional (no agent DB)', skiff: leanModules + skiffDist, peer: balenaTotal, fmt: fmtMB },
    { measure: 'packages', skiff: packageCount(join(dir, 'node_modules')), peer: packageCount(balenaModulesDir), fmt: (n) => (n == null ? 'n/a' : String(n)) },
  ]);
  console.log('  (balena-cli\'s own code is inside its node_modules figure)');
  if (note) console.log(`\nNOTE: ${note}`);
  const r = ratio(skiffTotal, balenaTotal);
  const rl = ratio(leanModules + skiffDist, balenaTotal);
  console.log(`\nTarget (from the issue)\n  [${r < TARGET_RATIO ? 'MET' : 'NOT MET'}] skiff total under a tenth of balena's (ratio ${fmtRatio(r)}, ${(r * 100).toFixed(1)}%)`
    + `\n  [${rl < TARGET_RATIO ? 'MET' : 'NOT MET'}] the CLI without the agent's optional database (ratio ${fmtRatio(rl)}, ${(rl * 100).toFixed(1)}%)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
