import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseCompose } from '../../src/lib/project/compose.js';
import type { ComposeParseResult } from '../../src/lib/project/compose.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

// One project folder for all cases: web/, api/ (with docker/), a file, and a sibling outside it.
const root = mkdtempSync(path.join(os.tmpdir(), 'skiff-compose-'));
const dir = path.join(root, 'project');
mkdirSync(path.join(dir, 'web'), { recursive: true });
mkdirSync(path.join(dir, 'api', 'docker'), { recursive: true });
mkdirSync(path.join(root, 'outside'));
writeFileSync(path.join(dir, 'notes.txt'), 'not a folder');
const file = path.join(dir, 'docker-compose.yml');

after(() => rmSync(root, { recursive: true, force: true }));

/** Joins lines, so the line numbers in the expectations can be counted from the array. */
const y = (...lines: string[]): string => `${lines.join('\n')}\n`;
/** A compose file with one service `web` whose settings are the given lines (from line 3 on). */
const web = (...lines: string[]): string => y('services:', '  web:', ...lines.map((l) => `    ${l}`));
const parse = (text: string): ComposeParseResult => parseCompose(text, file, dir);

function rejects(text: string, message: RegExp, where: string, hint?: RegExp): void {
  assert.throws(() => parse(text), (err: unknown) => {
    assert.ok(err instanceof SkiffError, `expected a SkiffError, got ${String(err)}`);
    assert.equal(err.code, 'project');
    assert.match(err.message, message);
    assert.equal(err.where, where);
    if (hint) assert.match(err.hint ?? '', hint);
    return true;
  });
}

const config = (text: string, service = 'web'): Record<string, unknown> => {
  const s = parse(text).services.find((x) => x.name === service);
  assert.ok(s, `service ${service}`);
  return { ...s.config };
};

