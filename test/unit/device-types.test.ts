import assert from 'node:assert/strict';
import { DEVICE_TYPES, archFromDocker, findDeviceType, parseArch, platformString, resolveTarget } from '../../src/lib/device-types/device-types.js';
import { closest, editDistance } from '../../src/lib/text/suggest.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

describe('device types', () => {
  it('knows at least 15 boards, each with a unique slug', () => {
    assert.ok(DEVICE_TYPES.length >= 15);
    assert.equal(new Set(DEVICE_TYPES.map((d) => d.slug)).size, DEVICE_TYPES.length);
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
