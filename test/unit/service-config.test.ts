/**
 * The one service model: every key the device honours, read by the one parser the project model
 * and the agent share; each bad value refused naming its key; and what it becomes in the engine's
 * container spec.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { containerSpec, type EngineContext } from '../../src/lib/agent/engine-state.js';
import { InvalidTargetError, parseLocalTargetState } from '../../src/lib/agent/target-state.js';
import type { TargetApp } from '../../src/lib/agent/model.js';
import type { ReleaseManifest } from '../../src/lib/builder/release.js';
import { localTargetState } from '../../src/lib/device/push.js';
import { parseCompose } from '../../src/lib/project/compose.js';
import {
  parseServiceConfig, REFUSED_SERVICE_KEYS, SERVICE_KEYS, ServiceConfigError, type ServiceConfig,
} from '../../src/lib/service/service-config.js';
import { durationSeconds, parsePort, sizeBytes } from '../../src/lib/service/values.js';
import { scratchDir } from '../support/tmp.js';

const parse = (json: Record<string, unknown>): ServiceConfig => parseServiceConfig({ image: 'x', ...json }, 'web');

function refuses(json: Record<string, unknown>, key: string, message: RegExp, hint?: RegExp): void {
  assert.throws(() => parse(json), (err: unknown) => {
    assert.ok(err instanceof ServiceConfigError, `expected a ServiceConfigError, got ${String(err)}`);
    assert.equal(err.key, key);
    assert.match(err.message, message);
    if (hint) assert.match(err.hint ?? '', hint);
    return true;
  });
}

describe('service config', () => {
  describe('values', () => {
    const sizes: Array<[unknown, number | RegExp]> = [
      [0, 0], [1024, 1024], ['64m', 64 * 1024 ** 2], ['64M', 64 * 1024 ** 2], ['64mb', 64 * 1024 ** 2], ['1g', 1024 ** 3],
      ['1.5k', 1536], ['512', 512], ['2 GB', 2 * 1024 ** 3], ['1t', 1024 ** 4], ['100b', 100],
      [-1, /size/], [1.5, /size/], ['1 gigabyte', /size/], ['m', /size/], ['', /size/], [true, /size/],
    ];
    for (const [input, expected] of sizes) {
      it(`reads the size ${JSON.stringify(input)}`, () => {
        const got = sizeBytes(input);
        if (typeof expected === 'number') assert.equal(got, expected);
        else assert.match(String(got), expected);
      });
    }
    const durations: Array<[unknown, number | undefined]> = [
      [10, 10], ['10s', 10], ['1m30s', 90], ['500ms', 0.5], ['1h', 3600], ['1.5s', 1.5], ['250ms', 0.25],
      ['10', undefined], ['soon', undefined], ['', undefined], [-1, undefined], ['1s ', undefined],
    ];
    for (const [input, expected] of durations) {
      it(`${expected === undefined ? 'refuses' : 'reads'} the duration ${JSON.stringify(input)}`, () => {
        const got = durationSeconds(input);
        if (expected === undefined) assert.equal(typeof got, 'string');
        else assert.equal(got, expected);
      });
    }
    const ports: Array<[string, ReturnType<typeof parsePort>]> = [
      ['4000', { target: [4000, 4000], protocol: 'tcp' }],
      ['8080:80', { published: [8080, 8080], target: [80, 80], protocol: 'tcp' }],
      ['4000-4002/udp', { target: [4000, 4002], protocol: 'udp' }],
      ['127.0.0.1:8080:80', { hostIp: '127.0.0.1', published: [8080, 8080], target: [80, 80], protocol: 'tcp' }],
      ['127.0.0.1::80', { hostIp: '127.0.0.1', target: [80, 80], protocol: 'tcp' }],
      ['[::1]:8080:80', { hostIp: '::1', published: [8080, 8080], target: [80, 80], protocol: 'tcp' }],
      ['0', 'port 0 is out of range (1-65535)'],
      ['70000', 'port 70000 is out of range (1-65535)'],
      ['80/icmp', "unknown protocol 'icmp'"],
      ['1.2.3:80:80', "invalid host IP '1.2.3'"],
      [':80', 'empty published port'],
      ['8000-8002:80-81', 'the published and target ranges differ in size'],
      ['90-80', "range '90-80' is backwards"],
      ['a:b:c:d', 'too many colons'],
    ];
    for (const [spec, expected] of ports) it(`reads the port '${spec}'`, () => assert.deepEqual(parsePort(spec), expected));
  });

  describe('every key the device honours', () => {
    const keys: Array<[string, unknown, Partial<ServiceConfig>]> = [
      ['image', 'repo/app:1', { image: 'repo/app:1' }],
      ['command', ['node', 'index.js', 3], { command: ['node', 'index.js', '3'] }],
      ['command', 'node index.js', { command: ['/bin/sh', '-c', 'node index.js'] }],
      ['entrypoint', ['/init'], { entrypoint: ['/init'] }],
      ['environment', { A: 1, B: null }, { environment: { A: '1', B: '' } }],
      ['environment', ['A=1', 'B'], { environment: { A: '1', B: '' } }],
      ['labels', { 'io.balena.features.dbus': '1' }, { labels: { 'io.balena.features.dbus': '1' } }],
      ['ports', ['4000', 8080, '127.0.0.1:81:80/udp'], { ports: ['4000', '8080', '127.0.0.1:81:80/udp'] }],
      ['expose', [5000, '53/udp', '6000-6001'], { expose: ['5000', '53/udp', '6000-6001'] }],
      ['volumes', ['data:/data', 'data:/ro:ro', 'data:/rw:rw', '/anon'], { volumes: ['data:/data', 'data:/ro:ro', 'data:/rw', '/anon'] }],
      ['tmpfs', '/run', { tmpfs: ['/run'] }],
      ['tmpfs', ['/run:size=64m', '/tmp'], { tmpfs: ['/run:size=64m', '/tmp'] }],
      ['networks', ['front'], { networks: ['front'] }],
      ['networks', { front: { aliases: ['api', 'web2'] } }, { networks: ['front'], networkAliases: ['api', 'web2'] }],
      ['networks', { front: null }, { networks: ['front'] }],
      ['network_mode', 'host', { networkMode: 'host' }],
      ['restart', 'on-failure:3', { restart: 'on-failure:3' }],
      ['privileged', true, { privileged: true }],
      ['cap_add', ['SYS_ADMIN'], { capAdd: ['SYS_ADMIN'] }],
      ['cap_drop', ['NET_RAW'], { capDrop: ['NET_RAW'] }],
      ['devices', ['/dev/ttyUSB0', '/dev/null:/dev/n:r'], { devices: ['/dev/ttyUSB0', '/dev/null:/dev/n:r'] }],
      ['device_cgroup_rules', ['c 188:* rmw', 'b 8:0 r'], { deviceCgroupRules: ['c 188:* rmw', 'b 8:0 r'] }],
      ['depends_on', ['db'], { dependsOn: ['db'] }],
      ['depends_on', { db: { condition: 'service_started' } }, { dependsOn: ['db'] }],
      ['healthcheck', { test: 'true', interval: '30s', timeout: 5, start_period: '1m', retries: 3 }, { healthcheck: { test: ['CMD-SHELL', 'true'], intervalSeconds: 30, timeoutSeconds: 5, startPeriodSeconds: 60, retries: 3 } }],
      ['healthcheck', { disable: true }, { healthcheck: { test: ['NONE'] } }],
      ['healthcheck', { interval: '10s' }, { healthcheck: { intervalSeconds: 10 } }],
      ['stop_signal', 'SIGINT', { stopSignal: 'SIGINT' }],
      ['stop_grace_period', '1m30s', { stopGracePeriodSeconds: 90 }],
      ['working_dir', '/app', { workingDir: '/app' }],
      ['user', 1000, { user: '1000' }],
      ['hostname', 'box', { hostname: 'box' }],
      ['domainname', 'example.org', { domainname: 'example.org' }],
      ['mac_address', '02:42:ac:11:65:43', { macAddress: '02:42:ac:11:65:43' }],
      ['sysctls', { 'net.core.somaxconn': 1024 }, { sysctls: { 'net.core.somaxconn': '1024' } }],
      ['sysctls', ['net.core.somaxconn=1024'], { sysctls: { 'net.core.somaxconn': '1024' } }],
      ['ulimits', { nofile: { soft: 1024, hard: 2048 }, nproc: 512 }, { ulimits: { nofile: { soft: 1024, hard: 2048 }, nproc: { soft: 512, hard: 512 } } }],
      ['shm_size', '128m', { shmSizeBytes: 128 * 1024 ** 2 }],
      ['mem_limit', '64m', { memLimitBytes: 67108864 }],
      ['mem_limit', 67108864, { memLimitBytes: 67108864 }],
      ['mem_reservation', '32m', { memReservationBytes: 32 * 1024 ** 2 }],
      ['cpu_shares', 512, { cpuShares: 512 }],
      ['cpu_quota', 50000, { cpuQuotaMicroseconds: 50000 }],
      ['cpuset', '0-1,3', { cpuset: '0-1,3' }],
      ['cpuset', 0, { cpuset: '0' }],
      ['cpus', 0.5, { nanoCpus: 500_000_000 }],
      ['cpus', '1.5', { nanoCpus: 1_500_000_000 }],
      ['pids_limit', 100, { pidsLimit: 100 }],
      ['pids_limit', -1, { pidsLimit: -1 }],
      ['cgroup_parent', 'skiff', { cgroupParent: 'skiff' }],
      ['dns', '1.1.1.1', { dns: ['1.1.1.1'] }],
      ['dns', ['1.1.1.1', '8.8.8.8'], { dns: ['1.1.1.1', '8.8.8.8'] }],
      ['dns_search', 'example.com', { dnsSearch: ['example.com'] }],
      ['dns_opt', ['ndots:2'], { dnsOptions: ['ndots:2'] }],
      ['extra_hosts', ['db:10.0.0.2', 'cache=10.0.0.3', 'v6:::1', 'gw:host-gateway'], { extraHosts: ['db:10.0.0.2', 'cache:10.0.0.3', 'v6:::1', 'gw:host-gateway'] }],
      ['extra_hosts', { db: '10.0.0.2' }, { extraHosts: ['db:10.0.0.2'] }],
      ['read_only', true, { readOnly: true }],
      ['security_opt', ['no-new-privileges'], { securityOpt: ['no-new-privileges'] }],
      ['ipc', 'shareable', { ipc: 'shareable' }],
      ['pid', 'host', { pid: 'host' }],
      ['init', true, { init: true }],
      ['oom_kill_disable', true, { oomKillDisable: true }],
      ['oom_score_adj', -500, { oomScoreAdj: -500 }],
      ['stdin_open', true, { stdinOpen: true }],
      ['tty', false, { tty: false }],
      ['group_add', ['dialout', 20], { groupAdd: ['dialout', '20'] }],
      ['logging', { driver: 'json-file', options: { 'max-size': '1m', 'max-file': 2 } }, { logging: { driver: 'json-file', options: { 'max-size': '1m', 'max-file': '2' } } }],
      ['logging', { driver: 'local' }, { logging: { driver: 'local', options: {} } }],
      ['runtime', 'runc', { runtime: 'runc' }],
      ['userns_mode', 'host', { usernsMode: 'host' }],
    ];
    for (const [key, value, expected] of keys) {
      it(`reads ${key}: ${JSON.stringify(value)}`, () => {
        const c = parse({ [key]: value });
        for (const [field, v] of Object.entries(expected)) assert.deepEqual(c[field as keyof ServiceConfig], v, field);
      });
    }

    it('has a case above for every key', () => {
      const tested = new Set(keys.map(([k]) => k));
      assert.deepEqual(SERVICE_KEYS.filter((k) => !tested.has(k)), []);
    });

    it('leaves unset keys absent (the engine default) and fills the lists', () => {
      assert.deepEqual(parse({}), {
        image: 'x', environment: {}, labels: {}, ports: [], volumes: [], tmpfs: [], networks: [], restart: 'always',
        privileged: false, capAdd: [], capDrop: [], devices: [], dependsOn: [],
      });
    });

    it('skips the keys the caller reads itself, x- keys and null values', () => {
      const c = parseServiceConfig({ image: 'x', serviceName: 'web', 'x-note': 1, mem_limit: null }, 'web', new Set(['serviceName']));
      assert.equal(c.memLimitBytes, undefined);
    });
  });

  describe('bad values, each refused naming its key', () => {
    const bad: Array<[string, unknown, RegExp]> = [
      ['image', '', /invalid image name ''/],
      ['image', 'a b', /invalid image name/],
      ['image', ['x'], /'image' in service 'web' must be a string/],
      ['command', { a: 1 }, /must be a string or a list/],
      ['command', [['a']], /must be a string/],
      ['entrypoint', 3, /'entrypoint' .* must be a string or a list/],
      ['environment', 'A=1', /must be a mapping or a list of NAME=value/],
      ['environment', ['=1'], /has no name before '='/],
      ['environment', { A: [1] }, /the value of 'A' must be a string, number or boolean/],
      ['environment', [1], /list items must be strings/],
      ['labels', 3, /must be a mapping/],
      ['ports', '80', /'ports' in service 'web' must be a list/],
      ['ports', [{ target: 80 }], /must be strings such as "8080:80"/],
      ['ports', ['0'], /invalid port '0' .* out of range/],
      ['ports', ['80/icmp'], /unknown protocol 'icmp'/],
      ['expose', ['x'], /invalid exposed port 'x'/],
      ['expose', [true], /expose of service 'web' must list ports/],
      ['volumes', ['./data:/data'], /bind mounts are not supported on devices/],
      ['volumes', ['/host:/data'], /bind mounts are not supported/],
      ['volumes', ['data'], /needs a target path/],
      ['volumes', ['data:/d:ro:x'], /invalid volume 'data:\/d:ro:x'/],
      ['volumes', ['data:/d:rx'], /invalid volume mode 'rx'/],
      ['volumes', ['bad name:/d'], /invalid volume name 'bad name'/],
      ['volumes', ['data:rel'], /must be an absolute path/],
      ['volumes', [42], /must be strings such as data:\/data/],
      ['tmpfs', ['run'], /tmpfs mount 'run' .* absolute path/],
      ['tmpfs', 3, /must be a string or a list/],
      ['networks', ['a', 'b'], /joins 2 networks; a device attaches each service to one/],
      ['networks', 'front', /must be a list of names or a mapping/],
      ['networks', { front: 'x' }, /settings of network 'front' .* must be a mapping/],
      ['networks', { front: { ipv4_address: '10.0.0.2' } }, /network setting 'ipv4_address' .* not supported on devices/],
      ['networks', { front: { aliases: 'api' } }, /'aliases' in service 'web' must be a list/],
      ['networks', { front: { aliases: ['a b'] } }, /invalid alias 'a b'/],
      ['network_mode', 'service:db', /network_mode 'service:db' is not supported on devices/],
      ['network_mode', 'container:abc', /network_mode 'container:abc' is not supported/],
      ['network_mode', 'front', /network_mode 'front' is not supported/],
      ['restart', 'never', /invalid restart policy 'never'/],
      ['restart', 'on-failure:x', /invalid restart policy/],
      ['restart', false, /'restart' .* must be a string/],
      ['privileged', 'yes', /'privileged' in service 'web' must be true or false/],
      ['cap_add', 'SYS_ADMIN', /'cap_add' .* must be a list/],
      ['cap_drop', [1], /'cap_drop' .* must be a string/],
      ['devices', ['ttyUSB0'], /host path must be absolute/],
      ['devices', ['/dev/a:b'], /container path must be absolute/],
      ['devices', ['/dev/a:/dev/b:rwx'], /permissions 'rwx'/],
      ['device_cgroup_rules', ['c 188 rmw'], /invalid device_cgroup_rules entry/],
      ['depends_on', 'db', /must be a list of service names or a mapping/],
      ['healthcheck', 'CMD true', /'healthcheck' .* must be a mapping/],
      ['healthcheck', { test: 1 }, /healthcheck test .* string or a list/],
      ['healthcheck', { interval: 'often' }, /'healthcheck\.interval' .* duration/],
      ['healthcheck', { retries: 1.5 }, /healthcheck retries .* whole number/],
      ['healthcheck', { disable: 'yes' }, /healthcheck disable .* true or false/],
      ['healthcheck', { start_interval: '1s' }, /healthcheck\.start_interval .* not supported/],
      ['stop_signal', 'TERM', /must look like SIGTERM/],
      ['stop_grace_period', 'soon', /'stop_grace_period' .* duration/],
      ['working_dir', 'app', /absolute path/],
      ['user', { id: 1 }, /'user' .* must be a string/],
      ['hostname', 'a b', /host name/],
      ['domainname', '-x', /domain/],
      ['mac_address', '02:42', /must look like 02:42:ac:11:00:02/],
      ['sysctls', { a: { b: 1 } }, /the value of 'a' must be a string/],
      ['sysctls', { somaxconn: 1 }, /'somaxconn' .* is not a sysctl name/],
      ['ulimits', { nofile: { soft: 1 } }, /ulimit 'nofile' .* number or \{ soft, hard \}/],
      ['ulimits', { nofile: { soft: 2, hard: 1 } }, /soft 2 is above hard 1/],
      ['ulimits', { NOFILE: 1 }, /unknown ulimit 'NOFILE'/],
      ['ulimits', [1], /'ulimits' .* must be a mapping/],
      ['shm_size', -1, /'shm_size' .* size/],
      ['mem_limit', '1 gigabyte', /'mem_limit' .* size such as 512m/],
      ['mem_limit', '1m', /at least 6m/],
      ['mem_reservation', 'lots', /'mem_reservation' .* size/],
      ['cpu_shares', 1.5, /'cpu_shares' .* whole number/],
      ['cpu_shares', 1, /between 2 and 262144/],
      ['cpu_quota', 999, /at least 1000/],
      ['cpuset', '0,a', /'cpuset' .* must look like 0-1,3/],
      ['cpus', 'lots', /'cpus' .* number such as 0.5/],
      ['cpus', 0, /'cpus' .* number/],
      ['pids_limit', -2, /-1 \(no limit\) or more/],
      ['cgroup_parent', 1, /'cgroup_parent' .* string/],
      ['dns', 1, /'dns' .* string or a list/],
      ['dns_search', [1], /'dns_search' .* string/],
      ['dns_opt', 'ndots:2', /'dns_opt' .* list/],
      ['extra_hosts', ['db'], /'db' is not host:ip/],
      ['extra_hosts', ['db:nowhere'], /'nowhere' in 'db:nowhere' is not an IP address/],
      ['extra_hosts', { db: 'x' }, /is not an IP address/],
      ['read_only', 'true', /'read_only' .* true or false/],
      ['security_opt', 'no-new-privileges', /'security_opt' .* list/],
      ['ipc', 'service:db', /ipc 'service:db' .* not supported on devices/],
      ['ipc', 'container:x', /not supported on devices/],
      ['pid', 'service:db', /pid 'service:db' .* not supported/],
      ['init', 1, /'init' .* true or false/],
      ['oom_kill_disable', 'no', /true or false/],
      ['oom_score_adj', 2000, /between -1000 and 1000/],
      ['stdin_open', 'y', /true or false/],
      ['tty', 1, /'tty' .* true or false/],
      ['group_add', 'audio', /'group_add' .* list/],
      ['logging', 'journald', /'logging' .* mapping/],
      ['logging', { driver: 1 }, /'logging' .* string/],
      ['logging', { options: 'x' }, /'logging.options' .* mapping/],
      ['logging', { format: 'x' }, /logging.format .* not supported/],
      ['runtime', true, /'runtime' .* string/],
      ['userns_mode', 'private', /userns_mode 'private' .* not supported/],
    ];
    for (const [key, value, message] of bad) {
      it(`refuses ${key}: ${JSON.stringify(value)}`, () => refuses({ [key]: value }, key, message));
    }

    it('has a bad case above for every key', () => {
      const tested = new Set(bad.map(([k]) => k));
      assert.deepEqual(SERVICE_KEYS.filter((k) => !tested.has(k)), []);
    });

    it('says where inside the value the problem is', () => {
      assert.throws(() => parse({ ports: ['80', '0'] }), (err: ServiceConfigError) => err.key === 'ports' && err.path[0] === 1);
      assert.throws(() => parse({ extra_hosts: { db: 'x' } }), (err: ServiceConfigError) => err.path[0] === 'db');
      assert.throws(() => parse({ logging: { options: { a: [1] } } }), (err: ServiceConfigError) => err.path.join('.') === 'options.a');
      assert.throws(() => parse({ healthcheck: { timeout: 'x' } }), (err: ServiceConfigError) => err.path[0] === 'timeout');
    });

    it('needs an image', () => {
      assert.throws(() => parseServiceConfig({}, 'web'), (err: ServiceConfigError) => err.key === 'image' && /needs an image/.test(err.message));
    });

    const combinations: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ cpus: 0.5, cpu_quota: 50000 }, 'cpu_quota', /sets both cpus and cpu_quota/],
      [{ mem_limit: '64m', mem_reservation: '128m' }, 'mem_reservation', /above its mem_limit/],
      [{ network_mode: 'host', networks: ['front'] }, 'network_mode', /sets both network_mode and networks/],
      [{ network_mode: 'host', sysctls: { 'net.core.somaxconn': 1 } }, 'sysctls', /net.\* sysctls but uses the host's network/],
    ];
    for (const [json, key, message] of combinations) {
      it(`refuses ${JSON.stringify(json)} together`, () => refuses(json, key, message));
    }
    it('accepts a reservation below the limit, and kernel sysctls on the host network', () => {
      assert.equal(parse({ mem_limit: '64m', mem_reservation: '32m' }).memReservationBytes, 32 * 1024 ** 2);
      assert.deepEqual(parse({ network_mode: 'host', sysctls: { 'kernel.msgmax': 1 } }).sysctls, { 'kernel.msgmax': '1' });
    });

    for (const [key, hint] of Object.entries(REFUSED_SERVICE_KEYS)) {
      it(`refuses ${key} with what to do instead`, () => refuses({ [key]: 1 }, key, new RegExp(`'${key}' in service 'web' is not supported on devices`), new RegExp(hint.slice(0, 12).replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))));
    }
    it('refuses an unknown key instead of carrying it', () => refuses({ shm: '1g' }, 'shm', /unknown key 'shm' in service 'web'/));
  });

  describe('from compose to the device', () => {
    const dir = scratchDir('skiff-service-config-');
    const file = path.join(dir, 'docker-compose.yml');
    const compose = [
      'services:',
      '  web:',
      '    image: local_web',
      '    mem_limit: 64m',
      '    mem_reservation: 32m',
      '    cpu_shares: 512',
      '    cpus: "0.5"',
      '    sysctls: [net.core.somaxconn=1024]',
      '    ulimits: { nofile: { soft: 1024, hard: 2048 } }',
      '    shm_size: 128m',
      '    dns: 1.1.1.1',
      '    extra_hosts: { db: 10.0.0.2 }',
      '    read_only: true',
      '    init: true',
      '    security_opt: [no-new-privileges]',
      '    ipc: shareable',
      '    user: 1000',
      '    command: httpd -f',
      '    ports: [4000, { target: 80, published: 8080 }]',
      '    tmpfs: /run',
      '    volumes: [data:/data, { type: tmpfs, target: /cache, tmpfs: { size: 1m } }]',
      '    networks: { front: { aliases: [api] } }',
      '    healthcheck: { test: [CMD, "true"], interval: 30s }',
      '    logging: { driver: json-file, options: { max-size: 1m } }',
      'volumes: { data: }',
      'networks: { front: }',
      '',
    ].join('\n');
    writeFileSync(file, compose);
    const parsed = parseCompose(compose, file, dir);
    const project = { name: 'p', dir, services: parsed.services, volumes: parsed.volumes, networks: parsed.networks, warnings: [] };
    const release = { services: [{ service: 'web', image: 'local_web' }] } as unknown as ReleaseManifest;

    it('reads what compose accepted the same on the device', () => {
      const target = parseLocalTargetState(JSON.parse(JSON.stringify(localTargetState('dev', project, release, 'c0ffee', {}))), 'dev');
      const c = target.apps[0]?.services[0]?.config;
      assert.deepEqual(c, {
        image: 'local_web', environment: {}, labels: {}, ports: ['4000', '8080:80'], volumes: ['data:/data'],
        tmpfs: ['/run', '/cache:size=1m'], networks: ['front'], networkAliases: ['api'], restart: 'always', privileged: false,
        capAdd: [], capDrop: [], devices: [], dependsOn: [],
        memLimitBytes: 67108864, memReservationBytes: 33554432, cpuShares: 512, nanoCpus: 500_000_000,
        sysctls: { 'net.core.somaxconn': '1024' }, ulimits: { nofile: { soft: 1024, hard: 2048 } }, shmSizeBytes: 134217728,
        dns: ['1.1.1.1'], extraHosts: ['db:10.0.0.2'], readOnly: true, init: true, securityOpt: ['no-new-privileges'],
        ipc: 'shareable', user: '1000', command: ['/bin/sh', '-c', 'httpd -f'],
        healthcheck: { test: ['CMD', 'true'], intervalSeconds: 30 }, logging: { driver: 'json-file', options: { 'max-size': '1m' } },
      } satisfies ServiceConfig);
    });

    it('answers a target with a key it cannot honour with InvalidTargetError (400) naming the key', () => {
      const body = (service: Record<string, unknown>) => ({ local: { apps: { 1: { name: 'a', services: { 1: { serviceName: 'web', image: 'x', ...service } } } } } });
      for (const [service, message] of [
        [{ memswap_limit: '1g' }, /'memswap_limit' in service 'web' is not supported on devices \(remove it/],
        [{ mem_limit: 'lots' }, /'mem_limit' in service 'web' must be a size/],
        [{ shmsize: '1g' }, /unknown key 'shmsize' in service 'web'/],
        [{ networks: ['a', 'b'] }, /joins 2 networks/],
      ] as const) {
        assert.throws(() => parseLocalTargetState(body(service), 'dev'), (err: unknown) => err instanceof InvalidTargetError && message.test(err.message));
      }
    });
  });

  describe('the engine container spec', () => {
    const ctx: EngineContext = {
      docker: undefined as never, uuid: 'abcdef0123456789', deviceType: 'intel-nuc', arch: 'amd64', deviceName: 'dev',
      apiAddress: 'http://127.0.0.1:48484', apiKey: 'k', locksDir: scratchDir('skiff-locks-'), engineSocket: '/var/run/docker.sock',
      hostPaths: new Set(['/var/run/docker.sock', '/sys', '/proc']),
    };
    const spec = (json: Record<string, unknown>) => {
      const config = parse(json);
      const app: TargetApp = { appId: 1, name: 'a', commit: 'c', releaseId: 'r', services: [], volumes: {}, networks: {} };
      return containerSpec(ctx, app, { serviceId: 1, serviceName: 'web', imageId: 1, running: true, config }, 'sha256:x');
    };

    it('maps every resource and runtime setting the way balena\'s supervisor does', () => {
      const s = spec({
        mem_limit: '64m', mem_reservation: '32m', shm_size: '128m', cpus: 0.5, cpu_shares: 512, cpuset: '0', pids_limit: 50,
        cgroup_parent: 'skiff', sysctls: { 'net.core.somaxconn': 1024 }, ulimits: { nofile: { soft: 1024, hard: 2048 } },
        dns: '1.1.1.1', dns_search: 'example.com', dns_opt: ['ndots:2'], extra_hosts: ['db=10.0.0.2'], read_only: true,
        security_opt: ['no-new-privileges'], ipc: 'shareable', pid: 'host', init: true, oom_kill_disable: true, oom_score_adj: 100,
        group_add: ['20'], logging: { driver: 'json-file', options: { 'max-size': '1m' } }, runtime: 'runc', userns_mode: 'host',
        device_cgroup_rules: ['c 1:3 mr'], tmpfs: ['/run:size=1m'],
        domainname: 'example.org', hostname: 'box', mac_address: '02:42:ac:11:65:43', tty: true, stdin_open: true,
        stop_signal: 'SIGINT', stop_grace_period: '2s', expose: ['5000', '6000-6001/udp'], working_dir: '/app', user: '1000',
      });
      assert.deepEqual({ ...s.HostConfig, Binds: undefined }, {
        Binds: undefined,
        Tmpfs: { '/run': 'size=1m' }, PortBindings: {}, RestartPolicy: { Name: 'always' }, Privileged: false, CapAdd: [], CapDrop: [], Devices: [],
        NetworkMode: 'abcdef0_1_default', DeviceCgroupRules: ['c 1:3 mr'], Memory: 67108864, MemoryReservation: 33554432, ShmSize: 134217728,
        NanoCpus: 500_000_000, CpuShares: 512, CpusetCpus: '0', PidsLimit: 50, CgroupParent: 'skiff',
        Sysctls: { 'net.core.somaxconn': '1024' }, Ulimits: [{ Name: 'nofile', Soft: 1024, Hard: 2048 }],
        Dns: ['1.1.1.1'], DnsSearch: ['example.com'], DnsOptions: ['ndots:2'], ExtraHosts: ['db:10.0.0.2'], ReadonlyRootfs: true,
        SecurityOpt: ['no-new-privileges'], IpcMode: 'shareable', PidMode: 'host', Init: true, OomKillDisable: true, OomScoreAdj: 100,
        GroupAdd: ['20'], LogConfig: { Type: 'json-file', Config: { 'max-size': '1m' } }, Runtime: 'runc', UsernsMode: 'host',
      });
      assert.deepEqual(
        [s.Domainname, s.Hostname, s.MacAddress, s.Tty, s.OpenStdin, s.StopSignal, s.StopTimeout, s.WorkingDir, s.User],
        ['example.org', 'box', '02:42:ac:11:65:43', true, true, 'SIGINT', 2, '/app', '1000'],
      );
      assert.deepEqual(s.ExposedPorts, { '5000/tcp': {}, '6000/udp': {}, '6001/udp': {} });
    });

    it('sets cpu_quota without cpus', () => assert.equal(spec({ cpu_quota: 50000 }).HostConfig?.CpuQuota, 50000));

    it('leaves out what the service does not set (the engine default)', () => {
      const s = spec({});
      for (const key of ['Memory', 'NanoCpus', 'Sysctls', 'Ulimits', 'ReadonlyRootfs', 'Init', 'LogConfig', 'IpcMode']) assert.ok(!(key in (s.HostConfig ?? {})), key);
      for (const key of ['Tty', 'Cmd', 'StopSignal', 'Healthcheck']) assert.ok(!(key in s), key);
    });

    const published: Array<[string, Record<string, Array<{ HostIp?: string; HostPort: string }>>]> = [
      ['4000', { '4000/tcp': [{ HostPort: '4000' }] }],
      ['4000-4002/udp', { '4000/udp': [{ HostPort: '4000' }], '4001/udp': [{ HostPort: '4001' }], '4002/udp': [{ HostPort: '4002' }] }],
      ['8080:80', { '80/tcp': [{ HostPort: '8080' }] }],
      ['127.0.0.1::80', { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '80' }] }],
      ['[::1]:8080-8081:80-81', { '80/tcp': [{ HostIp: '::1', HostPort: '8080' }], '81/tcp': [{ HostIp: '::1', HostPort: '8081' }] }],
    ];
    for (const [port, bindings] of published) {
      it(`publishes '${port}' as the supervisor does`, () => {
        const s = spec({ ports: [port] });
        assert.deepEqual(s.HostConfig?.PortBindings, bindings);
        assert.deepEqual(Object.keys(s.ExposedPorts ?? {}).sort(), Object.keys(bindings).sort());
      });
    }

    it('adds the network aliases to the service name', () => {
      const s = spec({ networks: { front: { aliases: ['api'] } } });
      assert.deepEqual(s.NetworkingConfig, { EndpointsConfig: { abcdef0_1_front: { Aliases: ['web', 'api'] } } });
    });
  });
});