describe('parseCompose', () => {
  describe('a valid file', () => {
    it('normalises services, volumes and networks', () => {
      const r = parse(y(
        "version: '2.4'",
        'services:',
        '  web:',
        '    build: ./web',
        '    ports: ["8080:80", 443]',
        '    environment:',
        '      A: 1',
        '      B: true',
        '      C:',
        '    labels: [io.balena.features.dbus=1]',
        '    volumes: [data:/data]',
        '    networks: [front]',
        '    depends_on: [db]',
        '    privileged: true',
        '    x-note: dropped',
        '  db:',
        '    image: postgres:16',
        '    restart: unless-stopped',
        'volumes:',
        '  data:',
        '  other: { driver: local }',
        'networks:',
        '  front:',
        'x-anything: [1, 2]',
      ));
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(r.volumes, { data: {}, other: { driver: 'local' } });
      assert.deepEqual(r.networks, { front: {} });
      const [w, db] = r.services;
      assert.equal(w?.name, 'web');
      assert.equal(w?.line, 3);
      assert.equal(w?.image, undefined);
      assert.deepEqual(w?.build, { context: path.join(dir, 'web'), contextRel: 'web', args: {}, labels: {}, cacheFrom: [], line: 4 });
      assert.deepEqual(w?.config, {
        ports: ['8080:80', '443'],
        environment: { A: '1', B: 'true', C: '' },
        labels: { 'io.balena.features.dbus': '1' },
        volumes: ['data:/data'],
        networks: ['front'],
        depends_on: ['db'],
        privileged: true,
      });
      assert.deepEqual(db, { name: 'db', image: 'postgres:16', config: { image: 'postgres:16', restart: 'unless-stopped' }, line: 16 });
    });

    it('reads a build mapping', () => {
      const [s] = parse(web(
        'build:',
        '  context: api',
        '  dockerfile: ./docker/Dockerfile.arm',
        '  args: [A=1, B, C=x=y]',
        '  target: runtime',
        '  labels: { l: 2 }',
        '  cache_from: [repo/api:latest]',
        'image: repo/api',
      )).services;
      assert.deepEqual(s?.build, {
        context: path.join(dir, 'api'),
        contextRel: 'api',
        dockerfile: 'docker/Dockerfile.arm',
        args: { A: '1', B: '', C: 'x=y' },
        target: 'runtime',
        labels: { l: '2' },
        cacheFrom: ['repo/api:latest'],
        line: 3,
      });
      assert.equal(s?.image, 'repo/api');
      assert.deepEqual(s?.config, { image: 'repo/api' }, 'build is not part of config');
    });

    const contexts: Array<[string, string, string]> = [
      ['build: .', dir, '.'],
      ['build: ./', dir, '.'],
      ['build: { dockerfile: Dockerfile.x }', dir, '.'],
      ['build: web/../api', path.join(dir, 'api'), 'api'],
      ['build: api/docker', path.join(dir, 'api', 'docker'), 'api/docker'],
      [`build: ${path.join(dir, 'web')}`, path.join(dir, 'web'), 'web'],
    ];
    for (const [line, context, contextRel] of contexts) {
      it(`resolves '${line}' inside the project`, () => {
        const b = parse(web(line)).services[0]?.build;
        assert.equal(b?.context, context);
        assert.equal(b?.contextRel, contextRel);
      });
    }

    it('accepts a Dockerfile given by an absolute path inside the context', () => {
      assert.equal(parse(web('build:', '  context: api', `  dockerfile: ${path.join(dir, 'api', 'docker', 'Dockerfile')}`)).services[0]?.build?.dockerfile, 'docker/Dockerfile');
    });

    it('uses a relative file name for where, as given relative to the project', () => {
      const nested = path.join(dir, 'deploy', 'compose.yml');
      assert.throws(() => parseCompose('services: {}\n', nested, dir), (err: SkiffError) => err.where === 'deploy/compose.yml:1');
    });

    it('reads an empty service settings value as a service without build or image', () => {
      rejects(y('services:', '  web:'), /service 'web' has neither build nor image/, 'docker-compose.yml:2', /add build: <folder> or image: <name>/);
    });
  });

  describe('YAML errors', () => {
    const cases: Array<[string, string, RegExp, string]> = [
      ['an unclosed flow sequence', y('services:', '  web:', '    ports: [80', '    image: x'), /^invalid YAML: /, 'docker-compose.yml:4'],
      ['bad indentation', y('services:', '  web:', '    image: x', '   build: .'), /^invalid YAML: /, 'docker-compose.yml:4'],
      ['a tab for indentation', y('services:', '\tweb:', '    image: x'), /^invalid YAML: /, 'docker-compose.yml:2'],
      ['a duplicate service key', y('services:', '  web:', '    image: a', '  web:', '    image: b'), /duplicate key 'web'/, 'docker-compose.yml:4'],
      ['a duplicate setting', y('services:', '  web:', '    image: a', '    restart: no', '    "image": b'), /duplicate key 'image'/, 'docker-compose.yml:5'],
      ['a duplicate top-level key', y('services:', '  web:', '    image: a', 'volumes: {}', 'volumes: {}'), /duplicate key 'volumes'/, 'docker-compose.yml:5'],
      ['a merge of a scalar', y('x-a: &a 1', 'services:', '  web:', '    <<: *a', '    image: x'), /^invalid YAML: /, 'docker-compose.yml:4'],
      ['a merge of a list of scalars', y('x-a: &a 1', 'services:', '  web:', '    image: x', '    <<: [*a]'), /^invalid YAML: /, 'docker-compose.yml:5'],
      ['an undefined alias', y('services:', '  web:', '    <<: *nope', '    image: x'), /^invalid YAML: /, 'docker-compose.yml:3'],
    ];
    for (const [name, text, message, where] of cases) {
      it(`reports ${name} with file:line`, () => rejects(text, message, where));
    }

    it('keeps the message to one line', () => {
      assert.throws(() => parse(y('services:', '  web: [')), (err: SkiffError) => !err.message.includes('\n') && err.where === 'docker-compose.yml:3');
    });
  });

  describe('top level', () => {
    const errors: Array<[string, string, RegExp, string, RegExp?]> = [
      ['an empty file', '', /the compose file is empty/, 'docker-compose.yml'],
      ['a comment-only file', '# nothing\n', /the compose file is empty/, 'docker-compose.yml'],
      ['a list at the top', '- a\n- b\n', /must be a mapping/, 'docker-compose.yml:1'],
      ['no services', y("version: '2'", 'volumes: {}'), /no services/, 'docker-compose.yml:1'],
      ['services: null', y("version: '2'", 'services:'), /no services/, 'docker-compose.yml:2'],
      ['empty services', y("version: '2'", 'services: {}'), /'services' is empty/, 'docker-compose.yml:2'],
      ['services as a list', y('services:', '  - web'), /'services' must be a mapping/, 'docker-compose.yml:1'],
      ['top-level secrets', y('services:', '  web: { image: x }', 'secrets:', '  s: { file: ./s }'), /top-level 'secrets' is not supported/, 'docker-compose.yml:3', /build secrets/],
      ['top-level configs', y('services:', '  web: { image: x }', 'configs:', '  c: { file: ./c }'), /top-level 'configs' is not supported/, 'docker-compose.yml:3'],
      ['include', y('include: [other.yml]', 'services:', '  web: { image: x }'), /'include' is not supported/, 'docker-compose.yml:1'],
      ['a version that is a list', y('version: [2]', 'services:', '  web: { image: x }'), /'version' must be a string/, 'docker-compose.yml:1'],
      ['volumes as a list', y('services:', '  web: { image: x }', 'volumes: [data]'), /top-level 'volumes' must be a mapping/, 'docker-compose.yml:3'],
      ['networks as a string', y('services:', '  web: { image: x }', 'networks: front'), /top-level 'networks' must be a mapping/, 'docker-compose.yml:3'],
      ['a volume with scalar settings', y('services:', '  web: { image: x }', 'volumes:', '  data: local'), /settings of volume 'data' must be a mapping/, 'docker-compose.yml:4'],
      ['an invalid volume name', y('services:', '  web: { image: x }', 'volumes:', '  "-data":'), /invalid volume name '-data'/, 'docker-compose.yml:4'],
      ['an invalid network name', y('services:', '  web: { image: x }', 'networks:', '  "my net":'), /invalid network name 'my net'/, 'docker-compose.yml:4'],
    ];
    for (const [name, text, message, where, hint] of errors) {
      it(`rejects ${name}`, () => rejects(text, message, where, hint));
    }

    it('suggests services for a misspelt services key', () => {
      rejects(y('servces:', '  web: { image: x }'), /no services/, 'docker-compose.yml:1', /did you mean 'services' instead of 'servces'/);
    });

    const versions = ["'2.4'", '2.1', '3', "'3.8'", ''];
    for (const v of versions) {
      it(`ignores version: ${v || '(empty)'}`, () => {
        assert.deepEqual(parse(y(`version: ${v}`, 'services:', '  web: { image: x }')).warnings, []);
      });
    }

    const warnings: Array<[string, string, string, string]> = [
      ['a misspelt key, with a suggestion', y('services:', '  web: { image: x }', 'volume:', '  data:'), "unknown top-level key 'volume' (did you mean 'volumes'?); it is ignored", 'docker-compose.yml:3'],
      ['an unknown key', y('services:', '  web: { image: x }', 'whatever: 1'), "unknown top-level key 'whatever'; it is ignored", 'docker-compose.yml:3'],
      ['name', y('name: mine', 'services:', '  web: { image: x }'), "top-level 'name' is ignored; the project name comes from the folder or --projectName", 'docker-compose.yml:1'],
    ];
    for (const [name, text, message, where] of warnings) {
      it(`warns about ${name}`, () => assert.deepEqual(parse(text).warnings, [{ message, where }]));
    }

    it('ignores x- keys silently', () => {
      const r = parse(y('x-defaults: &d', '  restart: always', 'services:', '  web:', '    <<: *d', '    image: x'));
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(r.services[0]?.config, { restart: 'always', image: 'x' });
    });
  });

  describe('services', () => {
    const names: Array<[string, boolean]> = [
      ['web', true], ['Web_1', true], ['a.b-c', true], ['1st', true],
      ['_web', false], ['-web', false], ['.web', false], ['my web', false], ['web/1', false], ['wéb', false],
    ];
    for (const [name, ok] of names) {
      it(`${ok ? 'accepts' : 'rejects'} the service name '${name}'`, () => {
        const text = y('services:', `  "${name}":`, '    image: x');
        if (ok) assert.equal(parse(text).services[0]?.name, name);
        else rejects(text, new RegExp(`invalid service name '${name.replace('.', '\\.')}'`), 'docker-compose.yml:2');
      });
    }

    it('rejects a service that is not a mapping', () => {
      rejects(y('services:', '  web: nginx'), /service 'web' must be a mapping/, 'docker-compose.yml:2');
    });

    it('rejects a service with neither build nor image, at the service line', () => {
      rejects(y('services:', '  db:', '    image: x', '  web:', '    restart: always'), /service 'web' has neither build nor image/, 'docker-compose.yml:4', /add build: <folder> or image: <name>/);
    });

    const unsupported: Array<[string, string, RegExp?]> = [
      ['env_file: .env', 'env_file', /environment/],
      ['env_file: [a.env]', 'env_file', /device never sees the file/],
      ['deploy: { replicas: 2 }', 'deploy'],
      ['links: [db]', 'links', /service name/],
      ['external_links: [other]', 'external_links'],
      ['secrets: [s]', 'secrets'],
      ['configs: [c]', 'configs'],
      ['container_name: web', 'container_name', /names containers itself/],
      ['credential_spec: { file: x }', 'credential_spec'],
      ['isolation: hyperv', 'isolation'],
      ['volumes_from: [db]', 'volumes_from', /named volume/],
      ['extends: { service: base }', 'extends', /anchor/],
      ['scale: 2', 'scale'],
      ['profiles: [debug]', 'profiles'],
      ['platform: linux/arm64', 'platform', /device type/],
      ['pull_policy: always', 'pull_policy'],
      ['blkio_config: { weight: 300 }', 'blkio_config'],
      ['cpu_count: 2', 'cpu_count'],
      ['cpu_percent: 50', 'cpu_percent'],
      ['memswap_limit: 1g', 'memswap_limit'],
      ['mem_swappiness: 10', 'mem_swappiness'],
      ['volume_driver: local', 'volume_driver'],
      ['storage_opt: { size: 1G }', 'storage_opt'],
    ];
    for (const [line, key, hint] of unsupported) {
      it(`rejects '${line}' with the line of the key`, () => {
        rejects(web('image: x', 'restart: always', line), new RegExp(`'${key}' in service 'web' is not supported on devices`), 'docker-compose.yml:5', hint ?? /./);
      });
    }

    const typos: Array<[string, string]> = [
      ['enviroment', 'environment'],
      ['environmnet', 'environment'],
      ['port', 'ports'],
      ['volume', 'volumes'],
      ['lables', 'labels'],
      ['comand', 'command'],
      ['restrat', 'restart'],
      ['depend_on', 'depends_on'],
      ['privilege', 'privileged'],
      ['netwoks', 'networks'],
    ];
    for (const [typo, suggestion] of typos) {
      it(`warns about '${typo}' and suggests '${suggestion}'`, () => {
        const r = parse(web('image: x', `${typo}: [a]`));
        assert.deepEqual(r.warnings, [{ message: `unknown key '${typo}' in service 'web' (did you mean '${suggestion}'?); it is ignored`, where: 'docker-compose.yml:4' }]);
        assert.deepEqual(r.services[0]?.config, { image: 'x' }, 'unknown keys are dropped');
      });
    }

    it('warns without a suggestion when nothing is close', () => {
      assert.deepEqual(parse(web('image: x', 'completely_unknown: 1')).warnings, [{ message: "unknown key 'completely_unknown' in service 'web'; it is ignored", where: 'docker-compose.yml:4' }]);
    });

    it('drops x- keys from config without a warning', () => {
      const r = parse(web('image: x', 'x-owner: me'));
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(r.services[0]?.config, { image: 'x' });
    });

    it('points at the anchor for a problem merged in with <<', () => {
      rejects(y('x-base: &base', '  env_file: .env', 'services:', '  web:', '    <<: *base', '    image: x'), /'env_file' in service 'web'/, 'docker-compose.yml:2');
    });

    it('keeps every supported key in config', () => {
      const c = config(web(
        'image: x',
        'command: ["node", "index.js", 3]',
        'entrypoint: /init',
        'expose: [80, "53/udp"]',
        'tmpfs: /run',
        'network_mode: bridge',
        'cap_add: [SYS_ADMIN]',
        'cap_drop: [NET_RAW]',
        'devices: ["/dev/ttyUSB0:/dev/ttyUSB0"]',
        'device_cgroup_rules: ["c 188:* rmw"]',
        'healthcheck: { test: ["CMD", "true"], interval: 30s, retries: 3 }',
        'stop_signal: SIGINT',
        'stop_grace_period: 1m30s',
        'working_dir: /app',
        'user: 1000',
        'sysctls: [net.core.somaxconn=1024]',
        'ulimits: { nofile: { soft: 1024, hard: 2048 }, nproc: 65535 }',
        'shm_size: 64m',
        'mem_limit: 1g',
        'mem_reservation: 536870912',
        'cpu_shares: 512',
        'cpuset: "0-1"',
        'cpus: "1.5"',
        'pids_limit: 100',
        'cgroup_parent: skiff',
        'dns: 8.8.8.8',
        'dns_search: [example.com]',
        'dns_opt: [use-vc]',
        'extra_hosts: { db: 10.0.0.2 }',
        'hostname: box',
        'domainname: local',
        'read_only: false',
        'security_opt: [no-new-privileges]',
        'ipc: host',
        'pid: host',
        'init: true',
        'oom_kill_disable: true',
        'oom_score_adj: -500',
        'stdin_open: true',
        'tty: true',
        'group_add: [dialout, 20]',
        'mac_address: 02:42:ac:11:65:43',
        'logging: { driver: journald, options: { tag: 3 } }',
        'runtime: nvidia',
        'userns_mode: host',
      ));
      assert.deepEqual(c, {
        image: 'x',
        command: ['node', 'index.js', '3'],
        entrypoint: '/init',
        expose: ['80', '53/udp'],
        tmpfs: ['/run'],
        network_mode: 'bridge',
        cap_add: ['SYS_ADMIN'],
        cap_drop: ['NET_RAW'],
        devices: ['/dev/ttyUSB0:/dev/ttyUSB0'],
        device_cgroup_rules: ['c 188:* rmw'],
        healthcheck: { test: ['CMD', 'true'], interval: '30s', retries: 3 },
        stop_signal: 'SIGINT',
        stop_grace_period: '1m30s',
        working_dir: '/app',
        user: '1000',
        sysctls: { 'net.core.somaxconn': '1024' },
        ulimits: { nofile: { soft: 1024, hard: 2048 }, nproc: 65535 },
        shm_size: '64m',
        mem_limit: '1g',
        mem_reservation: 536870912,
        cpu_shares: 512,
        cpuset: '0-1',
        cpus: 1.5,
        pids_limit: 100,
        cgroup_parent: 'skiff',
        dns: ['8.8.8.8'],
        dns_search: ['example.com'],
        dns_opt: ['use-vc'],
        extra_hosts: ['db:10.0.0.2'],
        hostname: 'box',
        domainname: 'local',
        read_only: false,
        security_opt: ['no-new-privileges'],
        ipc: 'host',
        pid: 'host',
        init: true,
        oom_kill_disable: true,
        oom_score_adj: -500,
        stdin_open: true,
        tty: true,
        group_add: ['dialout', '20'],
        mac_address: '02:42:ac:11:65:43',
        logging: { driver: 'journald', options: { tag: '3' } },
        runtime: 'nvidia',
        userns_mode: 'host',
      });
    });

    const badValues: Array<[string, RegExp, number?]> = [
      ['privileged: yes', /'privileged' in service 'web' must be true or false/],
      ['tty: 1', /'tty' in service 'web' must be true or false/],
      ['command: { a: b }', /'command' .* must be a string or a list/],
      ['cap_add: SYS_ADMIN', /'cap_add' .* must be a list/],
      ['devices: [{ a: 1 }]', /'devices' .* must be a string/],
      ['cpu_shares: 1.5', /'cpu_shares' .* whole number/],
      ['cpus: lots', /'cpus' .* number/],
      ['mem_limit: 1 gigabyte', /'mem_limit' .* size/],
      ['shm_size: -1', /'shm_size' .* size/],
      ['stop_grace_period: soon', /'stop_grace_period' .* duration/],
      ['oom_score_adj: 2000', /between -1000 and 1000/],
      ['pid: "service:db"', /pid 'service:db' .* not supported/],
      ['ulimits: { nofile: { soft: 1 } }', /ulimit 'nofile'/],
      ['healthcheck: { test: 1 }', /healthcheck test/],
      ['healthcheck: { interval: often }', /'healthcheck\.interval' .* duration/],
      ['healthcheck: "CMD true"', /'healthcheck' .* mapping/],
      ['tmpfs: [run]', /tmpfs mount 'run' .* absolute path/],
      ['logging: journald', /'logging' .* mapping/],
      ['sysctls: { a: { b: 1 } }', /the value of 'a' must be a string/],
      // What the device's engine would refuse or drop, refused here at its line.
      ['mem_limit: 1m', /'mem_limit' .* at least 6m/],
      ['cpu_shares: 1', /'cpu_shares' .* between 2 and 262144/],
      ['cpu_quota: 10', /'cpu_quota' .* at least 1000/],
      ['cpus: 0', /'cpus' .* number/],
      ['cpuset: "0,a"', /'cpuset' .* must look like 0-1,3/],
      ['pids_limit: -2', /'pids_limit' .* -1 \(no limit\) or more/],
      ['ipc: "service:db"', /ipc 'service:db' in service 'web' is not supported on devices/],
      ['userns_mode: private', /userns_mode 'private' .* not supported/],
      ['extra_hosts: ["db:nowhere"]', /invalid extra_hosts entry .* 'nowhere' in 'db:nowhere' is not an IP address/],
      ['extra_hosts: ["10.0.0.1"]', /invalid extra_hosts entry/],
      ['mac_address: 02:42', /'mac_address' .* must look like/],
      ['working_dir: app', /'working_dir' .* absolute path/],
      ['stop_signal: TERM', /'stop_signal' .* must look like SIGTERM/],
      ['devices: [ttyUSB0]', /invalid devices entry 'ttyUSB0' .* host path must be absolute/],
      ['device_cgroup_rules: ["c 188 rmw"]', /invalid device_cgroup_rules entry/],
      ['ulimits: { nofile: { soft: 2048, hard: 1024 } }', /soft 2048 is above hard 1024/],
      ['ulimits: { NoFile: 1 }', /unknown ulimit 'NoFile'/],
      ['sysctls: [somaxconn=1]', /'somaxconn' .* is not a sysctl name/],
      ['healthcheck: { test: [CMD, "true"], start_interval: 1s }', /healthcheck.start_interval .* not supported/],
      ['logging: { driver: local, format: x }', /logging.format .* not supported/],
      ['hostname: "my box"', /'hostname' .* host name/],
    ];
    it('rejects an empty image', () => rejects(web('restart: always', 'image: ""'), /invalid image name ''/, 'docker-compose.yml:4'));
    it('rejects an image that is not a string', () => rejects(web('restart: always', 'image: [x]'), /'image' in service 'web' must be a string/, 'docker-compose.yml:4'));

    for (const [line, message] of badValues) {
      it(`rejects '${line}'`, () => rejects(web('image: x', line), message, 'docker-compose.yml:4'));
    }

    const combinations: Array<[string[], RegExp, string]> = [
      [['cpus: 0.5', 'cpu_quota: 50000'], /sets both cpus and cpu_quota/, 'docker-compose.yml:5'],
      [['mem_limit: 64m', 'mem_reservation: 128m'], /mem_reservation of service 'web' is above its mem_limit/, 'docker-compose.yml:5'],
      [['network_mode: host', 'sysctls: { net.core.somaxconn: 1024 }'], /sets net.\* sysctls but uses the host's network/, 'docker-compose.yml:5'],
    ];
    for (const [lines, message, where] of combinations) {
      it(`rejects ${lines.join(' with ')}`, () => rejects(web('image: x', ...lines), message, where));
    }

    it('reports a bad item at its own line', () => {
      rejects(web('image: x', 'extra_hosts:', '  - db:10.0.0.2', '  - cache:x'), /'x' in 'cache:x' is not an IP address/, 'docker-compose.yml:6');
      rejects(web('image: x', 'ulimits:', '  nofile: 1024', '  nproc: { soft: 2 }'), /ulimit 'nproc'/, 'docker-compose.yml:6');
      rejects(web('image: x', 'logging:', '  driver: local', '  options:', '    max-size: [1]'), /the value of 'max-size'/, 'docker-compose.yml:7');
    });

    it('carries extra_hosts as host:ip, whichever form compose used', () => {
      assert.deepEqual(config(web('image: x', 'extra_hosts: ["a=10.0.0.1", "b:::1", "c:host-gateway"]')).extra_hosts, ['a:10.0.0.1', 'b:::1', 'c:host-gateway']);
    });

    const restarts: Array<[string, boolean]> = [
      ['no', true], ['"no"', true], ['always', true], ['on-failure', true], ['on-failure:5', true], ['unless-stopped', true],
      ['never', false], ['on-failure:x', false], ['Always', false], ['false', false], ['""', false],
    ];
    for (const [value, ok] of restarts) {
      it(`${ok ? 'accepts' : 'rejects'} restart: ${value}`, () => {
        const text = web('image: x', `restart: ${value}`);
        if (ok) assert.equal(typeof config(text).restart, 'string');
        else rejects(text, value === 'false' ? /'restart' .* must be a string/ : /invalid restart policy/, 'docker-compose.yml:4', value === 'false' ? undefined : /on-failure/);
      });
    }
  });

  describe('environment, labels and build args', () => {
    const forms: Array<[string, string[], Record<string, string>]> = [
      ['a list', ['- A=1', '- B=two words', '- C=', '- D', '- E=x=y'], { A: '1', B: 'two words', C: '', D: '', E: 'x=y' }],
      ['a mapping', ['A: 1', 'B: 1.5', 'C: true', 'D: null', 'E:', 'F: "007"', 'G: text'], { A: '1', B: '1.5', C: 'true', D: '', E: '', F: '007', G: 'text' }],
      ['an empty mapping', [], {}],
    ];
    for (const key of ['environment', 'labels']) {
      for (const [name, lines, expected] of forms) {
        it(`reads ${key} as ${name}`, () => {
          const text = lines.length ? web('image: x', `${key}:`, ...lines.map((l) => `  ${l}`)) : web('image: x', `${key}: {}`);
          assert.deepEqual(config(text)[key], expected);
        });
      }
      it(`rejects a ${key} list item that is not a string, at its line`, () => {
        rejects(web('image: x', `${key}:`, '  - A=1', '  - { B: 2 }'), /list items must be strings/, 'docker-compose.yml:6');
      });
      it(`rejects a ${key} item without a name`, () => {
        rejects(web('image: x', `${key}:`, '  - =1'), /has no name/, 'docker-compose.yml:5');
      });
      it(`rejects a nested ${key} value, at its line`, () => {
        rejects(web('image: x', `${key}:`, '  A: 1', '  B: [1, 2]'), /the value of 'B' must be a string, number or boolean/, 'docker-compose.yml:6');
      });
      it(`rejects ${key} as a string`, () => {
        rejects(web('image: x', `${key}: A=1`), /must be a mapping or a list of NAME=value/, 'docker-compose.yml:4');
      });
    }

    it('reads build args as a mapping', () => {
      assert.deepEqual(parse(web('build:', '  context: .', '  args:', '    N: 3', '    OFF: false', '    E:')).services[0]?.build?.args, { N: '3', OFF: 'false', E: '' });
    });

    it('rejects a bad build arg at its line', () => {
      rejects(web('build:', '  context: .', '  args:', '    - A=1', '    - 5'), /list items must be strings/, 'docker-compose.yml:7');
    });
  });

  describe('build', () => {
    const gitUrls = [
      'https://github.com/balena-io/x.git',
      'http://example.com/repo',
      'git@github.com:balena-io/x.git',
      'git://example.com/x',
      'ssh://git@example.com/x',
      'github.com/balena-io/x',
      'repo.git#main',
      'https://github.com/balena-io/x.git#v1:sub',
    ];
    for (const url of gitUrls) {
      it(`rejects the git context '${url}'`, () => {
        rejects(web(`build: "${url}"`), /build contexts from git URLs are not supported; clone the repository into the project/, 'docker-compose.yml:3');
        rejects(web('build:', `  context: "${url}"`), /git URLs are not supported/, 'docker-compose.yml:4');
      });
    }

    const errors: Array<[string, string[], RegExp, string, RegExp?]> = [
      ['a missing context folder', ['build:', '  context: ./nope'], /build context '.\/nope' of service 'web' does not exist/, 'docker-compose.yml:4', /create the folder/],
      ['a missing context folder outside the project', ['build: ../nope'], /build context '..\/nope' of service 'web' does not exist/, 'docker-compose.yml:3', /create the folder/],
      ['a missing context folder outside the project (mapping)', ['build:', '  context: ../nope', '  dockerfile: app/Dockerfile'], /build context '..\/nope' of service 'web' does not exist/, 'docker-compose.yml:4'],
      ['a context that is a file', ['build: notes.txt'], /is not a folder/, 'docker-compose.yml:3'],
      ['an empty context', ['build: ""'], /must be a folder/, 'docker-compose.yml:3'],
      ['build as a list', ['build: [web]'], /'build' in service 'web' must be a folder or a mapping/, 'docker-compose.yml:3'],
      ['a dockerfile outside the context', ['build:', '  context: api', '  dockerfile: ../Dockerfile'], /dockerfile '..\/Dockerfile' of service 'web' must be inside its build context 'api'/, 'docker-compose.yml:5'],
      ['an absolute dockerfile outside the context', ['build:', '  context: web', `  dockerfile: ${path.join(dir, 'Dockerfile')}`], /must be inside its build context/, 'docker-compose.yml:5'],
      ['a dockerfile that is the context', ['build:', '  context: web', '  dockerfile: .'], /must be inside its build context/, 'docker-compose.yml:5'],
      ['a dockerfile that is not a string', ['build:', '  context: web', '  dockerfile: [a]'], /'build.dockerfile' in service 'web' must be a string/, 'docker-compose.yml:5'],
      ['a target that is not a string', ['build:', '  context: web', '  target: 1'], /'build.target' .* must be a string/, 'docker-compose.yml:5'],
      ['cache_from as a mapping', ['build:', '  context: web', '  cache_from: { a: b }'], /'build.cache_from' .* string or a list/, 'docker-compose.yml:5'],
      ['build.network', ['build:', '  context: web', '  network: host'], /build.network in service 'web' is not supported/, 'docker-compose.yml:5'],
      ['build.isolation', ['build:', '  context: web', '  isolation: hyperv'], /build.isolation .* not supported/, 'docker-compose.yml:5'],
      ['build.secrets', ['build:', '  context: web', '  secrets: [s]'], /build.secrets .* not supported/, 'docker-compose.yml:5', /balena.yml/],
      ['build.dockerfile_inline', ['build:', '  context: web', '  dockerfile_inline: FROM x'], /build.dockerfile_inline .* not supported/, 'docker-compose.yml:5'],
      ['build.ssh', ['build:', '  context: web', '  ssh: [default]'], /build.ssh .* not supported/, 'docker-compose.yml:5'],
      ['build.additional_contexts', ['build:', '  context: web', '  additional_contexts: { a: ../x }'], /build.additional_contexts .* not supported/, 'docker-compose.yml:5'],
    ];
    for (const [name, lines, message, where, hint] of errors) {
      it(`rejects ${name}`, () => rejects(web(...lines), message, where, hint));
    }

    // Monorepos keep the compose file in a sub-folder and build from the repository root, as docker compose allows.
    const outside: Array<[string, string[], string, string, string?]> = [
      ['a context above the project', ['build: ..'], root, '..'],
      ['a context above the project with a Dockerfile in a sub-folder', ['build:', '  context: ../', '  dockerfile: project/web/Dockerfile'], root, '..', 'project/web/Dockerfile'],
      ['a context escaping through a subfolder', ['build: web/../../outside'], path.join(root, 'outside'), '../outside'],
      ['an absolute context outside the project', [`build: ${path.join(root, 'outside')}`], path.join(root, 'outside'), '../outside'],
    ];
    for (const [name, lines, context, contextRel, dockerfile] of outside) {
      it(`accepts ${name}`, () => {
        const b = parse(web(...lines)).services[0]?.build;
        assert.equal(b?.context, context);
        assert.equal(b?.contextRel, contextRel);
        assert.equal(b?.dockerfile, dockerfile);
      });
    }

    it('does not check that the Dockerfile exists', () => {
      assert.equal(parse(web('build:', '  context: web', '  dockerfile: Dockerfile.missing')).services[0]?.build?.dockerfile, 'Dockerfile.missing');
    });

    it('reads cache_from given as one string', () => {
      assert.deepEqual(parse(web('build:', '  context: web', '  cache_from: repo/web')).services[0]?.build?.cacheFrom, ['repo/web']);
    });

    const ignored = ['extra_hosts: [a:1.2.3.4]', 'shm_size: 1g'];
    for (const line of ignored) {
      const key = line.split(':')[0] ?? '';
      it(`warns that build.${key} is ignored`, () => {
        assert.deepEqual(parse(web('build:', '  context: web', `  ${line}`)).warnings, [
          { message: `build.${key} in service 'web' is not used by skiff's builder; it is ignored`, where: 'docker-compose.yml:5' },
        ]);
      });
    }

    it('warns about an unknown build key with a suggestion', () => {
      assert.deepEqual(parse(web('build:', '  context: web', '  dockerfle: Dockerfile')).warnings, [
        { message: "unknown key 'build.dockerfle' in service 'web' (did you mean 'dockerfile'?); it is ignored", where: 'docker-compose.yml:5' },
      ]);
    });
  });

  describe('volumes', () => {
    const withVolumes = (...lines: string[]): string => y('services:', '  web:', '    image: x', '    volumes:', ...lines.map((l) => `      - ${l}`), 'volumes:', '  data:', '  logs:');
    const valid: Array<[string, string]> = [
      ['data:/data', 'data:/data'],
      ['data:/data:rw', 'data:/data'],
      ['data:/data:ro', 'data:/data:ro'],
      ['/cache', '/cache'],
      ['{ type: volume, source: logs, target: /var/log }', 'logs:/var/log'],
      ['{ type: volume, source: logs, target: /var/log, read_only: true }', 'logs:/var/log:ro'],
      ['{ type: volume, target: /anon }', '/anon'],
    ];
    for (const [spec, normalised] of valid) {
      it(`normalises ${spec} to '${normalised}'`, () => {
        assert.deepEqual(config(withVolumes(spec)).volumes, [normalised]);
      });
    }

    it('moves long-syntax tmpfs mounts into tmpfs', () => {
      const c = config(y('services:', '  web:', '    image: x', '    tmpfs: /run', '    volumes:', '      - type: tmpfs', '        target: /tmp', '        tmpfs: { size: 1000000 }', '      - data:/data', 'volumes:', '  data:'));
      assert.deepEqual(c.volumes, ['data:/data']);
      assert.deepEqual(c.tmpfs, ['/run', '/tmp:size=1000000']);
    });

    const binds = ['/srv/data:/data', './data:/data', '../data:/data', '~/data:/data', '.:/app', '/var/run/docker.sock:/var/run/docker.sock:ro'];
    for (const spec of binds) {
      it(`rejects the bind mount '${spec}'`, () => {
        rejects(withVolumes('data:/data', `"${spec}"`), new RegExp(`bind mounts are not supported on devices: '${spec.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}'`), 'docker-compose.yml:6', /named volume, or the io\.balena\.features\.\* labels/);
      });
    }

    const errors: Array<[string, RegExp, RegExp?]> = [
      ['other:/data', /volume 'other' used by service 'web' is not declared in the top-level volumes/, /'other:'/],
      ['data', /needs a target path/],
      ['data:relative', /must be an absolute path/],
      ['data:/data:z', /invalid volume mode 'z'/],
      ['data:/data:ro:extra', /invalid volume 'data:\/data:ro:extra'/],
      ['"bad name:/data"', /invalid volume name 'bad name'/],
      ['{ type: bind, source: ./x, target: /x }', /bind mounts are not supported on devices: '.\/x:\/x'/],
      ['{ type: volume, source: /srv, target: /x }', /bind mounts are not supported/],
      ['{ type: npipe, source: x, target: /x }', /volume type 'npipe' .* not supported/],
      ['{ source: data, target: /x }', /volume type 'undefined'/],
      ['{ type: volume, source: data }', /needs an absolute target path/],
      ['{ type: volume, source: nope, target: /x }', /volume 'nope' .* not declared/],
      ['{ type: volume, target: /x, read_only: true }', /anonymous volume cannot be read-only/],
      ['42', /must be strings such as data:\/data/],
    ];
    for (const [spec, message, hint] of errors) {
      it(`rejects ${spec}`, () => rejects(withVolumes('data:/data', spec), message, 'docker-compose.yml:6', hint));
    }

    it('rejects volumes that are not a list', () => {
      rejects(web('image: x', 'volumes: data:/data'), /'volumes' in service 'web' must be a list/, 'docker-compose.yml:4');
    });
  });

  describe('ports', () => {
    const valid: Array<[string, string]> = [
      ['80', '80'],
      ['"80"', '80'],
      ['"8080:80"', '8080:80'],
      ['8080:80', '8080:80'],
      ['"8000-8010:8000-8010"', '8000-8010:8000-8010'],
      ['"9000-9100:80"', '9000-9100:80'],
      ['"3000-3005"', '3000-3005'],
      ['"127.0.0.1:8080:80"', '127.0.0.1:8080:80'],
      ['"127.0.0.1::80"', '127.0.0.1::80'],
      ['"127.0.0.1:8080:80/udp"', '127.0.0.1:8080:80/udp'],
      ['"[::1]:8080:80"', '[::1]:8080:80'],
      ['"53:53/udp"', '53:53/udp'],
      ['"65535:1/tcp"', '65535:1/tcp'],
      ['{ target: 80 }', '80'],
      ['{ target: 80, published: 8080 }', '8080:80'],
      ['{ target: 53, published: "5353", protocol: udp }', '5353:53/udp'],
      ['{ target: 80, published: 8080, host_ip: 127.0.0.1, mode: host }', '127.0.0.1:8080:80'],
      ['{ target: 80, host_ip: "::1" }', '[::1]::80'],
    ];
    for (const [spec, normalised] of valid) {
      it(`normalises ${spec} to '${normalised}'`, () => {
        assert.deepEqual(config(web('image: x', 'ports:', '  - "1"', `  - ${spec}`)).ports, ['1', normalised]);
      });
    }

    const invalid: Array<[string, RegExp]> = [
      ['0', /port 0 is out of range/],
      ['"65536"', /port 65536 is out of range/],
      ['"8080:70000"', /port 70000 is out of range/],
      ['"http"', /'http' is not a port number/],
      ['"80/icmp"', /unknown protocol 'icmp'/],
      ['"1.2.3:80:80"', /invalid host IP '1.2.3'/],
      ['"300.1.1.1:80:80"', /invalid host IP/],
      ['"1:2:3:4"', /too many colons|invalid host IP/],
      ['"8010-8000:80"', /backwards/],
      ['"8000-8002:80-81"', /ranges differ in size/],
      ['":80"', /empty published port/],
      ['"[zz]:80:80"', /invalid IPv6 address/],
      ['"80.5"', /not a port number/],
      ['{ published: 80 }', /target is required/],
      ['{ target: 0 }', /out of range/],
      ['{ target: 80, protocol: icmp }', /unknown protocol/],
      ['[80]', /must be strings such as "8080:80"/],
    ];
    for (const [spec, message] of invalid) {
      it(`rejects ${spec} at its line`, () => {
        rejects(web('image: x', 'ports:', '  - "1"', `  - ${spec}`), message, 'docker-compose.yml:6');
      });
    }

    it('rejects ports that are not a list', () => {
      rejects(web('image: x', 'ports: "80:80"'), /'ports' in service 'web' must be a list/, 'docker-compose.yml:4');
    });

    it('warns that ports do nothing with network_mode: host', () => {
      assert.deepEqual(parse(web('image: x', 'network_mode: host', 'ports: [80]')).warnings, [
        { message: "ports of service 'web' have no effect with network_mode: host", where: 'docker-compose.yml:5' },
      ]);
    });

    const expose: Array<[string, RegExp | string]> = [
      ['80', '80'], ['"8000-8010"', '8000-8010'], ['"53/udp"', '53/udp'],
      ['0', /out of range/], ['"80:80"', /not a port number/], ['"80/icmp"', /unknown protocol/],
    ];
    for (const [spec, expected] of expose) {
      it(`${typeof expected === 'string' ? 'accepts' : 'rejects'} expose: [${spec}]`, () => {
        const text = web('image: x', 'expose:', `  - ${spec}`);
        if (typeof expected === 'string') assert.deepEqual(config(text).expose, [expected]);
        else rejects(text, expected, 'docker-compose.yml:5');
      });
    }
  });

  describe('depends_on', () => {
    const two = (...lines: string[]): string => y('services:', '  db:', '    image: postgres', '  web:', '    image: x', ...lines.map((l) => `    ${l}`));

    it('reads the list form', () => assert.deepEqual(config(two('depends_on: [db]')).depends_on, ['db']));
    it('reads the mapping form', () => assert.deepEqual(config(two('depends_on:', '  db:', '    condition: service_started')).depends_on, ['db']));
    it('reads a mapping without settings', () => assert.deepEqual(config(two('depends_on:', '  db:')).depends_on, ['db']));

    const conditions = ['service_healthy', 'service_completed_successfully'];
    for (const condition of conditions) {
      it(`warns that condition ${condition} is treated as started`, () => {
        const r = parse(two('depends_on:', '  db:', `    condition: ${condition}`));
        assert.deepEqual(r.services[1]?.config.depends_on, ['db']);
        assert.deepEqual(r.warnings, [{ message: `devices only wait for 'db' to start (condition ${condition} is treated as service_started)`, where: 'docker-compose.yml:8' }]);
      });
    }

    const errors: Array<[string[], RegExp, string]> = [
      [['depends_on: [db, cache]'], /service 'web' depends on unknown service 'cache'/, 'docker-compose.yml:6'],
      [['depends_on:', '  - db', '  - cache'], /unknown service 'cache'/, 'docker-compose.yml:8'],
      [['depends_on:', '  cache: { condition: service_started }'], /unknown service 'cache'/, 'docker-compose.yml:7'],
      [['depends_on: [web]'], /service 'web' depends on itself/, 'docker-compose.yml:6'],
      [['depends_on:', '  db:', '    condition: whenever'], /unknown depends_on condition 'whenever'/, 'docker-compose.yml:8'],
      [['depends_on: db'], /must be a list of service names or a mapping/, 'docker-compose.yml:6'],
    ];
    for (const [lines, message, where] of errors) {
      it(`rejects ${lines.join(' ')}`, () => rejects(two(...lines), message, where));
    }

    it('rejects a dependency cycle', () => {
      rejects(y(
        'services:',
        '  a:',
        '    image: x',
        '    depends_on: [b]',
        '  b:',
        '    image: x',
        '    depends_on: [c]',
        '  c:',
        '    image: x',
        '    depends_on: [a]',
      ), /dependency cycle: a -> b -> c -> a/, 'docker-compose.yml:10', /remove one/);
    });


    it('accepts a diamond', () => {
      const r = parse(y('services:', '  a: { image: x, depends_on: [b, c] }', '  b: { image: x, depends_on: [d] }', '  c: { image: x, depends_on: [d] }', '  d: { image: x }'));
      assert.equal(r.services.length, 4);
    });
  });

  describe('networks', () => {
    const net = (...lines: string[]): string => y('services:', '  db:', '    image: x', '  web:', '    image: x', ...lines.map((l) => `    ${l}`), 'networks:', '  front:', '  back: { driver: bridge }');

    it('accepts a declared network as a list', () => assert.deepEqual(config(net('networks: [front]')).networks, ['front']));
    it('accepts the mapping form with aliases', () => {
      assert.deepEqual(config(net('networks:', '  back:', '    aliases: [api]')).networks, { back: { aliases: ['api'] } });
      assert.deepEqual(config(net('networks:', '  back:')).networks, { back: {} });
    });

    const modes: Array<[string, RegExp | null]> = [
      ['host', null], ['bridge', null], ['none', null],
      // The agent creates a container before it knows the other service's container: refused, not dropped.
      ['"service:db"', /network_mode 'service:db' is not supported on devices/],
      ['"container:abc"', /network_mode 'container:abc' is not supported on devices/],
      ['front', /network_mode 'front' is not supported/],
    ];
    for (const [mode, error] of modes) {
      it(`${error ? 'rejects' : 'accepts'} network_mode: ${mode}`, () => {
        const text = net(`network_mode: ${mode}`);
        if (error) rejects(text, error, 'docker-compose.yml:6');
        else assert.equal(config(text).network_mode, mode.replace(/"/g, ''));
      });
    }

    const errors: Array<[string[], RegExp, string]> = [
      [['networks: [middle]'], /network 'middle' used by service 'web' is not declared in the top-level networks/, 'docker-compose.yml:6'],
      [['networks:', '  - middle'], /network 'middle'/, 'docker-compose.yml:7'],
      // The engine (API 1.41) attaches a new container to one network: a second would be dropped.
      [['networks:', '  - front', '  - back'], /service 'web' joins 2 networks; a device attaches each service to one/, 'docker-compose.yml:8'],
      [['networks: [front, default]'], /joins 2 networks/, 'docker-compose.yml:6'],
      [['networks:', '  front:', '    ipv4_address: 172.16.0.9'], /network setting 'ipv4_address' of service 'web' is not supported on devices/, 'docker-compose.yml:8'],
      [['networks:', '  front:', '    aliases: ["bad alias"]'], /invalid alias 'bad alias'/, 'docker-compose.yml:8'],
      [['networks:', '  middle:', '    aliases: [x]'], /network 'middle'/, 'docker-compose.yml:7'],
      [['networks:', '  front: alias'], /settings of network 'front' .* must be a mapping/, 'docker-compose.yml:7'],
      [['networks: front'], /must be a list of names or a mapping/, 'docker-compose.yml:6'],
      [['network_mode: host', 'networks: [front]'], /sets both network_mode and networks/, 'docker-compose.yml:6'],
    ];
    for (const [lines, message, where] of errors) {
      it(`rejects ${lines.join(' ')}`, () => rejects(net(...lines), message, where));
    }

    it('accepts default without a top-level networks key', () => {
      assert.deepEqual(config(web('image: x', 'networks: [default]')).networks, ['default']);
    });
  });

  describe('variable substitution', () => {
    // The full set of cases is in compose-interpolation.test.ts; this checks the old exemptions are gone.
    it('resolves ${VAR} before validation and no longer warns that devices do not substitute', () => {
      const env = { TAG: 'v2', B: 'b', PORT: '8080', VOL: 'data', PRIV: 'true', MEM: '512m' };
      const r = parseCompose(y(
        'services:',
        '  web:',
        '    image: "repo/app:${TAG:-latest}"',
        '    environment:',
        '      A: $B',
        '      B: "${B}"',
        '    ports: ["${PORT}:80"]',
        '    volumes: ["${VOL}:/data"]',
        '    privileged: ${PRIV}',
        '    mem_limit: ${MEM}',
        '    restart: ${RESTART:-always}',
        '    labels: [cost=$$5]',
        'volumes:',
        '  data:',
      ), file, dir, env);
      const c = r.services[0]?.config;
      assert.equal(r.services[0]?.image, 'repo/app:v2');
      assert.deepEqual(c?.environment, { A: 'b', B: 'b' });
      assert.deepEqual(c?.ports, ['8080:80']);
      assert.deepEqual(c?.volumes, ['data:/data']);
      assert.equal(c?.privileged, true);
      assert.equal(c?.mem_limit, '512m');
      assert.equal(c?.restart, 'always');
      assert.deepEqual(c?.labels, { cost: '$5' }, '$$ is the escape for a literal $');
      assert.deepEqual(r.warnings, []);
    });

    it('validates the substituted value: an unresolvable port is refused at its line', () => {
      rejects(web('image: x', 'ports: ["${PORT}:80"]'), /invalid port ':80' in service 'web': empty published port/, 'docker-compose.yml:4');
    });
  });

  it('reports every error as a SkiffError with code project and a file:line', () => {
    const samples = [web('image: x', 'env_file: a'), web('build: ../nope'), web('image: x', 'ports: ["0"]'), 'services: [\n'];
    for (const text of samples) {
      assert.throws(() => parse(text), (err: unknown) => err instanceof SkiffError && err.code === 'project' && /^docker-compose\.yml:\d+$/.test(err.where ?? ''));
    }
  });
});
