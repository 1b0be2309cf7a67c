// Tunnels through the server: throughput, round-trip latency, `device ssh --command` start-up, and
// the agent's memory with 50 open tunnel streams.
//
//   node bench/tunnel.mjs [--runs N] [--mib N] [--round-trips N] [--database sqlite|postgres|URL]
//
// One `skiff server`, one `skiff agent` in cloud mode on this machine (the device's host is this
// machine), running a release with one service `web` (busybox). Services on the device host, in a
// child process of their own: a sink (counts the bytes of a connection and answers the count at its
// end) and an echo server. `skiff device tunnel UUID -p …` forwards two local ports to them.
// 1. Throughput: --mib MiB (default 1024) sent to the sink, MB/s: directly over loopback (the
//    peer), through the tunnel (CLI → server → agent → service), and through `ssh -L` over loopback
//    when /usr/sbin/sshd exists (a throw-away sshd on a free port, key auth). Medians of --runs.
// 2. Latency: --round-trips 64-byte messages echoed one at a time; median and p99 per path, and
//    the tunnel's added p99 over the direct one. Goal: at least 50% of the direct throughput, p99
//    added latency under 5 ms.
// 3. `skiff device ssh UUID web --command true`: seconds from start to exit, median of --runs after
//    a warm-up. Goal: under 0.6 s.
// 4. Memory: the agent's RSS idle (median of 5 samples a second apart), then with 50 tunnel
//    connections open, each having echoed 64 KiB (max of 5 samples). Goal: under idle + 15 MB.
//
// Needs busybox:1.36 on the engine (made by scripts/demo-base-images.mjs when missing). Cleans up
// its processes, containers, temp dirs and the images it built. Exits 1 when it cannot run.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SKIFF_BIN, bench, fmtRatio, log, median, parseBenchArgs, printTable } from './lib.mjs';
import { ensureBaseImage, freePort, percentile, sleep, waitFor, withCleanup } from './agent-lib.mjs';
import { api, checkDatabaseOption, procSample, startCloudDevice } from './cloud-lib.mjs';

const opts = parseBenchArgs({
  runs: { default: 5, help: 'measured runs of the throughput and ssh figures' },
  options: {
    mib: { default: 1024, min: 1, help: 'MiB sent per throughput run' },
    'round-trips': { default: 2000, min: 10, help: '64-byte echo round trips per latency run' },
    database: { type: 'string', default: 'sqlite', check: checkDatabaseOption, help: 'sqlite, postgres (a fresh database) or a postgres:// URL' },
  },
});

const SERVICES_JS = `
const net = require('node:net');
const sink = net.createServer((s) => { let n = 0; s.on('data', (d) => { n += d.length; }); s.on('end', () => s.end(String(n))); });
const echo = net.createServer((s) => s.pipe(s));
sink.listen(0, '127.0.0.1', () => echo.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ sink: sink.address().port, echo: echo.address().port }) + '\\n')));
`;

/** Sends `bytes` to host:port and resolves with seconds until the sink answered the count. */
function sendTo(port, bytes) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let answer = '';
    let t0;
    socket.on('data', (d) => (answer += d));
    socket.on('end', () => {
      if (Number(answer) !== bytes) reject(new Error(`the sink counted ${answer} bytes, not ${bytes}`));
      else resolve(Number(process.hrtime.bigint() - t0) / 1e9);
    });
    socket.on('error', reject);
    socket.once('connect', () => {
      t0 = process.hrtime.bigint();
      let sent = 0;
      const pump = () => {
        while (sent < bytes) {
          const n = Math.min(chunk.length, bytes - sent);
          sent += n;
          if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void socket.once('drain', pump);
        }
        socket.end();
      };
      pump();
    });
  });
}

/** `count` 64-byte round trips through the echo at port; resolves with their times in ms. */
function roundTrips(port, count) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    const message = Buffer.alloc(64, 0x62);
    const times = [];
    let got = 0;
    let t0;
    socket.on('error', reject);
    const send = () => {
      got = 0;
      t0 = process.hrtime.bigint();
      socket.write(message);
    };
    socket.on('data', (d) => {
      got += d.length;
      if (got < message.length) return;
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (times.length === count) {
        socket.end();
        resolve(times);
      } else send();
    });
    socket.once('connect', send);
  });
}

