import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { ALL_DEVICE_TYPES, DEVICE_TYPES, archFromDocker, findDeviceType, parseArch, platformString, resolveTarget } from '../../src/lib/device-types/device-types.js';
import { closest, editDistance } from '../../src/lib/text/suggest.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

describe('device types', () => {
  it('lists every device type balena supports today: 56 (47 aarch64, 4 amd64, 4 armv7hf, 1 rpi)', () => {
    const count = (arch: string) => DEVICE_TYPES.filter((d) => d.arch === arch).length;
    assert.equal(DEVICE_TYPES.length, 56);
    assert.deepEqual({ aarch64: count('aarch64'), amd64: count('amd64'), armv7hf: count('armv7hf'), rpi: count('rpi') }, { aarch64: 47, amd64: 4, armv7hf: 4, rpi: 1 });
    assert.ok(DEVICE_TYPES.every((d) => !d.discontinued));
  });

  it('lists the common boards first (lists and the build-config prompt), the rest by slug', () => {
    assert.deepEqual(DEVICE_TYPES.slice(0, 5).map((d) => d.slug), ['raspberry-pi', 'raspberry-pi2', 'raspberrypi3', 'raspberrypi3-64', 'raspberrypi4-64']);
    const rest = DEVICE_TYPES.slice(16).map((d) => d.slug);
    assert.deepEqual(rest, [...rest].sort());
    // The sort compares code points (no ICU paged into the agent): the same order as the collation while slugs stay [a-z0-9-].
    assert.ok(DEVICE_TYPES.every((d) => /^[a-z0-9-]+$/.test(d.slug)));
    assert.deepEqual(rest, [...rest].sort((a, b) => a.localeCompare(b)));
  });

  it('gives each slug and alias to one device type only', () => {
    assert.equal(new Set(ALL_DEVICE_TYPES.map((d) => d.slug)).size, ALL_DEVICE_TYPES.length);
    const names = ALL_DEVICE_TYPES.flatMap((d) => [d.slug, ...(d.aliases ?? [])]);
    assert.deepEqual(names.filter((n, i) => names.indexOf(n) !== i), []);
  });

  it('still builds for discontinued device types, marked as such, and keeps them out of the supported list', () => {
    for (const slug of ['fincm3', 'qemux86-64', 'intel-edison', 'orange-pi-zero', 'beaglebone-green', 'raspberrypi400-64']) {
      const t = resolveTarget({ deviceType: slug });
      assert.equal(t.deviceType.slug, slug);
      assert.equal(t.deviceType.discontinued, true);
      assert.ok(!DEVICE_TYPES.some((d) => d.slug === slug));
    }
  });

  it('keeps the source and date of the table in its file', () => {
    const text = readFileSync(new URL('../../src/lib/device-types/balena-device-types.ts', import.meta.url), 'utf8');
    assert.match(text, /balena-io\/contracts, contracts\/hw\.device-type\/<slug>\/contract\.json/);
    assert.match(text, /read 2026-11-30/);
  });

  const cases: Array<[string, string, string]> = [
    ['raspberry-pi', 'rpi', 'linux/arm/v6'],
    ['raspberry-pi2', 'armv7hf', 'linux/arm/v7'],
    ['raspberrypi3', 'armv7hf', 'linux/arm/v7'],
    ['raspberrypi3-64', 'aarch64', 'linux/arm64'],
    ['raspberrypi4-64', 'aarch64', 'linux/arm64'],
    ['raspberrypi5', 'aarch64', 'linux/arm64'],
    ['raspberrypi0-2w-64', 'aarch64', 'linux/arm64'],
    ['raspberrypicm4-ioboard', 'aarch64', 'linux/arm64'],
    ['beaglebone-black', 'armv7hf', 'linux/arm/v7'],
    ['jetson-nano', 'aarch64', 'linux/arm64'],
    ['jetson-orin-nano-devkit-nvme', 'aarch64', 'linux/arm64'],
    ['intel-nuc', 'amd64', 'linux/amd64'],
    ['genericx86-64-ext', 'amd64', 'linux/amd64'],
    ['generic-aarch64', 'aarch64', 'linux/arm64'],
    ['qemux86-64', 'amd64', 'linux/amd64'],
    ['qemux86', 'i386', 'linux/386'],
    // Fleets of these were refused before the table covered every current balena device type.
    ['jetson-xavier', 'aarch64', 'linux/arm64'],
    ['jetson-xavier-nx-devkit', 'aarch64', 'linux/arm64'],
    ['jetson-xavier-nx-devkit-emmc', 'aarch64', 'linux/arm64'],
    ['imx8mm-var-dart', 'aarch64', 'linux/arm64'],
    ['imx8m-var-dart', 'aarch64', 'linux/arm64'],
    ['iot-gate-imx8', 'aarch64', 'linux/arm64'],
    ['iot-gate-imx8plus', 'aarch64', 'linux/arm64'],
    ['imx8mm-lpddr4-evk', 'aarch64', 'linux/arm64'],
    ['eg5120-imx8mp', 'aarch64', 'linux/arm64'],
    ['var-som-mx6', 'armv7hf', 'linux/arm/v7'],
    ['generic-amd64', 'amd64', 'linux/amd64'],
    ['up-board', 'amd64', 'linux/amd64'],
  ];
  for (const [slug, arch, platform] of cases) {
    it(`${slug} is ${arch} (${platform})`, () => {
      const t = resolveTarget({ deviceType: slug });
      assert.equal(t.arch, arch);
      assert.equal(platformString(t.platform), platform);
      assert.equal(t.deviceType.slug, slug);
    });
  }

  it('accepts aliases and is case-insensitive', () => {
    assert.equal(findDeviceType('RPI4')?.slug, 'raspberrypi4-64');
    assert.equal(findDeviceType('nuc')?.slug, 'intel-nuc');
  });

  it('parses architecture names people use', () => {
    assert.equal(parseArch('arm64'), 'aarch64');
    assert.equal(parseArch('x86_64'), 'amd64');
    assert.equal(parseArch('armhf'), 'armv7hf');
    assert.equal(parseArch('sparc'), undefined);
  });

  it('picks a default device type for a bare --arch', () => {
    assert.equal(resolveTarget({ arch: 'aarch64' }).deviceType.slug, 'generic-aarch64');
    assert.equal(resolveTarget({ arch: 'armv7hf' }).arch, 'armv7hf');
  });

  it('suggests the closest device type on a typo', () => {
    assert.throws(() => resolveTarget({ deviceType: 'raspberrypi4-46' }), (err: SkiffError) => {
      assert.equal(err.code, 'usage');
      assert.match(err.toLine(), /unknown device type 'raspberrypi4-46'.*did you mean 'raspberrypi4-64'/i);
      return true;
    });
  });

  it('suggests an architecture on a typo, and lists them when nothing is close', () => {
    assert.throws(() => resolveTarget({ arch: 'aarch46' }), (err: SkiffError) => /did you mean 'aarch64'/i.test(err.toLine()));
    assert.throws(() => resolveTarget({ arch: 'zzzzzzzz' }), (err: SkiffError) => /known architectures: rpi, armv7hf, aarch64, amd64, i386/i.test(err.toLine()));
  });

  it('refuses an arch that disagrees with the device type', () => {
    assert.throws(() => resolveTarget({ deviceType: 'raspberrypi4-64', arch: 'amd64' }), (err: SkiffError) => {
      assert.equal(err.code, 'usage');
      assert.match(err.toLine(), /--arch amd64 does not match device type 'raspberrypi4-64', which is aarch64/);
      return true;
    });
    assert.equal(resolveTarget({ deviceType: 'raspberrypi4-64', arch: 'arm64' }).arch, 'aarch64');
  });

  it('maps engine architectures back', () => {
    assert.equal(archFromDocker('x86_64'), 'amd64');
    assert.equal(archFromDocker('arm64'), 'aarch64');
    assert.equal(archFromDocker('arm', 'v6'), 'rpi');
    assert.equal(archFromDocker('arm', 'v7'), 'armv7hf');
    assert.equal(archFromDocker('mips'), undefined);
  });

  it('measures edit distance and refuses far-off suggestions', () => {
    assert.equal(editDistance('kitten', 'sitting'), 3);
    assert.equal(closest('intel-nux', ['intel-nuc', 'jetson-nano']), 'intel-nuc');
    assert.equal(closest('banana', ['intel-nuc', 'jetson-nano']), undefined);
  });
});
