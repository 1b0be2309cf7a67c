/**
 * `skiff os configure`, `config read|write|inject` and `os build-config` as a user runs them, on
 * images made with sfdisk/mkfs.vfat/mke2fs and on a loop device; results read back with mtools and
 * checked with fsck.fat. Every bad input has its one-line error and leaves the target untouched.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { withBootPartition } from '../../src/lib/os/boot-partition.js';
import { runCli, type CliResult } from '../support/cli.js';
import { readWithGlib } from '../support/keyfile.js';
import { KEYS, startTty } from '../support/tty.js';
import { fsckFat, fsckProblems, makeDisk, makeFatImage, mlist, mread, mwrite, run, tempDir } from '../support/os-images.js';
import { requireOrSkip } from '../support/prerequisites.js';

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

function oneLineError(r: CliResult, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, `exit ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0] ?? '', pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

function assertClean(image: string, part: { offset: number; size: number }): void {
  const { status, output } = fsckFat(image, part.offset, part.size);
  assert.deepEqual(fsckProblems(output), [], output);
  assert.equal(status, 0, output);
}

describe('skiff os configure / config (the binary)', function () {
  this.timeout(60_000);
  const tmp = tempDir('skiff-os-e2e-');
  const loops: string[] = [];
  after(() => {
    for (const dev of loops) {
      try {
        run('losetup', ['-d', dev]);
      } catch {
        // already gone
      }
    }
    tmp.remove();
  });
  const file = (name: string) => path.join(tmp.dir, name);

  /** A balenaOS-like disk: FAT32 resin-boot (with os-release, device-type.json, a config.json), ext4 rootA. */
  function balenaImage(name: string, scheme: 'mbr' | 'gpt' = 'mbr', fat: 16 | 32 = 32): { image: string; boot: { offset: number; size: number } } {
    const image = file(name);
    const [boot] = makeDisk(image, scheme, [{ sizeMiB: fat === 32 ? 40 : 20, fs: { fat, label: 'resin-boot' }, name: 'resin-boot' }, { sizeMiB: 8, fs: 'ext4', name: 'resin-rootA' }]);
    if (!boot) throw new Error('no boot partition made');
    mwrite(image, boot.offset, 'os-release', 'ID="balena-os"\nNAME="balenaOS"\nVERSION="6.0.13"\n', tmp.dir);
    mwrite(image, boot.offset, 'device-type.json', '{"slug":"raspberrypi4-64","name":"Raspberry Pi 4"}', tmp.dir);
    mwrite(image, boot.offset, 'config.json', '{"deviceType":"raspberrypi4-64","uuid":"0123abcd","persistentLogging":true}', tmp.dir);
    run('mmd', ['-i', `${image}@@${boot.offset}`, '::/system-connections']);
    mwrite(image, boot.offset, 'system-connections/resin-sample.ignore', '[connection]\nid=resin-wifi\ntype=wifi\n\n[wifi]\nhidden=true\nmode=infrastructure\nssid=My_Wifi_Ssid\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\npsk=super_secret_wifi_password\n\n[ipv4]\nmethod=auto\n\n[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n', tmp.dir);
    return { image, boot };
  }

  it('configures an MBR image from flags: config.json merged, resin-wifi from the image template, fsck clean', async () => {
    const { image, boot } = balenaImage('mbr.img');
    const key = file('id.pub');
    writeFileSync(key, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1 me@desk\n');
    const r = await runCli(['os', 'configure', image, '--fleet', 'myfleet', '--dev', '--hostname', 'kiosk-1', '--initial-device-name', 'first', '--ssh-key', key, '--config-network', 'wifi', '--config-wifi-ssid', 'Home Net', '--config-wifi-key', 'password123', '--provisioning-key', 'pk-123', '--api-endpoint', 'https://api.example.com']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Configured .*mbr\.img: wrote config\.json, system-connections\/resin-wifi \(raspberrypi4-64, myfleet, hostname kiosk-1, development mode\)\n$/);
    assert.match(r.stderr, /Boot partition 1 \(MBR, FAT32 'resin-boot'\), balenaOS 6\.0\.13/);
    const config = JSON.parse(mread(image, boot.offset, 'config.json')) as Record<string, unknown>;
    assert.deepEqual(config, {
      deviceType: 'raspberrypi4-64',
      uuid: '0123abcd',
      persistentLogging: true,
      applicationName: 'myfleet',
      developmentMode: true,
      hostname: 'kiosk-1',
      initialDeviceName: 'first',
      apiKey: 'pk-123',
      apiEndpoint: 'https://api.example.com',
      os: { sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1 me@desk'] },
      listenPort: 48484,
    });
    const wifi = mread(image, boot.offset, 'system-connections/resin-wifi');
    assert.match(wifi, /\[wifi\]\nhidden=true\nmode=infrastructure\nssid=Home Net\n/);
    assert.match(wifi, /psk=password123\n/);
    assertClean(image, boot);

    // Configure again with ethernet: the WiFi connection goes, everything else stays.
    const again = await runCli(['os', 'configure', image, '--config-network', 'ethernet', '--json']);
    assert.equal(again.code, 0, again.stderr);
    const doc = JSON.parse(again.stdout) as { status: string; result: { removed: string[]; config: Record<string, unknown>; partition: { fatType: number; scheme: string } } };
    assert.equal(doc.status, 'ok');
    assert.deepEqual(doc.result.removed, ['system-connections/resin-wifi']);
    assert.equal(doc.result.config.hostname, 'kiosk-1');
    assert.deepEqual([doc.result.partition.fatType, doc.result.partition.scheme], [32, 'mbr']);
    assert.deepEqual(mlist(image, boot.offset, 'system-connections'), ['system-connections/resin-sample.ignore']);
    assertClean(image, boot);
  });

  it('configures a GPT image (FAT16) from --config, flags winning over the file', async () => {
    const { image, boot } = balenaImage('gpt.img', 'gpt', 16);
    const cfg = file('gpt-config.json');
    writeFileSync(cfg, JSON.stringify({ deviceType: 'raspberrypi3', applicationName: 'from-file', wifiSsid: 'cafe', appUpdatePollInterval: 600000 }));
    const r = await runCli(['os', 'configure', image, '--config', cfg, '--hostname', 'gpt-host']);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(mread(image, boot.offset, 'config.json')) as Record<string, unknown>;
    assert.equal(config.applicationName, 'from-file');
    assert.equal(config.deviceType, 'raspberrypi3');
    assert.equal(config.hostname, 'gpt-host');
    assert.equal(config.uuid, '0123abcd');
    assert.doesNotMatch(mread(image, boot.offset, 'system-connections/resin-wifi'), /wifi-security/, 'an open network');
    assertClean(image, boot);
  });

  it('configures a loop device directly, and config read gives it back', async function () {
    const { image, boot } = balenaImage('loop.img');
    let dev: string;
    try {
      dev = run('losetup', ['-f', '--show', image]).trim();
    } catch (err) {
      requireOrSkip(this, false, `a loop device (losetup failed: ${(err as Error).message.split('\n')[0]})`);
      throw err;
    }
    loops.push(dev);
    const r = await runCli(['os', 'configure', dev, '--device-type', 'intel-nuc', '--hostname', 'on-loop']);
    assert.equal(r.code, 0, r.stderr);
    const read = await runCli(['config', 'read', '--drive', dev, '--json']);
    assert.equal(read.code, 0, read.stderr);
    const doc = JSON.parse(read.stdout) as { result: Record<string, unknown> };
    assert.equal(doc.result.hostname, 'on-loop');
    assert.equal(doc.result.deviceType, 'intel-nuc');
    run('losetup', ['-d', dev]);
    loops.splice(loops.indexOf(dev), 1);
    assert.equal((JSON.parse(mread(image, boot.offset, 'config.json')) as Record<string, unknown>).hostname, 'on-loop');
    assertClean(image, boot);
  });

  it('config write sets dotted keys (typed where balenaOS needs it); config inject replaces config.json', async () => {
    const { image, boot } = balenaImage('cfg.img');
    assert.equal((await runCli(['config', 'write', '--drive', image, 'os.network.connectivity.interval', '300'])).code, 0);
    const w = await runCli(['config', 'write', '-d', image, 'developmentMode', 'true']);
    assert.equal(w.code, 0, w.stderr);
    const read = await runCli(['config', 'read', '-d', image]);
    const config = JSON.parse(read.stdout) as Record<string, unknown>;
    assert.deepEqual(config.os, { network: { connectivity: { interval: '300' } } });
    assert.equal(config.developmentMode, true);
    assert.equal(config.uuid, '0123abcd');
    const bad = await runCli(['config', 'write', '-d', image, 'developmentMode', 'yes']);
    oneLineError(bad, 2, /^Error: developmentMode is true or false, not 'yes'\.$/);
    const injected = file('inject.json');
    writeFileSync(injected, '{"deviceType":"intel-nuc","applicationName":"x"}');
    assert.equal((await runCli(['config', 'inject', injected, '--drive', image])).code, 0);
    assert.deepEqual(JSON.parse(mread(image, boot.offset, 'config.json')), { deviceType: 'intel-nuc', applicationName: 'x' });
    assertClean(image, boot);
  });

  it('os build-config: exit 6 naming the flags when not interactive; with flags, a config.json os configure takes', async () => {
    const none = await runCli(['os', 'build-config']);
    oneLineError(none, 6, /^Error: not a terminal, so nothing can be asked: give --device-type, --config-network\.$/);
    const wifiNoSsid = await runCli(['os', 'build-config', '--device-type', 'intel-nuc', '--config-network', 'wifi']);
    oneLineError(wifiNoSsid, 6, /give --config-wifi-ssid/);
    const stdout = await runCli(['os', 'build-config', '--device-type', 'rpi4', '--config-network', 'ethernet', '--fleet', 'f1', '--dev']);
    assert.equal(stdout.code, 0, stdout.stderr);
    assert.deepEqual(JSON.parse(stdout.stdout), { applicationName: 'f1', deviceType: 'raspberrypi4-64', developmentMode: true, listenPort: 48484 });
    const out = file('built.json');
    const toFile = await runCli(['os', 'build-config', '-o', out, '--device-type', 'intel-nuc', '--config-network', 'wifi', '--config-wifi-ssid', 'lab', '--config-wifi-key', 'labpassword']);
    assert.equal(toFile.code, 0, toFile.stderr);
    assert.equal(toFile.stdout, '');
    const { image, boot } = balenaImage('built.img');
    assert.equal((await runCli(['os', 'configure', image, '--config', out])).code, 0);
    assert.match(mread(image, boot.offset, 'system-connections/resin-wifi'), /ssid=lab\n[\s\S]*psk=labpassword/);
  });

  it('os build-config on a terminal: asks each answer (inquirer), writes the config; Ctrl-C is exit 130', async () => {
    const out = file('asked.json');
    const tty = startTty(['os', 'build-config', '-o', out]);
    for (const [question, keys] of [
      [/Device type/, KEYS.DOWN.repeat(4) + KEYS.ENTER], // Raspberry Pi 4 (64-bit OS)
      [/Fleet name/, 'f1\r'],
      [/Network/, KEYS.DOWN + KEYS.ENTER],
      [/WiFi SSID/, 'lab\r'],
      [/WiFi passphrase/, 'labpassword\r'],
      [/Development mode/, 'y\r'],
    ] as const) {
      await tty.waitFor(question);
      tty.send(keys);
    }
    assert.equal(await tty.done, 0, tty.output());
    assert.doesNotMatch(tty.output(), /labpassword/, 'the passphrase is masked');
    assert.deepEqual(JSON.parse(readFileSync(out, 'utf8')), { applicationName: 'f1', deviceType: 'raspberrypi4-64', developmentMode: true, listenPort: 48484, wifiSsid: 'lab', wifiKey: 'labpassword' });

    const quit = startTty(['os', 'build-config', '-o', file('never.json')]);
    await quit.waitFor(/Device type/);
    quit.send(KEYS.CTRL_C);
    assert.equal(await quit.done, 130, quit.output());
    assert.match(quit.output(), /^Error: cancelled at the prompt \(Ctrl-C\)\.$/m);
    assert.throws(() => readFileSync(file('never.json')), /ENOENT/);
  });

  describe('bad input: one line, non-zero exit, the image untouched', () => {
    let image: string;
    let hash: string;
    before(() => {
      image = balenaImage('bad.img').image;
      hash = sha(image);
    });
    afterEach(() => assert.equal(sha(image), hash, 'the image was not changed'));

    it('invalid JSON in --config names file:line:col', async () => {
      const cfg = file('broken.json');
      writeFileSync(cfg, '{\n  "deviceType": "intel-nuc",\n  "hostname": \n}\n');
      oneLineError(await runCli(['os', 'configure', image, '--config', cfg]), 2, new RegExp(`^Error: ${cfg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4:1: invalid JSON: unexpected '}'\\.$`));
    });

    it('an unknown device type, with a did-you-mean', async () => {
      oneLineError(await runCli(['os', 'configure', image, '--device-type', 'raspberrypi4-46']), 2, /^Error: unknown device type 'raspberrypi4-46' \(did you mean 'raspberrypi4-64'\?\)\. 'skiff devices supported' lists them\.$/);
    });

    it('a missing image or --config file, and a missing ssh key file', async () => {
      oneLineError(await runCli(['os', 'configure', file('nope.img'), '--dev']), 2, /^Error: .*nope\.img does not exist\./);
      oneLineError(await runCli(['os', 'configure', image, '--config', file('nope.json')]), 2, /nope\.json does not exist\.$/);
      oneLineError(await runCli(['os', 'configure', image, '--ssh-key', file('nope.pub')]), 2, /nope\.pub does not exist\.$/);
      oneLineError(await runCli(['config', 'read', '--drive', file('nope.img')]), 2, /nope\.img does not exist/);
    });

    it('--dev on a production image version, and a bad hostname or WiFi key', async () => {
      oneLineError(await runCli(['os', 'configure', image, '--dev', '--version', '6.0.13.prod']), 2, /--dev cannot configure a production balenaOS image/);
      oneLineError(await runCli(['os', 'configure', image, '--hostname', 'no_underscores']), 2, /'no_underscores' is not a valid hostname/);
      oneLineError(await runCli(['os', 'configure', image, '--config-network', 'wifi', '--config-wifi-ssid', 'x', '--config-wifi-key', 'short']), 2, /WiFi key must be 8 to 63/);
    });
  });

  it('an image without a boot partition', async () => {
    const image = file('ext-only.img');
    makeDisk(image, 'mbr', [{ sizeMiB: 8, fs: 'ext4' }]);
    const before = sha(image);
    oneLineError(await runCli(['os', 'configure', image, '--device-type', 'intel-nuc']), 2, /^Error: .*ext-only\.img has no FAT boot partition \(1 MBR partition, none of them FAT\)\. Is it a balenaOS image or drive\?$/);
    assert.equal(sha(image), before);
  });

  it('a full boot partition: says how much is free and needed, writes nothing, stays consistent', async () => {
    const image = file('full.img');
    makeFatImage(image, { fat: 12, sizeMiB: 1, label: 'resin-boot' });
    const space = Number(/(\d[\d ]*) bytes free/.exec(run('mdir', ['-i', image, '::/']))?.[1]?.replace(/ /g, ''));
    mwrite(image, 0, 'filler.bin', Buffer.alloc(space - 512), tmp.dir);
    const before = sha(image);
    const key = file('big.pub');
    writeFileSync(key, Array.from({ length: 20 }, (_, i) => `ssh-ed25519 ${'A'.repeat(60)}${i} k${i}`).join('\n'));
    const r = await runCli(['os', 'configure', image, '--device-type', 'intel-nuc', '--ssh-key', key]);
    oneLineError(r, 1, /^Error: the boot partition is full: \d+ bytes free, \d+ needed\. Remove files from it, or use a smaller config\.$/);
    const [, free, needed] = /full: (\d+) bytes free, (\d+) needed/.exec(r.stderr) ?? [];
    assert.ok(Number(needed) > Number(free), r.stderr);
    assert.equal(sha(image), before);
    assertClean(image, { offset: 0, size: readFileSync(image).length });
  });
});

