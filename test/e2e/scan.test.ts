/**
 * `skiff scan` as a user runs it. The devices and the scanning computer sit in network namespaces
 * of their own, joined by veth pairs: a LAN where multicast works and nothing else on this machine
 * (other test agents, avahi) answers. The scanner's namespace has two links, one to an agent and
 * one to a stand-in balenaOS device, and no multicast route: each query must go out on each link.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import process from 'node:process';
import { ROOT, runCli } from '../support/cli.js';
import { cleanupAgent, startAgent, type TestAgent } from '../support/agent.js';
import { waitFor } from '../support/wait.js';
import { Netns, link, netnsUnavailable } from '../support/netns.js';
import type { FoundDevice } from '../../src/lib/discovery/scan.js';

const ID = `sk${process.pid}`;

function devices(stdout: string): FoundDevice[] {
  return (JSON.parse(stdout) as { result: FoundDevice[] }).result;
}

describe('scan', function () {
  describe('flags', () => {
    for (const bad of ['0', '-1', 'soon', '']) {
      it(`refuses --timeout '${bad}' (usage, exit 2)`, async () => {
        const r = await runCli(['scan', `--timeout=${bad}`]);
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stderr.trim(), `Error: --timeout '${bad}' is not a number of seconds between 0 and 3600. E.g. --timeout 10.`);
        const json = await runCli(['scan', '-t', bad === '' ? ' ' : bad, '--json']);
        assert.equal(json.code, 2);
        assert.equal((JSON.parse(json.stdout) as { error: { code: string } }).error.code, 'usage');
      });
    }
  });

  describe('on a LAN of network namespaces', function () {
    const namespaces: Netns[] = [];
    let scanner: Netns;
    let empty: Netns;
    let agent: TestAgent | undefined;
    let silentAgent: TestAgent | undefined;
    let balena: ChildProcess | undefined;

    before(async function () {
      const why = netnsUnavailable();
      if (why) throw new Error(`cannot test scan: ${why}`);
      const ns = (suffix: string) => {
        const n = Netns.create(`${ID}${suffix}`);
        namespaces.push(n);
        return n;
      };
      scanner = ns('c');
      const device = ns('d');
      const balenaDevice = ns('b');
      empty = ns('e');
      const quiet = ns('q');
      await link({ ns: device, dev: `${ID}d0`, cidr: '10.213.0.1/24' }, { ns: scanner, dev: `${ID}c0`, cidr: '10.213.0.2/24' });
      await link({ ns: balenaDevice, dev: `${ID}b0`, cidr: '10.214.0.1/24' }, { ns: scanner, dev: `${ID}c1`, cidr: '10.214.0.2/24' });
      await link({ ns: quiet, dev: `${ID}q0`, cidr: '10.215.0.1/24' }, { ns: empty, dev: `${ID}e0`, cidr: '10.215.0.2/24' });

      agent = await startAgent({ wrap: device.wrap, listenAddress: '0.0.0.0', args: ['--device-type', 'raspberrypi4-64'] });
      silentAgent = await startAgent({ wrap: quiet.wrap, listenAddress: '0.0.0.0', args: ['--no-advertise'] });
      // balenaOS cannot run here: a responder that advertises exactly what balenaOS's avahi does
      // (see test/support/balena-os-responder.ts) stands in for the device.
      balena = spawn(balenaDevice.wrap[0]!, [...balenaDevice.wrap.slice(1), process.execPath, '--import', 'tsx', path.join(ROOT, 'test/support/balena-os-responder.ts'), '5e1b2c3', '10.214.0.1'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        balena!.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve(); });
        balena!.once('exit', (code) => reject(new Error(`the balenaOS responder exited (${code})`)));
      });
    });

    after(async () => {
      balena?.kill('SIGTERM');
      for (const a of [agent, silentAgent]) {
        if (!a) continue;
        await a.kill('SIGKILL').catch(() => {});
        await cleanupAgent(a.uuid);
      }
      for (const n of namespaces) n.delete();
    });

    it('finds the agent (uuid, device type, version, address) and the balenaOS device', async () => {
      const r = await runCli(['scan', '--timeout', '2', '--json'], { wrap: scanner.wrap });
      assert.equal(r.code, 0, r.stderr);
      const found = devices(r.stdout);
      assert.deepEqual(found, [
        {
          address: '10.213.0.1', hostname: `${agent!.uuid.slice(0, 7)}.local`, name: `skiff-${agent!.uuid.slice(0, 7)}`, kind: 'agent',
          uuid: agent!.uuid, deviceType: 'raspberrypi4-64', arch: 'aarch64', version: '17.0.0', apiPort: agent!.port, api: 'open',
        },
        {
          // No device API answers (a production image): listed with what mDNS says.
          address: '10.214.0.1', hostname: '5e1b2c3.local', name: '5e1b2c3', kind: 'balenaOS',
          uuid: null, deviceType: null, arch: null, version: null, apiPort: 48484, api: 'unreachable',
        },
      ]);
    });

    it('prints a table for people', async () => {
      const r = await runCli(['scan', '-t', '1.5'], { wrap: scanner.wrap });
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.match(lines[0] ?? '', /^ADDRESS\s+HOSTNAME\s+DEVICE TYPE\s+ARCH\s+VERSION\s+KIND$/);
      assert.match(lines[1] ?? '', new RegExp(`^10\\.213\\.0\\.1\\s+${agent!.uuid.slice(0, 7)}\\.local\\s+raspberrypi4-64\\s+aarch64\\s+17\\.0\\.0\\s+agent$`));
      assert.match(lines[2] ?? '', /^10\.214\.0\.1\s+5e1b2c3\.local\s+-\s+-\s+-\s+balenaOS$/);
    });

    it('nothing found (the one agent there runs with --no-advertise): says so and what to check, exit 0, an empty JSON list', async () => {
      const r = await runCli(['scan', '-t', '1'], { wrap: empty.wrap });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /No devices found\. Check that the device is on the same network .* multicast/);
      const json = await runCli(['scan', '-t', '1', '--json'], { wrap: empty.wrap });
      assert.equal(json.code, 0, json.stderr);
      assert.deepEqual(devices(json.stdout), []);
    });

    it('an agent that stops says goodbye: a scan running meanwhile drops it', async () => {
      // Watch the scanner's link, so the agent stops only once it has answered this scan.
      const host = `${agent!.uuid.slice(0, 7)}.local`;
      const watch = spawn(scanner.wrap[0]!, [...scanner.wrap.slice(1), process.execPath, '--import', 'tsx', path.join(ROOT, 'test/support/mdns-watch.ts'), '10.213.0.2', host], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      let watched = '';
      watch.stdout!.on('data', (d: Buffer) => (watched += d.toString()));
      try {
        await waitFor(() => watched.includes('ready'), 'the mDNS watcher to listen', 10_000);
        const scan = runCli(['scan', '-t', '3', '--json'], { wrap: scanner.wrap });
        await waitFor(() => watched.includes(`seen ${host}`), 'the agent to answer the scan', 3000);
        await agent!.kill('SIGTERM');
        const r = await scan;
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(devices(r.stdout).map((d) => d.kind), ['balenaOS']);
      } finally {
        watch.kill('SIGTERM');
      }
    });
  });
});
