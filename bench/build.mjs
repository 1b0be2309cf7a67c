// Build speed (issue 13), side by side in one run, on this machine's engine:
//
// 1. examples/multi-service (3 services) built by `skiff build` (the engine's BuildKit),
//    `skiff build --no-buildkit` (the classic builder) and `balena build` (balena-cli 22.5.5,
//    which only has the classic builder): warm with nothing changed, warm after an edit of
//    web/index.html, and cold (--nocache).
// 2. A dependency install after one package was added to requirements.txt: the same one-service
//    project with `RUN --mount=type=cache` (BuildKit) and with a plain RUN (BuildKit, classic,
//    balena). "Downloading" a package is emulated: --delay s of sleep and --package-mb MiB of
//    random bytes each, for --packages packages plus the added one.
//
// skiff runs with --json (its own build time and cached steps come from the result). Each builder
// has its own copy of each project and its own project name; the builders take turns
// within a round (so load from other work on the machine falls on all of them), after --warmup
// unmeasured rounds. Figures are medians of --runs rounds; ratios are read from them, never
// asserted. Everything the script makes carries the label io.skiff.bench=<run id> and is removed
// at the end; the cache mount (its own id per run) is emptied by a last build. The engine's build
// cache is never pruned (others share it). Exits 1 only if a build failed.
//
//   node bench/build.mjs [--runs N] [--warmup N] [--packages N] [--package-mb N] [--delay S]
import { appendFileSync, cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { randomBytes } from 'node:crypto';
import {
  REPO_ROOT, SKIFF_BIN, parseBenchArgs, measureOnce, median, ensureSkiffBuilt, ensureBalena, balenaEnv,
  printTable, fmtSec, fmtMB, fmtRatio, ratio, log,
} from './lib.mjs';
import { engine, ensureBaseImage, withCleanup } from './agent-lib.mjs';

const opts = parseBenchArgs({
  runs: { default: 5, help: 'measured rounds (in each, every builder builds every case once)' },
  options: {
    warmup: { default: 1, min: 1, help: 'unmeasured rounds first (fill the layer cache and the cache mount)' },
    packages: { default: 8, min: 1, help: 'packages in requirements.txt before the one added' },
    'package-mb': { default: 5, min: 1, help: 'MiB each emulated package download writes' },
    delay: { default: 1, min: 0, help: 'seconds each emulated package download sleeps' },
  },
});

const RUN_ID = randomBytes(3).toString('hex');
const LABEL = `io.skiff.bench=${RUN_ID}`;
const CACHE_ID = `skiff-bench-${RUN_ID}`;
const COMMON = ['--deviceType', 'intel-nuc', '--arch', 'amd64'];
const failures = [];

/** Every label-matching image (intermediate ones of the classic builder too), children first. */
async function removeBenchImages() {
  const filter = encodeURIComponent(JSON.stringify({ label: [LABEL] }));
  // A parent can't go while a child is there; each pass removes the leaves, so repeat.
  for (let pass = 0; pass < 10; pass++) {
    const images = (await engine('GET', `/images/json?all=1&filters=${filter}`)).json ?? [];
    if (images.length === 0) return 0;
    let removed = 0;
    for (const image of images) {
      const r = await engine('DELETE', `/images/${image.Id}?force=1`).catch(() => ({ status: 0 }));
      if (r.status === 200) removed++;
    }
    if (removed === 0) return images.length;
  }
  return ((await engine('GET', `/images/json?all=1&filters=${filter}`)).json ?? []).length;
}

/**
 * What skiff's --json result says: the builders it used, its own build time (s, from loading the
 * project to the last image) and the cached steps over all services; null if stdout isn't that.
 */
function skiffResult(stdout) {
  try {
    const { result } = JSON.parse(stdout);
    const services = result.services ?? [];
    return {
      builders: [...new Set(services.map((s) => s.builder))],
      seconds: result.buildSeconds,
      cached: `${services.reduce((n, s) => n + (s.cachedSteps ?? 0), 0)}/${services.reduce((n, s) => n + (s.steps ?? 0), 0)}`,
    };
  } catch {
    return null;
  }
}

await withCleanup(async (onCleanup) => {
  ensureSkiffBuilt();
  const balena = ensureBalena();
  // Both projects build FROM busybox:1.36: made locally when no registry is reachable.
  ensureBaseImage();
  const version = (await engine('GET', '/version')).json ?? {};
  const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-bench-build-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  onCleanup(async () => {
    const left = await removeBenchImages();
    if (left) log(`cleanup: ${left} image(s) labelled ${LABEL} could not be removed`);
  });

  const skiffEnv = { ...process.env, CI: '1', NO_COLOR: '1' };
  const builders = [
    // skiff prints its result as JSON (--json) for its own build time; the build log, when asked
    // for (--logs), then goes to stderr. balena prints its log unless --nologs.
    { key: 'bk', label: 'skiff (BuildKit)', cmd: SKIFF_BIN, flags: ['--json'], quiet: ['--nologs'], verbose: ['--logs'], env: skiffEnv },
    { key: 'cl', label: 'skiff --no-buildkit', cmd: SKIFF_BIN, flags: ['--json', '--no-buildkit'], quiet: ['--nologs'], verbose: ['--logs'], env: skiffEnv },
    { key: 'bal', label: 'balena build', cmd: balena, flags: [], quiet: ['--nologs'], verbose: [], env: { ...balenaEnv(balena), CI: '1' } },
  ];
  const [bk, classic, bal] = builders;

  /** One timed build; a failure is logged and remembered (its time is then left out). */
  async function build(what, builder, project, name, { logs = false, extra = [] } = {}) {
    const args = ['build', project, ...COMMON, '--projectName', name, ...builder.flags, ...(logs ? builder.verbose : builder.quiet), ...extra];
    const r = await measureOnce(builder.cmd, args, { env: builder.env });
    const output = r.stdout + r.stderr;
    if (r.code !== 0) {
      failures.push(`${what} (${builder.label})`);
      log(`FAILED: ${what} (${builder.label}) exited with ${r.code}:\n${output.trim().split('\n').slice(-25).join('\n')}`);
      return null;
    }
    const result = builder.cmd === SKIFF_BIN ? skiffResult(r.stdout) : null;
    if (builder.cmd === SKIFF_BIN && !result) log(`WARNING: no JSON result from skiff for ${what}`);
    if (result && builder.key === 'bk' && result.builders.join() !== 'buildkit') {
      log(`WARNING: skiff built "${what}" with ${result.builders.join(', ')}: this engine has no BuildKit, so the BuildKit column is not BuildKit`);
    }
    return { wall: r.wallSec, rss: r.rssKB / 1024, reported: result?.seconds ?? null, cached: result?.cached, output };
  }

  log(`run ${RUN_ID}: engine ${version.Version ?? '?'} (API ${version.ApiVersion ?? '?'}), ${os.cpus().length} cores, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  log(`${opts.warmup} warm-up round(s), then ${opts.runs} measured; label ${LABEL}`);
  const loadBefore = os.loadavg()[0];

  // ------------------------------------------------------------ 1. examples/multi-service

  /** A copy of the fixture per builder; a LABEL line last in each Dockerfile marks what we build. */
  function fixtureCopy(builder) {
    const project = path.join(dir, `multi-service-${builder.key}`);
    cpSync(path.join(REPO_ROOT, 'examples', 'multi-service'), project, { recursive: true });
    for (const service of readdirSync(project, { withFileTypes: true }).filter((e) => e.isDirectory())) {
      for (const file of readdirSync(path.join(project, service.name))) {
        if (file === 'Dockerfile' || file === 'Dockerfile.template') appendFileSync(path.join(project, service.name, file), `LABEL ${LABEL}\n`);
      }
    }
    return project;
  }
  const fixture = new Map(builders.map((b) => [b.key, { project: fixtureCopy(b), name: `bkbench${RUN_ID}${b.key}` }]));
  const cases = [
    { key: 'warm', measure: 'warm, nothing changed' },
    {
      key: 'edit',
      measure: 'warm, web/index.html edited',
      // Bytes no build has seen: the run id (the engine's build caches outlive a run, and the LABEL
      // comes after the COPY) and the builder (skiff --no-buildkit and balena share the classic
      // builder's cache, so the same bytes would let the second reuse the first's layer).
      before: (b, round) => appendFileSync(path.join(fixture.get(b.key).project, 'web', 'index.html'), `<!-- edit ${RUN_ID} ${b.key} ${round} -->\n`),
    },
    { key: 'cold', measure: 'cold (--nocache)', extra: ['--nocache'] },
  ];
  const fx = Object.fromEntries(cases.map((c) => [c.key, Object.fromEntries(builders.map((b) => [b.key, []]))]));
  for (let round = 0; round < opts.warmup + opts.runs; round++) {
    const counted = round >= opts.warmup;
    for (const c of cases) {
      for (const b of builders) {
        c.before?.(b, round);
        const { project, name } = fixture.get(b.key);
        const r = await build(`multi-service ${c.key}`, b, project, name, { extra: c.extra });
        log(`${counted ? `run ${round - opts.warmup + 1}` : 'warm-up'} multi-service ${c.key.padEnd(4)} ${b.label.padEnd(19)} ${r ? fmtSec(r.wall) : 'failed'}`
          + `${r?.reported != null ? ` (skiff: build ${r.reported} s, ${r.cached} steps cached)` : ''}`);
        if (counted && r) fx[c.key][b.key].push(r);
      }
    }
  }

  // ------------------------------------------------------------ 2. dependency install

  const fetchScript = `# Stands in for a package manager. Each requirement missing from the download folder ($1) is
# "downloaded": ${opts.delay} s of sleep and ${opts.packageMb} MiB of random bytes. Then every requirement is
# "installed" (copied) into /app/deps, which lands in the image layer with or without a cache mount.
set -eu
dl=$1
mkdir -p "$dl" /app/deps
fetched=0
total=0
while read -r req; do
  case "$req" in ''|'#'*) continue ;; esac
  total=$((total + 1))
  if [ ! -f "$dl/$req" ]; then
    sleep ${opts.delay}
    head -c ${opts.packageMb * 1024 * 1024} /dev/urandom > "$dl/$req.part"
    mv "$dl/$req.part" "$dl/$req"
    fetched=$((fetched + 1))
  fi
  cp "$dl/$req" /app/deps/
done < requirements.txt
echo "fetch: downloaded $fetched of $total packages"
`;
  const run = {
    mount: `RUN --mount=type=cache,id=${CACHE_ID},target=/cache sh fetch.sh /cache`,
    plain: 'RUN sh fetch.sh /tmp/downloads && rm -rf /tmp/downloads',
  };
  const variants = [
    { key: 'm', label: 'skiff (BuildKit), RUN --mount=type=cache', builder: bk, run: run.mount },
    { key: 'p', label: 'skiff (BuildKit), plain RUN', builder: bk, run: run.plain },
    { key: 'c', label: 'skiff --no-buildkit, plain RUN', builder: classic, run: run.plain },
    { key: 'b', label: 'balena build, plain RUN', builder: bal, run: run.plain },
  ];
  const basePackages = Array.from({ length: opts.packages }, (_, i) => `pkg${String(i + 1).padStart(2, '0')}==1.0`);
  for (const v of variants) {
    v.project = path.join(dir, `deps-${v.key}`);
    v.name = `bkbench${RUN_ID}dep${v.key}`;
    mkdirSync(v.project);
    writeFileSync(path.join(v.project, 'fetch.sh'), fetchScript);
    writeFileSync(path.join(v.project, 'Dockerfile'), `FROM busybox:1.36\nWORKDIR /app\nCOPY fetch.sh requirements.txt ./\n${v.run}\nLABEL ${LABEL}\n`);
    v.results = [];
  }
  let mountUsed = false;
  onCleanup(async () => {
    if (!mountUsed) return;
    // The cache mount outlives the images; leave it empty rather than prune the engine's cache.
    const project = path.join(dir, 'empty-cache');
    mkdirSync(project, { recursive: true });
    writeFileSync(path.join(project, 'Dockerfile'), `FROM busybox:1.36\nRUN --mount=type=cache,id=${CACHE_ID},target=/cache rm -rf /cache/* && echo ${RUN_ID}\nLABEL ${LABEL}\n`);
    const r = await measureOnce(SKIFF_BIN, ['build', project, ...COMMON, '--projectName', `bkbench${RUN_ID}empty`, '--buildkit', '--nologs'], { env: skiffEnv });
    if (r.code !== 0) log(`cleanup: emptying the cache mount ${CACHE_ID} failed: ${(r.stdout + r.stderr).trim().split('\n').at(-1)}`);
  });
  for (let round = 0; round < opts.warmup + opts.runs; round++) {
    const counted = round >= opts.warmup;
    for (const v of variants) {
      // The added package is new to every build (run id, variant, round), so neither a layer from
      // this or an earlier run nor (with the mount) a cached download can stand in for it.
      const added = `added-${RUN_ID}-${v.key}-${counted ? round - opts.warmup + 1 : `w${round}`}==1.0`;
      writeFileSync(path.join(v.project, 'requirements.txt'), `${[...basePackages, added].join('\n')}\n`);
      if (v.run === run.mount) mountUsed = true;
      const r = await build(`dependency change ${v.key}`, v.builder, v.project, v.name, { logs: true });
      const fetched = r && /fetch: downloaded (\d+) of (\d+) packages/.exec(r.output);
      if (r && !fetched) log(`WARNING: no "fetch: downloaded" line in the output of ${v.label}`);
      if (r && fetched) r.downloaded = `${fetched[1]} of ${fetched[2]}`;
      log(`${counted ? `run ${round - opts.warmup + 1}` : 'warm-up'} dependency change, ${v.label.padEnd(40)} ${r ? fmtSec(r.wall) : 'failed'}${fetched ? ` (downloaded ${fetched[1]} of ${fetched[2]})` : ''}`);
      if (counted && r) v.results.push(r);
    }
  }

  // ------------------------------------------------------------ tables

  const med = (rs, field = 'wall') => {
    const values = rs.map((r) => r[field]).filter((x) => x != null);
    return values.length ? median(values) : null;
  };
  console.log(`\nengine ${version.Version ?? '?'} (API ${version.ApiVersion ?? '?'}), ${os.cpus().length} cores, Node ${process.versions.node}; `
    + `load average ${loadBefore.toFixed(2)} at the start, ${os.loadavg()[0].toFixed(2)} at the end; run ${RUN_ID}`);
  const f = (c, b, field) => med(fx[c][b], field);
  const fxRow = (measure, c, field, fmt) => {
    const [k, l, b] = ['bk', 'cl', 'bal'].map((key) => f(c, key, field));
    return [measure, fmt(k), fmt(l), fmt(b), fmtRatio(ratio(k, l)), fmtRatio(ratio(k, b))];
  };
  printTable(
    ['measure', 'skiff (BuildKit)', 'skiff --no-buildkit', 'balena build', 'BuildKit/classic', 'BuildKit/balena'],
    [
      ...cases.map((c) => fxRow(`${c.measure}, wall`, c.key, 'wall', fmtSec)),
      fxRow('warm, nothing changed, peak RSS', 'warm', 'rss', fmtMB),
      ...cases.map((c) => {
        const [k, l] = ['bk', 'cl'].map((key) => f(c.key, key, 'reported'));
        return [`${c.measure}, skiff's own build time`, fmtSec(k), fmtSec(l), 'n/a', fmtRatio(ratio(k, l)), ''];
      }),
    ],
    `examples/multi-service (3 services), median of ${opts.runs} (wall: spawn to exit of the CLI)`,
  );

  const mountWall = med(variants[0].results);
  printTable(
    ['build after adding one package', 'wall', 'downloaded', 'ratio to the cache mount'],
    variants.map((v) => [v.label, fmtSec(med(v.results)), [...new Set(v.results.map((x) => x.downloaded ?? '?'))].join(', ') || 'n/a', fmtRatio(ratio(med(v.results), mountWall))]),
    `Dependency install (${opts.packages} packages + 1 added, each ${opts.delay} s and ${opts.packageMb} MiB), median of ${opts.runs}`,
  );
  const r = ratio(mountWall, med(variants[1].results));
  console.log(`\n[${r != null && r < 1 ? 'MET' : 'NOT MET'}] the build after a dependency change is faster with the cache mount than without (BuildKit): ${fmtRatio(r)}`);
  if (failures.length) {
    process.exitCode = 1;
    console.log(`\nNOTE: ${failures.length} build(s) failed and are left out of the medians: ${[...new Set(failures)].join('; ')}`);
  }
});