/**
 * The rules `config write` and `os configure` keep: a value of another type is not replaced (a
 * field of known type stored as another type is repaired, with a warning), the WiFi file reads
 * back (with GLib) exactly as typed, and a drive that is mounted, or whose mounts cannot be told,
 * is not written. Each refusal leaves the image byte for byte as it was.
 */
describe('config write / os configure rules (the binary)', function () {
  this.timeout(60_000);
  const tmp = tempDir('skiff-os-rules-');
  const loops: string[] = [];
  const mounts: string[] = [];
  after(() => {
    for (const [cmd, args] of [...mounts.map((m) => ['umount', [m]] as const), ...loops.map((d) => ['losetup', ['-d', d]] as const)]) {
      try {
        run(cmd, [...args]);
      } catch {
        // already gone
      }
    }
    tmp.remove();
  });
  const file = (name: string) => path.join(tmp.dir, name);

  /** A balenaOS-like image: FAT32 resin-boot holding config.json, then an ext4 partition. */
  function image(name: string, config: Record<string, unknown>): { image: string; boot: { offset: number; size: number } } {
    const img = file(name);
    const [boot] = makeDisk(img, 'mbr', [{ sizeMiB: 40, fs: { fat: 32, label: 'resin-boot' } }, { sizeMiB: 4, fs: 'ext4' }]);
    if (!boot) throw new Error('no boot partition made');
    mwrite(img, boot.offset, 'config.json', JSON.stringify(config), tmp.dir);
    mwrite(img, boot.offset, 'device-type.json', '{"slug":"raspberrypi4-64"}', tmp.dir);
    return { image: img, boot };
  }

  it('config write refuses to replace a value of another type, at any depth; the image is byte-identical', async () => {
    const { image: img } = image('types.img', { hostname: 'kiosk', listenPort: '48484', os: { sshKeys: ['ssh-ed25519 AAAA k'], network: { connectivity: 'off' } } });
    const before = sha(img);
    const cases: Array<[string, string, RegExp]> = [
      ['hostname.sub', 'x', /^Error: cannot set hostname\.sub: hostname holds a string, not an object\. /],
      ['os.network.connectivity.interval', '300', /^Error: cannot set os\.network\.connectivity\.interval: os\.network\.connectivity holds a string, not an object\. /],
      ['os.sshKeys.0', 'x', /^Error: cannot set os\.sshKeys\.0: os\.sshKeys holds a list, not an object\. /],
      ['os', 'x', /^Error: cannot set os: it holds an object, which a string would replace\. /],
      // A repair of the string listenPort still needs a number.
      ['listenPort', 'http', /^Error: listenPort is a number, not 'http'\.$/],
    ];
    for (const [key, value, pattern] of cases) {
      oneLineError(await runCli(['config', 'write', '--drive', img, key, value]), 2, pattern);
      assert.equal(sha(img), before, `${key}: the image is untouched`);
    }
    // The same type is still written.
    const ok = await runCli(['config', 'write', '--drive', img, 'hostname', 'kiosk-2']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse((await runCli(['config', 'read', '-d', img])).stdout) as { hostname: string }).hostname, 'kiosk-2');
  });

  it('config inject writes known fields of the wrong type as balena-cli does, warning of each; config write repairs them', async () => {
    const { image: img, boot } = image('repair.img', { deviceType: 'raspberrypi4-64' });
    // What balena-cli's config write leaves behind: every value a string.
    const injected = file('mistyped.json');
    writeFileSync(injected, '{"listenPort":"48484","persistentLogging":"false","os":{"sshKeys":"notalist"}}');
    const inject = await runCli(['config', 'inject', injected, '--drive', img]);
    assert.equal(inject.code, 0, inject.stderr);
    assert.deepEqual(inject.stderr.trim().split('\n'), [
      "Warning: persistentLogging holds a string, and balenaOS reads it as a boolean: 'skiff config write persistentLogging VALUE' repairs it",
      "Warning: listenPort holds a string, and balenaOS reads it as a number: 'skiff config write listenPort VALUE' repairs it",
      "Warning: os.sshKeys holds a string, and balenaOS reads it as a list: 'skiff config write os.sshKeys VALUE' repairs it",
      `Wrote ${injected} to ${img} as config.json`,
    ]);
    assert.deepEqual(JSON.parse(mread(img, boot.offset, 'config.json')), { listenPort: '48484', persistentLogging: 'false', os: { sshKeys: 'notalist' } });

    const port = await runCli(['config', 'write', '--drive', img, 'listenPort', '48485']);
    assert.equal(port.code, 0, port.stderr);
    assert.equal(port.stderr, `Warning: listenPort held a string; now the number balenaOS reads\nSet listenPort in ${img}\n`);
    const logging = await runCli(['config', 'write', '--drive', img, 'persistentLogging', 'true', '--json']);
    assert.equal(logging.code, 0, logging.stderr);
    assert.equal(logging.stderr, '');
    const doc = JSON.parse(logging.stdout) as { status: string; result: Record<string, unknown>; warnings: string[] };
    assert.deepEqual([doc.status, doc.warnings], ['ok', ['persistentLogging held a string; now the boolean balenaOS reads']]);
    assert.equal(doc.result.persistentLogging, true);
    // Still refused, the image as it was: a key under the mistyped string.
    const before = sha(img);
    oneLineError(await runCli(['config', 'write', '--drive', img, 'os.sshKeys.0', 'x']), 2, /^Error: cannot set os\.sshKeys\.0: os\.sshKeys holds a string, not an object\. /);
    assert.equal(sha(img), before);
    const keys = await runCli(['config', 'write', '--drive', img, 'os.sshKeys', 'ssh-ed25519 AAAA k']);
    assert.equal(keys.code, 0, keys.stderr);
    assert.match(keys.stderr, /^Warning: os\.sshKeys held a string; now the list balenaOS reads$/m);

    const read = await runCli(['config', 'read', '--drive', img, '--json']);
    assert.equal(read.code, 0, read.stderr);
    const config = (JSON.parse(read.stdout) as { result: Record<string, unknown> }).result;
    assert.deepEqual(config, { listenPort: 48485, persistentLogging: true, os: { sshKeys: ['ssh-ed25519 AAAA k'] } });
    assert.equal(typeof config.listenPort, 'number');
    // A written again, right-typed field says nothing more.
    const again = await runCli(['config', 'write', '--drive', img, 'listenPort', '48486', '--json']);
    assert.deepEqual((JSON.parse(again.stdout) as { warnings: string[] }).warnings, []);
    assertClean(img, boot);
  });

  it('os configure writes the WiFi file so that GLib reads back the SSID and key exactly as typed', async () => {
    const { image: img, boot } = image('wifi.img', { deviceType: 'raspberrypi4-64' });
    const ssid = 'C:\\new\\stuff';
    const key = ' C:\\new\\stuff; #1 ';
    const r = await runCli(['os', 'configure', img, '--config-network', 'wifi', '--config-wifi-ssid', ssid, '--config-wifi-key', key]);
    assert.equal(r.code, 0, r.stderr);
    const [read] = readWithGlib([mread(img, boot.offset, 'system-connections/resin-wifi')]);
    assert.deepEqual(read, { ssid, psk: key });
    // A key NetworkManager cannot take is refused before anything is written.
    const before = sha(img);
    oneLineError(await runCli(['os', 'configure', img, '--config-wifi-ssid', ssid, '--config-wifi-key', 'pass\nword1']), 2, /^Error: the WiFi key holds a control character/);
    oneLineError(await runCli(['os', 'configure', img, '--config-wifi-ssid', 'x'.repeat(33)]), 2, /^Error: the WiFi SSID must be 1 to 32 bytes, not 33\./);
    assert.equal(sha(img), before);
  });

  it('a mounted drive is refused naming the mount; one whose mounts cannot be told is refused too', async () => {
    // The kernel here mounts ext4 but not vfat, and makes no partition nodes for loop devices: a
    // whole loop device holding ext4 stands for a mounted card.
    const disk = file('mounted.img');
    run('truncate', ['-s', '16M', disk]);
    run('mke2fs', ['-q', '-F', '-t', 'ext4', disk]);
    const dev = run('losetup', ['-f', '--show', disk]).trim();
    loops.push(dev);
    const point = file('mnt');
    mkdirSync(point);
    run('mount', [dev, point]);
    mounts.push(point);
    // (No hash here: ext4 itself updates its superblock while mounted.)
    oneLineError(await runCli(['config', 'write', '--drive', dev, 'hostname', 'x']), 1, new RegExp(`^Error: ${dev} is mounted at ${point}\\. Unmount it first`));
    // Even with a mount table that shows nothing, the kernel's exclusive open refuses it.
    const emptyTable = file('empty-mountinfo');
    writeFileSync(emptyTable, '');
    await assert.rejects(
      withBootPartition(dev, 'write', () => Promise.resolve(), { mountinfo: emptyTable, sysBlock: '/sys/dev/block' }),
      (e: unknown) => e instanceof SkiffError && new RegExp(`^${dev} is busy \\(mounted or in use\\)\\. Unmount its partitions first\\.$`).test(e.toLine()),
    );
    run('umount', [point]);
    mounts.pop();

    // An unmounted drive whose mount table cannot be read: refused, not written.
    const { image: img } = image('untold.img', { hostname: 'a' });
    const card = run('losetup', ['-f', '--show', img]).trim();
    loops.push(card);
    const imageBefore = sha(img);
    await assert.rejects(
      withBootPartition(card, 'write', () => Promise.resolve(), { mountinfo: file('no-such-mountinfo'), sysBlock: '/sys/dev/block' }),
      (e: unknown) => e instanceof SkiffError && new RegExp(`^cannot tell whether ${card} is mounted \\(.*no-such-mountinfo: ENOENT\\), so it is left untouched\\.`).test(e.toLine()),
    );
    await assert.rejects(
      withBootPartition(card, 'write', () => Promise.resolve(), { mountinfo: '/proc/self/mountinfo', sysBlock: file('no-sys') }),
      /cannot tell whether .* is mounted \(.*no-sys: ENOENT\)/,
    );
    assert.equal(sha(img), imageBefore);
    // With the real tables it is written.
    assert.equal((await runCli(['config', 'write', '--drive', card, 'hostname', 'b'])).code, 0);
  });
});
