// `os configure` on a 4 GiB (sparse) balenaOS-like image: wall time and peak RSS (medians) of
//   skiff os configure IMG --device-type … --hostname … --config-network wifi …
//   balena os configure IMG --config cfg.json       (balena-cli 22.5.5, the peer — if it runs offline)
// and, since balena's os configure needs its cloud API, the offline operations both CLIs have on
// the same image: `config inject FILE --drive IMG` and `config read --drive IMG`.
// Informational: always exits 0 unless skiff itself fails.
//
// The image: MBR, a 100 MiB FAT32 `resin-boot` at 4 MiB (os-release, device-type.json, a
// config.json, system-connections/resin-sample.ignore, as balenaOS ships it), a 1 GiB ext4
// rootA, the rest unallocated; made with sfdisk, mkfs.vfat, mke2fs and mtools.
//
//   node bench/os-configure.mjs [--runs N] [--warmup N]
import process from 'node:process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  parseBenchArgs, bench, ensureSkiffBuilt, ensureBalena, balenaEnv, measureOnce,
  printComparison, fmtSec, fmtMB, rssMethodInUse, log, sh,
} from './lib.mjs';

const opts = parseBenchArgs({ runs: { default: 7, help: 'measured runs of each command' }, options: { warmup: { default: 1, help: 'unmeasured warm-up runs before them' } } });
const skiff = ensureSkiffBuilt();
rssMethodInUse();

for (const tool of ['sfdisk', 'mkfs.vfat', 'mke2fs', 'mcopy']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status !== 0) {
    console.log(`${tool} is missing: run scripts/setup-host.sh (fdisk, dosfstools, e2fsprogs, mtools)`);
    process.exit(0);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'skiff-bench-osconf-'));
const cleanup = () => rmSync(dir, { recursive: true, force: true });
process.on('SIGINT', () => { cleanup(); process.exit(130); });

const MiB = 1024 * 1024;
const BOOT = { offset: 4 * MiB, size: 100 * MiB };
const ROOT = { offset: BOOT.offset + BOOT.size, size: 1024 * MiB };

