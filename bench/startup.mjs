// Startup cost: wall time and peak RSS (medians) of
//   skiff version / skiff --help
//   balena version / balena --help            (balena-cli 22.5.5, the peer)
//   bare hello / bare --help                  (one-command @oclif/core CLI, the framework's floor)
//   node -e 0                                 (Node's own floor)
// and whether the targets are met. Informational: always exits 0.
// Each CLI is started through its own bin (shebang), as a user would.
//
//   node bench/startup.mjs [--runs N] [--warmup N]
import process from 'node:process';
import {
  parseBenchArgs, bench, skiffForStartup, ensureBalena, ensureBareOclif, balenaEnv,
  printComparison, printTable, fmtSec, fmtMB, fmtRatio, ratio, rssMethodInUse, log,
} from './lib.mjs';

const TARGET_WALL_RATIO = 1.15; // skiff within 15% of the bare oclif CLI
const TARGET_RSS_MB = 65;
const REFERENCE = { balena: { wall: 1.05, rss: 100 }, bare: { wall: 0.32, rss: 56 } };

const opts = parseBenchArgs({ runs: { default: 7, help: 'measured runs of each command' }, options: { warmup: { default: 1, help: 'unmeasured warm-up runs before them' } } });
const staged = skiffForStartup();
const skiff = staged.bin;
const bare = ensureBareOclif();
const balena = ensureBalena();
const node = process.execPath;
rssMethodInUse();

log(`${opts.runs} measured runs each after ${opts.warmup} warm-up run(s)`);
const r = {
  skiffVersion: await bench('skiff version', skiff, ['version'], opts),
  skiffHelp: await bench('skiff --help', skiff, ['--help'], opts),
  bareHello: await bench('bare-oclif hello', bare, ['hello'], opts),
  bareHelp: await bench('bare-oclif --help', bare, ['--help'], opts),
  balenaVersion: await bench('balena version', balena, ['version'], { ...opts, env: balenaEnv(balena) }),
  balenaHelp: await bench('balena --help', balena, ['--help'], { ...opts, env: balenaEnv(balena) }),
  node: await bench('node -e 0', node, ['-e', '0'], opts),
};
staged.cleanup();

console.log(`\nStartup, median of ${opts.runs} runs (node ${process.version}, peak RSS via ${rssMethodInUse()})`);

const rowsAgainst = (peerVersion, peerHelp, versionLabel) => [
  { measure: `${versionLabel} wall`, skiff: r.skiffVersion.wall, peer: peerVersion.wall, fmt: fmtSec },
  { measure: `${versionLabel} peak RSS`, skiff: r.skiffVersion.rss, peer: peerVersion.rss, fmt: fmtMB },
  { measure: '--help wall', skiff: r.skiffHelp.wall, peer: peerHelp.wall, fmt: fmtSec },
  { measure: '--help peak RSS', skiff: r.skiffHelp.rss, peer: peerHelp.rss, fmt: fmtMB },
];
printComparison('skiff vs bare oclif CLI (framework floor)', 'bare-oclif',
  rowsAgainst(r.bareHello, r.bareHelp, 'version (bare: hello)'));
printComparison('skiff vs balena-cli 22.5.5', 'balena', rowsAgainst(r.balenaVersion, r.balenaHelp, 'version'));
printTable(['measure', 'node -e 0'], [['wall', fmtSec(r.node.wall)], ['peak RSS', fmtMB(r.node.rss)]],
  'Node floor');

if (staged.note) console.log(`\nNOTE: ${staged.note}`);
const failed = Object.values(r).filter((x) => x.code !== 0).map((x) => x.label);
if (failed.length) console.log(`\nNOTE: non-zero exit from: ${failed.join(', ')} (see stderr above); their figures are suspect.`);

const verdict = (ok) => (ok ? 'MET' : 'NOT MET');
const checks = [
  [`skiff version wall within 15% of bare hello (ratio ${fmtRatio(ratio(r.skiffVersion.wall, r.bareHello.wall))})`,
    ratio(r.skiffVersion.wall, r.bareHello.wall) <= TARGET_WALL_RATIO],
  [`skiff --help wall within 15% of bare --help (ratio ${fmtRatio(ratio(r.skiffHelp.wall, r.bareHelp.wall))})`,
    ratio(r.skiffHelp.wall, r.bareHelp.wall) <= TARGET_WALL_RATIO],
  [`skiff version peak RSS under ${TARGET_RSS_MB} MB (${fmtMB(r.skiffVersion.rss)})`, r.skiffVersion.rss < TARGET_RSS_MB],
  [`skiff --help peak RSS under ${TARGET_RSS_MB} MB (${fmtMB(r.skiffHelp.rss)})`, r.skiffHelp.rss < TARGET_RSS_MB],
];
console.log('\nTargets (from the issue)');
for (const [text, ok] of checks) console.log(`  [${verdict(ok)}] ${text}`);
console.log('\nIssue\'s reference figures vs this machine (version command)');
const refLine = (name, ref, here) => console.log(`  ${name.padEnd(11)} issue ${fmtSec(ref.wall)} / ${fmtMB(ref.rss).padStart(8)}`
  + `   here ${fmtSec(here.wall)} / ${fmtMB(here.rss).padStart(8)}`);
refLine('balena', REFERENCE.balena, r.balenaVersion);
refLine('bare oclif', REFERENCE.bare, r.bareHello);
