/**
 * Every compose setting Skiff accepts reaches the container: a real agent, `skiff push` as a user
 * runs it, and the real engine's `docker inspect` (and the container itself) as the judge. The
 * same for a target posted in balena-cli's local-mode shape, and a container-only port reached
 * from the host.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import type Docker from 'dockerode';
import { runCli } from '../support/cli.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject } from '../support/engine.js';
import { cleanupAgent, eventually, freePort, startAgent, type TestAgent } from '../support/agent.js';

const RUN = randomBytes(3).toString('hex');
const PROJECT = `svc${RUN}`;
const LOOP = "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $!; done";

/** The service that sets every key it can at once (cpu_quota, pid and userns_mode go to `other`). */
const ALL_KEYS = [
  '    mem_limit: 64m',
  '    mem_reservation: 32m',
  '    shm_size: 128m',
  '    cpus: 0.5',
  '    cpu_shares: 512',
  '    cpuset: "0"',
  '    pids_limit: 64',
  '    cgroup_parent: /skiff-e2e',
  '    sysctls: { net.core.somaxconn: 1024 }',
  '    ulimits: { nofile: { soft: 1024, hard: 2048 }, nproc: 512 }',
  '    dns: 1.1.1.1',
  '    dns_search: [example.com]',
  '    dns_opt: [ndots:2]',
  '    extra_hosts: [somehost:10.1.2.3, "other=10.1.2.4"]',
  '    read_only: true',
  '    init: true',
  '    security_opt: [no-new-privileges]',
  '    ipc: shareable',
  '    oom_score_adj: 100',
  '    oom_kill_disable: true',
  '    group_add: ["1234"]',
  '    hostname: box',
  '    domainname: example.org',
  '    mac_address: 02:42:ac:11:65:43',
  '    expose: [5000]',
  '    logging: { driver: json-file, options: { max-size: 1m } }',
  '    stop_signal: SIGINT',
  '    stop_grace_period: 3s',
  '    tty: true',
  '    stdin_open: true',
  '    cap_add: [NET_ADMIN]',
  '    cap_drop: [MKNOD]',
  '    devices: ["/dev/null:/dev/skiffnull:rwm"]',
  '    device_cgroup_rules: ["c 1:3 mr"]',
  '    runtime: runc',
  '    tmpfs: ["/run:size=1m"]',
  '    working_dir: /tmp',
  '    user: "0"',
  '    healthcheck: { test: [CMD, "true"], interval: 5s, retries: 2 }',
];

/** What the engine must report for ALL_KEYS (and for the same keys posted by balena-cli). */
function assertAllKeys(c: Docker.ContainerInspectInfo): void {
  const h = c.HostConfig as Docker.HostConfig & Record<string, unknown>;
  const cfg = c.Config as Docker.ContainerInspectInfo['Config'] & Record<string, unknown>;
  assert.equal(h.Memory, 67108864, 'mem_limit');
  assert.equal(h.MemoryReservation, 33554432, 'mem_reservation');
  assert.equal(h.ShmSize, 134217728, 'shm_size');
  assert.equal(h.NanoCpus, 500_000_000, 'cpus');
  assert.equal(h.CpuShares, 512, 'cpu_shares');
  assert.equal(h.CpusetCpus, '0', 'cpuset');
  assert.equal(h.PidsLimit, 64, 'pids_limit');
  assert.equal(h.CgroupParent, '/skiff-e2e', 'cgroup_parent');
  assert.deepEqual(h.Sysctls, { 'net.core.somaxconn': '1024' }, 'sysctls');
  assert.deepEqual(h.Ulimits, [{ Name: 'nofile', Soft: 1024, Hard: 2048 }, { Name: 'nproc', Soft: 512, Hard: 512 }], 'ulimits');
  assert.deepEqual(h.Dns, ['1.1.1.1'], 'dns');
  assert.deepEqual(h.DnsSearch, ['example.com'], 'dns_search');
  assert.deepEqual(h.DnsOptions, ['ndots:2'], 'dns_opt');
  assert.deepEqual(h.ExtraHosts, ['somehost:10.1.2.3', 'other:10.1.2.4'], 'extra_hosts');
  assert.equal(h.ReadonlyRootfs, true, 'read_only');
  assert.equal(h.Init, true, 'init');
  assert.deepEqual(h.SecurityOpt, ['no-new-privileges'], 'security_opt');
  assert.equal(h.IpcMode, 'shareable', 'ipc');
  assert.equal(h.OomScoreAdj, 100, 'oom_score_adj');
  assert.equal(h.OomKillDisable, true, 'oom_kill_disable');
  assert.deepEqual(h.GroupAdd, ['1234'], 'group_add');
  assert.deepEqual(h.LogConfig, { Type: 'json-file', Config: { 'max-size': '1m' } }, 'logging');
  assert.deepEqual(h.CapAdd, ['NET_ADMIN'], 'cap_add');
  assert.deepEqual(h.CapDrop, ['MKNOD'], 'cap_drop');
  assert.deepEqual(h.Devices, [{ PathOnHost: '/dev/null', PathInContainer: '/dev/skiffnull', CgroupPermissions: 'rwm' }], 'devices');
  assert.deepEqual(h.DeviceCgroupRules, ['c 1:3 mr'], 'device_cgroup_rules');
  assert.equal(h.Runtime, 'runc', 'runtime');
  assert.deepEqual(h.Tmpfs, { '/run': 'size=1m' }, 'tmpfs');
  assert.equal(cfg.Hostname, 'box', 'hostname');
  assert.equal(cfg.Domainname, 'example.org', 'domainname');
  assert.equal(cfg.MacAddress, '02:42:ac:11:65:43', 'mac_address');
  assert.ok('5000/tcp' in (cfg.ExposedPorts ?? {}), 'expose');
  assert.equal(cfg.StopSignal, 'SIGINT', 'stop_signal');
  assert.equal(cfg.StopTimeout, 3, 'stop_grace_period');
  assert.equal(cfg.Tty, true, 'tty');
  assert.equal(cfg.OpenStdin, true, 'stdin_open');
  assert.equal(cfg.WorkingDir, '/tmp', 'working_dir');
  assert.equal(cfg.User, '0', 'user');
  assert.deepEqual(cfg.Healthcheck, { Test: ['CMD', 'true'], Interval: 5e9, Retries: 2 }, 'healthcheck');
}