function makeImage(file) {
  sh('truncate', ['-s', '4G', file]);
  const table = `label: dos\nstart=${BOOT.offset / 512}, size=${BOOT.size / 512}, type=c, bootable\nstart=${ROOT.offset / 512}, size=${ROOT.size / 512}, type=83\n`;
  const r = spawnSync('sfdisk', ['-q', file], { input: table, stdio: ['pipe', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error('sfdisk failed');
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'resin-rootA', '-E', `offset=${ROOT.offset},nodiscard`, file, `${ROOT.size / 1024}k`]);
  sh('mkfs.vfat', ['-F', '32', '-s', '1', '-n', 'resin-boot', '--offset', String(BOOT.offset / 512), file, String(BOOT.size / 1024)], { stdio: 'ignore' });
  const put = (name, content) => {
    const src = join(dir, 'put.tmp');
    writeFileSync(src, content);
    sh('mcopy', ['-o', '-i', `${file}@@${BOOT.offset}`, src, `::/${name}`]);
  };
  put('os-release', 'ID="balena-os"\nNAME="balenaOS"\nVERSION="6.0.13"\n');
  put('device-type.json', '{"slug":"raspberrypi4-64","name":"Raspberry Pi 4 (using 64bit OS)"}');
  put('config.json', '{"deviceType":"raspberrypi4-64","persistentLogging":false}');
  sh('mmd', ['-i', `${file}@@${BOOT.offset}`, '::/system-connections']);
  put('system-connections/resin-sample.ignore', '[connection]\nid=resin-wifi\ntype=wifi\n\n[wifi]\nhidden=true\nmode=infrastructure\nssid=My_Wifi_Ssid\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\npsk=super_secret_wifi_password\n\n[ipv4]\nmethod=auto\n');
}

try {
  log('making two 4 GiB sparse images (one per CLI)');
  const ours = join(dir, 'skiff.img');
  const theirs = join(dir, 'balena.img');
  makeImage(ours);
  makeImage(theirs);
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify({ deviceType: 'raspberrypi4-64', applicationId: 1234, applicationName: 'bench', hostname: 'bench-1', wifiSsid: 'lab', wifiKey: 'labpassword', listenPort: 48484 }));

  log(`${opts.runs} measured runs each after ${opts.warmup} warm-up run(s)`);
  const configure = await bench('skiff os configure', skiff, ['os', 'configure', ours, '--device-type', 'raspberrypi4-64', '--fleet', 'bench', '--hostname', 'bench-1', '--config-network', 'wifi', '--config-wifi-ssid', 'lab', '--config-wifi-key', 'labpassword'], opts);
  if (configure.code !== 0) throw new Error('skiff os configure failed');

  let balena;
  let balenaConfigure = null;
  let why = '';
  try {
    balena = ensureBalena();
  } catch (error) {
    why = `balena-cli is not installed (${error.message})`;
  }
  if (balena) {
    const probe = await measureOnce(balena, ['os', 'configure', theirs, '--config', cfg], { env: balenaEnv(balena) });
    if (probe.code === 0) balenaConfigure = await bench('balena os configure', balena, ['os', 'configure', theirs, '--config', cfg], { ...opts, env: balenaEnv(balena) });
    else why = `'balena os configure' does not run offline: it exited ${probe.code} with "${(probe.stdout + probe.stderr).trim().split('\n')[0]}" (it checks the login and fetches the fleet and device-type manifest from balena's API, even with --config)`;
  }

  const inject = await bench('skiff config inject', skiff, ['config', 'inject', cfg, '--drive', ours], opts);
  const read = await bench('skiff config read', skiff, ['config', 'read', '--drive', ours], opts);
  const env = balena ? balenaEnv(balena) : undefined;
  const balenaInject = balena ? await bench('balena config inject', balena, ['config', 'inject', cfg, '--drive', theirs], { ...opts, env }) : null;
  const balenaRead = balena ? await bench('balena config read', balena, ['config', 'read', '--drive', theirs], { ...opts, env }) : null;

  console.log(`\nos configure on a 4 GiB sparse image (100 MiB FAT32 boot partition), median of ${opts.runs} runs (node ${process.version}, peak RSS via ${rssMethodInUse()})`);
  const ok = (r) => (r && r.code === 0 ? r : null);
  printComparison('wall time', 'balena 22.5.5', [
    { measure: 'os configure', skiff: configure.wall, peer: ok(balenaConfigure)?.wall, fmt: fmtSec },
    { measure: 'config inject', skiff: inject.wall, peer: ok(balenaInject)?.wall, fmt: fmtSec },
    { measure: 'config read', skiff: read.wall, peer: ok(balenaRead)?.wall, fmt: fmtSec },
  ]);
  printComparison('peak RSS', 'balena 22.5.5', [
    { measure: 'os configure', skiff: configure.rss, peer: ok(balenaConfigure)?.rss, fmt: fmtMB },
    { measure: 'config inject', skiff: inject.rss, peer: ok(balenaInject)?.rss, fmt: fmtMB },
    { measure: 'config read', skiff: read.rss, peer: ok(balenaRead)?.rss, fmt: fmtMB },
  ]);
  if (why) console.log(`\nNOTE: no balena figure for os configure: ${why}. config inject/read are the offline operations both CLIs have on the same image.`);

  // Not a figure, a check: balena-cli reads the config.json skiff wrote (its own FAT code, not ours).
  if (balena) {
    sh(skiff, ['os', 'configure', ours, '--device-type', 'raspberrypi4-64', '--fleet', 'bench', '--hostname', 'bench-2', '--dev', '--initial-device-name', 'pi-one']);
    const theirView = JSON.parse(spawnSync(balena, ['config', 'read', '--drive', ours, '--json'], { env, encoding: 'utf8' }).stdout);
    const ourView = JSON.parse(spawnSync(skiff, ['config', 'read', '--drive', ours, '--json'], { encoding: 'utf8' }).stdout).result;
    const same = JSON.stringify(theirView) === JSON.stringify(ourView);
    console.log(`\ninterop: 'balena config read' of the image skiff configured ${same ? 'gives the same config.json' : `DIFFERS: ${JSON.stringify(theirView)}`}`);
  }
} finally {
  cleanup();
}