/** A throw-away sshd on a free loopback port with a key for us; undefined without /usr/sbin/sshd. */
async function startSshd(dir, onCleanup) {
  if (!existsSync('/usr/sbin/sshd')) return undefined;
  const port = await freePort();
  const key = join(dir, 'id'); const hostKey = join(dir, 'host');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const auth = join(dir, 'authorized_keys');
  writeFileSync(auth, spawnSync('cat', [`${key}.pub`]).stdout);
  chmodSync(auth, 0o600);
  mkdirSync('/run/sshd', { recursive: true });
  const config = join(dir, 'sshd_config');
  writeFileSync(config, `Port ${port}\nListenAddress 127.0.0.1\nHostKey ${hostKey}\nAuthorizedKeysFile ${auth}\nPasswordAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nAllowTcpForwarding yes\nPidFile ${join(dir, 'sshd.pid')}\nUsePAM no\n`);
  const sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  onCleanup(() => sshd.kill('SIGTERM'));
  await waitFor(() => new Promise((r) => { const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); }), { timeoutMs: 10_000, what: 'sshd to listen' });
  return { port, key };
}

async function forwardWithSsh(sshd, localPort, remotePort, onCleanup) {
  const ssh = spawn('ssh', ['-N', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-i', sshd.key, '-p', String(sshd.port),
    '-L', `127.0.0.1:${localPort}:127.0.0.1:${remotePort}`, 'root@127.0.0.1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  onCleanup(() => ssh.kill('SIGTERM'));
  await waitFor(() => new Promise((r) => { const s = net.connect(localPort, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); }), { timeoutMs: 10_000, what: 'ssh -L to listen' });
}

await withCleanup(async (onCleanup) => {
  ensureBaseImage();
  const { server, token, env, skiff, fleet, project, agent } = await startCloudDevice(onCleanup, { name: 'tunnel', database: opts.database });
  mkdirSync(join(project, 'web'), { recursive: true });
  writeFileSync(join(project, 'docker-compose.yml'), 'services:\n  web:\n    build: ./web\n    command: ["sh", "-c", "trap \'exit 0\' TERM; while :; do sleep 1 & wait $$!; done"]\n');
  writeFileSync(join(project, 'web', 'Dockerfile'), 'FROM busybox:1.36\nLABEL io.skiff.bench=tunnel\n');
  await skiff(['deploy', fleet, '--build', '--source', project], 'deploy');
  await waitFor(async () => {
    const d = await api(server.url, token, 'GET', `/devices/${agent.uuid}`).catch(() => undefined);
    return d?.runningRelease && d.updateStatus === 'done' && d.services?.some((s) => s.name === 'web' && s.status === 'Running');
  }, { timeoutMs: 120_000, what: 'the release to run' });

  const services = spawn(process.execPath, ['-e', SERVICES_JS], { stdio: ['ignore', 'pipe', 'inherit'] });
  onCleanup(() => services.kill('SIGTERM'));
  const ports = await new Promise((resolve) => services.stdout.once('data', (d) => resolve(JSON.parse(String(d)))));
  const [tunnelSink, tunnelEcho] = [await freePort(), await freePort()];
  const tunnel = spawn(process.execPath, [SKIFF_BIN, 'device', 'tunnel', agent.uuid, '-p', `${tunnelSink}:${ports.sink}`, '-p', `${tunnelEcho}:${ports.echo}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let tunnelOut = '';
  tunnel.stdout.on('data', (d) => (tunnelOut += d));
  tunnel.stderr.on('data', (d) => (tunnelOut += d));
  onCleanup(() => tunnel.kill('SIGINT'));
  await waitFor(() => new Promise((r) => { const s = net.connect(tunnelEcho, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); }), { timeoutMs: 20_000, what: `the tunnel to listen (${tunnelOut.trim()})` });

  const sshDir = mkdtempSync(join(tmpdir(), 'skiff-bench-sshd-'));
  onCleanup(() => rmSync(sshDir, { recursive: true, force: true }));
  const sshd = await startSshd(sshDir, onCleanup);
  const [sshSink, sshEcho] = [await freePort(), await freePort()];
  if (sshd) {
    await forwardWithSsh(sshd, sshSink, ports.sink, onCleanup);
    await forwardWithSsh(sshd, sshEcho, ports.echo, onCleanup);
  } else log('no /usr/sbin/sshd: the ssh -L column stays empty (apt-get install openssh-server)');

  // 1. throughput
  const bytes = opts.mib * 1024 * 1024;
  const paths = [['direct', ports.sink, ports.echo], ['tunnel', tunnelSink, tunnelEcho], ...(sshd ? [['ssh -L', sshSink, sshEcho]] : [])];
  const mbps = {};
  for (const [name, sinkPort] of paths) {
    await sendTo(sinkPort, Math.min(bytes, 64 * 1024 * 1024)); // warm-up
    const runs = [];
    for (let i = 0; i < opts.runs; i++) runs.push((bytes / 1e6) / (await sendTo(sinkPort, bytes)));
    mbps[name] = median(runs);
    log(`${name}: ${runs.map((r) => r.toFixed(0)).join(' ')} MB/s`);
  }
  // 2. latency
  const lat = {};
  for (const [name, , echoPort] of paths) {
    await roundTrips(echoPort, 100);
    const times = await roundTrips(echoPort, opts.roundTrips);
    lat[name] = { median: median(times), p99: percentile(times, 99) };
  }
  // 3. device ssh --command true
  const sshRun = await bench('device ssh --command true', process.execPath, [SKIFF_BIN, 'device', 'ssh', agent.uuid, 'web', '--command', 'true'], { runs: opts.runs, env });
  // 4. memory
  const idle = [];
  for (let i = 0; i < 5; i++) { await sleep(1000); idle.push(procSample(agent.pid)?.rssMB ?? Number.NaN); }
  const held = await Promise.all(Array.from({ length: 50 }, () => new Promise((resolve, reject) => {
    const s = net.connect(tunnelEcho, '127.0.0.1');
    let got = 0;
    s.on('data', (d) => { got += d.length; if (got >= 64 * 1024) resolve(s); });
    s.on('error', reject);
    s.once('connect', () => s.write(Buffer.alloc(64 * 1024, 1)));
  })));
  const open = [];
  for (let i = 0; i < 5; i++) { await sleep(1000); open.push(procSample(agent.pid)?.rssMB ?? Number.NaN); }
  for (const s of held) s.destroy();

  const row = (name) => [name, `${mbps[name]?.toFixed(0) ?? '-'} MB/s`, mbps[name] ? fmtRatio(mbps[name] / mbps.direct) : '-', lat[name] ? `${lat[name].median.toFixed(3)} / ${lat[name].p99.toFixed(3)} ms` : '-'];
  printTable(['path', 'throughput', 'vs direct', 'round trip median / p99'], paths.map(([n]) => row(n)),
    `Tunnel (${server.database === 'sqlite' ? 'SQLite' : 'PostgreSQL'}): ${opts.mib} MiB per run, ${opts.roundTrips} round trips of 64 bytes, medians of ${opts.runs}`);
  const addedP99 = lat.tunnel.p99 - lat.direct.p99;
  const idleRss = median(idle);
  const openRss = Math.max(...open);
  printTable(['measure', 'value', 'goal'], [
    ['tunnel throughput vs direct', fmtRatio(mbps.tunnel / mbps.direct), `>= 0.50x ${mbps.tunnel / mbps.direct >= 0.5 ? 'met' : 'MISSED'}`],
    ['tunnel p99 added latency', `${addedP99.toFixed(2)} ms`, `< 5 ms ${addedP99 < 5 ? 'met' : 'MISSED'}`],
    ['device ssh UUID web --command true', `${sshRun.wall.toFixed(3)} s`, `< 0.6 s ${sshRun.wall < 0.6 ? 'met' : 'MISSED'}`],
    ['agent RSS idle (median)', `${idleRss.toFixed(1)} MB`, ''],
    ['agent RSS with 50 tunnel streams (max)', `${openRss.toFixed(1)} MB`, `< idle + 15 MB ${openRss < idleRss + 15 ? 'met' : 'MISSED'}`],
  ], 'Tunnel goals');
});