/** Runs a shell command in the container and returns its output. */
function inContainer(id: string, script: string): string {
  return execFileSync('/usr/bin/docker', ['exec', id, 'sh', '-c', script], { encoding: 'utf8' });
}

/** The live container sees the settings too, not only the engine's record of them. */
function assertLive(id: string): void {
  assert.equal(inContainer(id, 'cat /proc/sys/net/core/somaxconn').trim(), '1024', 'the sysctl is set in the container');
  // The service's own process (pid 1): a `docker exec`'d shell is not the service, and with Debian
  // 12's runc 1.1.5 (built with Go 1.19) its nofile soft limit comes out raised to the hard one
  // (2048) whatever the container's, while pid 1 has 1024/2048 (checked by hand).
  assert.match(inContainer(id, 'cat /proc/1/limits'), /^Max open files\s+1024\s+2048\s+files/m, 'the nofile limits apply to the service');
  assert.match(inContainer(id, 'cat /etc/hosts'), /10\.1\.2\.3\s+somehost/, 'extra_hosts are in /etc/hosts');
  assert.match(inContainer(id, 'touch /x 2>&1 || echo refused'), /Read-only file system|refused/, 'the root file system is read-only');
  assert.match(inContainer(id, 'id -G'), /\b1234\b/, 'group_add');
}

describe('service config reaches the container (real agent and engine)', function () {
  let agent: TestAgent;
  let port: number;

  before(async () => {
    await ensureBaseImages();
    agent = await startAgent();
    port = await freePort();
  });
  after(async () => {
    await agent.kill('SIGKILL');
    await cleanupAgent(agent.uuid);
    await cleanupImages({ label: `io.skiff.project=${PROJECT}` });
  });

  const containerOf = async (service: string, commit?: string): Promise<Docker.ContainerInspectInfo> => {
    const list = await docker.listContainers({ all: true, filters: { label: [`io.skiff.agent=${agent.uuid}`, `io.balena.service-name=${service}`, ...(commit ? [`io.skiff.commit=${commit}`] : [])] } });
    const [c] = list.filter((x) => x.State === 'running');
    if (!c) throw new Error(`no running container for ${service}`);
    return docker.getContainer(c.Id).inspect();
  };

  it('skiff push: every key is in the container the agent creates', async () => {
    const dir = makeProject({
      'docker-compose.yml': [
        'services:',
        '  all:',
        '    build: ./app',
        ...ALL_KEYS,
        '  other:',
        '    build: ./app',
        '    cpu_quota: 50000',
        '    pid: host',
        '    userns_mode: host',
        '  web:',
        '    build: ./app',
        `    ports: ["${port}"]`,
        `    command: ["httpd", "-f", "-p", "${port}", "-h", "/www"]`,
        '',
      ].join('\n'),
      'app/Dockerfile': `FROM ${BASE_AMD64}\nCOPY index.html /www/index.html\nCMD ["sh", "-c", "${LOOP}"]\n`,
      'app/index.html': 'from busybox\n',
    }, PROJECT);
    const r = await runCli(['push', `127.0.0.1:${agent.port}`, '--source', dir, '--dockerPort', String(agent.enginePort), '--detached', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const all = await containerOf('all');
    assertAllKeys(all);
    assertLive(all.Id);
    const other = await containerOf('other');
    assert.equal(other.HostConfig.CpuQuota, 50000, 'cpu_quota');
    assert.equal(other.HostConfig.PidMode, 'host', 'pid');
    assert.equal(other.HostConfig.UsernsMode, 'host', 'userns_mode');
    assert.notEqual(inContainer(other.Id, 'ls /proc | grep -c "^[0-9]"').trim(), '2', 'pid: host shows the host\'s processes');
  });

  it('a container-only port ("PORT") is published on the same host port and answers', async () => {
    const web = await containerOf('web');
    assert.deepEqual(web.HostConfig.PortBindings, { [`${port}/tcp`]: [{ HostIp: '', HostPort: String(port) }] });
    const body = await eventually(async () => {
      const res = await fetch(`http://127.0.0.1:${port}/`);
      return res.ok ? res.text() : undefined;
    }, 20_000, `an answer on 127.0.0.1:${port}`);
    assert.equal(body, 'from busybox\n');
  });

  it('a target posted in balena-cli\'s local-mode shape: every key is in the container', async () => {
    // balena-cli builds on the device's engine and tags the images local_<service>; reuse the push's build.
    const image = (await containerOf('all')).Config.Image;
    const tag = `local_all${RUN}`;
    await docker.getImage(image).tag({ repo: tag, tag: 'latest' });
    const commit = randomBytes(6).toString('hex');
    const service = {
      environment: {}, labels: {}, imageId: 1, serviceName: 'all', serviceId: 1, image: tag, running: true,
      mem_limit: '64m', mem_reservation: 33554432, shm_size: '128m', cpus: 0.5, cpu_shares: 512, cpuset: '0', pids_limit: 64,
      cgroup_parent: '/skiff-e2e', sysctls: ['net.core.somaxconn=1024'], ulimits: { nofile: { soft: 1024, hard: 2048 }, nproc: 512 },
      dns: '1.1.1.1', dns_search: ['example.com'], dns_opt: ['ndots:2'], extra_hosts: ['somehost:10.1.2.3', 'other=10.1.2.4'],
      read_only: true, init: true, security_opt: ['no-new-privileges'], ipc: 'shareable', oom_score_adj: 100, oom_kill_disable: true,
      group_add: ['1234'], hostname: 'box', domainname: 'example.org', mac_address: '02:42:ac:11:65:43', expose: ['5000'],
      logging: { driver: 'json-file', options: { 'max-size': '1m' } }, stop_signal: 'SIGINT', stop_grace_period: '3s', tty: true,
      stdin_open: true, cap_add: ['NET_ADMIN'], cap_drop: ['MKNOD'], devices: ['/dev/null:/dev/skiffnull:rwm'],
      device_cgroup_rules: ['c 1:3 mr'], runtime: 'runc', tmpfs: ['/run:size=1m'], working_dir: '/tmp', user: '0',
      healthcheck: { test: ['CMD', 'true'], interval: '5s', retries: 2 },
    };
    const target = (services: Record<string, unknown>) => ({
      local: { name: 'dev', config: {}, apps: { 1: { name: 'localapp', commit, releaseId: '1', services, volumes: {}, networks: {} } } },
      dependent: { apps: {}, devices: {} },
    });
    const post = (body: unknown) => fetch(`${agent.url}/v2/local/target-state`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

    const refused = await post(target({ 1: { ...service, memswap_limit: '128m' } }));
    assert.equal(refused.status, 400, 'a key the device cannot honour is refused, not dropped');
    assert.match(await refused.text(), /memswap_limit/);

    const res = await post(target({ 1: service }));
    assert.equal(res.status, 200, await res.text());
    const all = await eventually(() => containerOf('all', commit).catch(() => undefined), 60_000, 'the container of the posted target');
    assertAllKeys(all);
    assertLive(all.Id);
  });
});
