import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseCompose, type ComposeParseResult } from '../../src/lib/project/compose.js';
import { loadProject } from '../../src/lib/project/project.js';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { scratchDir } from '../support/tmp.js';

const dir = scratchDir('skiff-compose-vars-');
mkdirSync(path.join(dir, 'web'));
const file = path.join(dir, 'docker-compose.yml');

/** Joins lines, so the line numbers in the expectations can be counted from the array. */
const y = (...lines: string[]): string => `${lines.join('\n')}\n`;
/** One service `web` whose settings are the given lines (from line 3 on). */
const web = (...lines: string[]): string => y('services:', '  web:', ...lines.map((l) => `    ${l}`));
const parse = (text: string, env: Record<string, string> = {}): ComposeParseResult => parseCompose(text, file, dir, env);
const config = (text: string, env: Record<string, string> = {}): Record<string, unknown> => ({ ...parse(text, env).services[0]?.config });

function rejects(text: string, env: Record<string, string>, message: RegExp, where: string, hint?: RegExp): SkiffError {
  let caught: SkiffError | undefined;
  assert.throws(() => parse(text, env), (err: unknown) => {
    assert.ok(err instanceof SkiffError, `expected a SkiffError, got ${String(err)}`);
    assert.equal(err.code, 'project');
    assert.match(err.message, message);
    assert.equal(err.where, where);
    if (hint) assert.match(err.hint ?? '', hint);
    caught = err;
    return true;
  });
  assert.ok(caught);
  return caught;
}

describe('parseCompose with variables', () => {
  describe('the examples from the issue', () => {
    const example = web('image: x', 'environment:', '  - MODE=${MODE:-prod}', 'ports: ["${RELAY_PORT:-443}:443"]');

    it('uses the defaults when nothing is set', () => {
      assert.deepEqual(config(example), { image: 'x', environment: { MODE: 'prod' }, ports: ['443:443'] });
    });
    it('uses the values that are set, and the default for a set-but-empty one with :-', () => {
      assert.deepEqual(config(example, { MODE: 'dev', RELAY_PORT: '8443' }), { image: 'x', environment: { MODE: 'dev' }, ports: ['8443:443'] });
      assert.deepEqual(config(example, { RELAY_PORT: '' }).ports, ['443:443']);
    });
    it('validates the substituted port before anything is built, at its line', () => {
      rejects(example, { RELAY_PORT: '70000' }, /invalid port '70000:443' in service 'web': port 70000 is out of range/, 'docker-compose.yml:6');
      rejects(example, { RELAY_PORT: 'https' }, /invalid port 'https:443'/, 'docker-compose.yml:6');
    });
    it('points an unquoted ${VAR} inside [ ] at quoting it (YAML itself refuses the braces)', () => {
      rejects(web('image: x', 'environment: [MODE=${MODE:-prod}]'), {}, /invalid YAML/, 'docker-compose.yml:4', /quote values with \$\{…\} inside \[ \] or \{ \}/);
    });
  });

  describe('a required variable that is unset', () => {
    it('is one line naming the variable and docker-compose.yml:line', () => {
      const err = rejects(web('image: x', 'ports:', '  - "${RELAY_PORT:?set the relay port}:443"'), {}, /^required variable RELAY_PORT is missing a value: set the relay port$/, 'docker-compose.yml:5', /set RELAY_PORT in the environment or in the project's \.env file/);
      assert.doesNotMatch(err.toLine(), /\n/);
      assert.match(err.toLine(), /^docker-compose\.yml:5: required variable RELAY_PORT is missing a value: set the relay port\. Set RELAY_PORT/);
    });
    it('says so without a message for ${VAR:?} and ${VAR?}', () => {
      rejects(web('image: "app:${TAG:?}"'), {}, /^required variable TAG is missing a value$/, 'docker-compose.yml:3');
      rejects(web('image: "app:${TAG?}"'), {}, /^required variable TAG is missing a value$/, 'docker-compose.yml:3');
    });
    it('distinguishes :? (empty fails) from ? (only unset fails)', () => {
      rejects(web('image: "app:${TAG:?}"'), { TAG: '' }, /required variable TAG/, 'docker-compose.yml:3');
      assert.equal(parse(web('image: "app${TAG?}"'), { TAG: '' }).services[0]?.image, 'app');
    });
    it('is found anywhere: build args, x- extensions, top-level volumes', () => {
      rejects(web('build:', '  context: web', '  args:', '    V: "${VERSION:?}"'), {}, /required variable VERSION/, 'docker-compose.yml:6');
      rejects(y('x-common:', '  token: ${TOKEN:?}', 'services:', '  web: { image: x }'), {}, /required variable TOKEN/, 'docker-compose.yml:2');
      rejects(y('services:', '  web: { image: x }', 'volumes:', '  data:', '    driver: ${DRIVER:?pick one}'), {}, /required variable DRIVER is missing a value: pick one/, 'docker-compose.yml:5');
    });
  });

  describe('invalid substitution syntax', () => {
    const bad: Array<[string, RegExp, string]> = [
      ['image: "app:${TAG"', /^invalid variable substitution in 'app:\$\{TAG' at column 5: '\$\{TAG' is not closed$/, 'docker-compose.yml:3'],
      ['image: "app:${}"', /'\$\{\}' names no variable/, 'docker-compose.yml:3'],
      ['image: "${TAG:latest}"', /unexpected ':' after the name/, 'docker-compose.yml:3'],
      ['image: "${ TAG}"', /cannot start a variable name/, 'docker-compose.yml:3'],
    ];
    for (const [line, message, where] of bad) {
      it(`refuses ${line} at ${where}`, () => rejects(web(line), {}, message, where, /write a literal \$ as \$\$/));
    }
    it('names the line of the list item that holds it', () => {
      rejects(web('image: x', 'environment:', '  - A=1', '  - B=${B:-x', '  - C=3'), {}, /is not closed/, 'docker-compose.yml:6');
    });
  });

  describe('what is substituted', () => {
    it('substitutes every string value, with $$ as a literal $', () => {
      const env = { TAG: 'v1', USER_ID: '1000', HOST: 'box' };
      const r = parse(web(
        'image: "app:$TAG"',
        'user: ${USER_ID}',
        'hostname: ${HOST}-1',
        'command: ["sh", "-c", "echo $$HOME ${TAG}"]',
        'labels:',
        '  cost: $$5',
        'working_dir: /srv/${TAG:+tagged}',
      ), env);
      assert.equal(r.services[0]?.image, 'app:v1');
      assert.deepEqual(r.services[0]?.config, {
        image: 'app:v1', user: '1000', hostname: 'box-1', command: ['sh', '-c', 'echo $HOME v1'], labels: { cost: '$5' }, working_dir: '/srv/tagged',
      });
      assert.deepEqual(r.warnings, []);
    });
    it('substitutes build settings, so the context and args a build uses are the resolved ones', () => {
      const build = parse(web('build:', '  context: ${CTX:-web}', '  args:', '    VERSION: ${VERSION:-1.0}'), { VERSION: '2.0' }).services[0]?.build;
      assert.equal(build?.contextRel, 'web');
      assert.deepEqual(build?.args, { VERSION: '2.0' });
    });
    it('leaves keys as written, as compose does, and refuses a key that needs a variable', () => {
      rejects(web('image: x', 'environment:', '  ${NAME}: x'), { NAME: 'A' }, /'\$\{NAME\}' is a key, and compose substitutes variables in values only/, 'docker-compose.yml:5');
      assert.deepEqual(config(web('image: x', 'labels:', '  "cost$$": x')).labels, { cost$$: 'x' });
    });
    it('lets extension keys be anything, and resolves values merged from an x- anchor', () => {
      const r = parse(y('x-${ANY}: 1', 'x-common: &common', '  environment:', '    A: ${A:-1}', 'services:', '  web:', '    <<: *common', '    image: x'), {});
      assert.deepEqual(r.services[0]?.config.environment, { A: '1' });
    });
    it('resolves an anchored value once for every alias of it', () => {
      const r = parse(y('services:', '  a:', '    image: &img "app:${TAG:-dev}"', '  b:', '    image: *img'), { TAG: 'v3' });
      assert.deepEqual(r.services.map((s) => s.image), ['app:v3', 'app:v3']);
    });
    it('does not touch numbers and booleans written as such', () => {
      assert.deepEqual(config(web('image: x', 'environment:', '  N: 5', '  B: true')).environment, { N: '5', B: 'true' });
    });
  });

  describe('an unset variable without a default', () => {
    it('becomes an empty string, with one warning per variable at its first line', () => {
      const r = parse(web('image: "app${SUFFIX}"', 'environment:', '  A: $MISSING', '  B: ${MISSING}'));
      assert.equal(r.services[0]?.image, 'app');
      assert.deepEqual(r.services[0]?.config.environment, { A: '', B: '' });
      assert.deepEqual(r.warnings, [
        { message: 'variable SUFFIX is not set; using an empty string', where: 'docker-compose.yml:3' },
        { message: 'variable MISSING is not set; using an empty string', where: 'docker-compose.yml:5' },
      ]);
    });
    it('is then validated like any value, and the error names the unset variable below it', () => {
      const err = rejects(web('image: x', 'ports: ["${PORT}:80"]'), {}, /invalid port ':80' in service 'web': empty published port/, 'docker-compose.yml:4');
      assert.deepEqual(err.details, ['docker-compose.yml:4: variable PORT is not set; using an empty string']);
    });
  });

  describe('types: a substituted value where compose expects a boolean or a number', () => {
    it('becomes that boolean or number, as compose casts it', () => {
      const c = config(web(
        'image: x',
        'privileged: ${PRIV:-true}',
        'tty: "${TTY}"',
        'cpus: ${CPUS:-0.5}',
        'cpu_shares: ${SHARES}',
        'pids_limit: ${PIDS:--1}',
        'healthcheck:',
        '  test: ["CMD", "true"]',
        '  retries: ${RETRIES:-3}',
        'ulimits:',
        '  nofile:',
        '    soft: ${SOFT:-1024}',
        '    hard: 2048',
      ), { TTY: 'FALSE', SHARES: '512' });
      assert.equal(c.privileged, true);
      assert.equal(c.tty, false);
      assert.equal(c.cpus, 0.5);
      assert.equal(c.cpu_shares, 512);
      assert.equal(c.pids_limit, -1);
      assert.equal((c.healthcheck as Record<string, unknown>).retries, 3);
      assert.deepEqual(c.ulimits, { nofile: { soft: 1024, hard: 2048 } });
    });
    it('is refused at its line when the value is not one', () => {
      rejects(web('image: x', 'privileged: ${PRIV}'), { PRIV: 'maybe' }, /'privileged' in service 'web' must be true or false/, 'docker-compose.yml:4');
      rejects(web('image: x', 'cpu_shares: ${N}'), { N: '1.5' }, /'cpu_shares' in service 'web' must be a whole number/, 'docker-compose.yml:4');
      rejects(web('image: x', 'restart: ${POLICY:-sometimes}'), {}, /invalid restart policy 'sometimes'/, 'docker-compose.yml:4');
      rejects(web('image: x', 'mem_limit: ${MEM}'), { MEM: 'lots' }, /'mem_limit' in service 'web' must be a size/, 'docker-compose.yml:4');
    });
    it('leaves literal text alone: privileged: "true" without a variable is still refused', () => {
      rejects(web('image: x', 'privileged: "true"'), {}, /must be true or false/, 'docker-compose.yml:4');
    });
    it('keeps strings where compose keeps strings (environment values stay text)', () => {
      assert.deepEqual(config(web('image: x', 'environment:', '  DEBUG: ${DEBUG:-true}')).environment, { DEBUG: 'true' });
    });
  });
});

describe('loadProject: variables from the environment and .env', () => {
  // loadProject imports compose.ts lazily, and under tsx that is a second copy of the error class:
  // compare by name and code, not instanceof.
  function project(compose: string, dotenv?: string): string {
    const root = scratchDir('skiff-project-vars-');
    const d = path.join(root, 'app');
    mkdirSync(d);
    writeFileSync(path.join(d, 'docker-compose.yml'), compose);
    if (dotenv !== undefined) writeFileSync(path.join(d, '.env'), dotenv);
    return d;
  }
  const compose = y('services:', '  web:', '    image: x', '    environment:', '      - MODE=${MODE:-prod}', '    ports: ["${RELAY_PORT:-443}:443"]');

  it('reads variables from the .env in the project folder', async () => {
    const p = await loadProject(project(compose, 'RELAY_PORT=8443\nMODE=dev\n'), { environment: {} });
    assert.deepEqual(p.services[0]?.config, { image: 'x', environment: { MODE: 'dev' }, ports: ['8443:443'] });
  });
  it('lets the process environment win over .env', async () => {
    const p = await loadProject(project(compose, 'RELAY_PORT=8443\nMODE=dev\n'), { environment: { RELAY_PORT: '9443' } });
    assert.deepEqual(p.services[0]?.config.ports, ['9443:443']);
    assert.deepEqual(p.services[0]?.config.environment, { MODE: 'dev' });
  });
  it('uses the process environment by default', async () => {
    process.env.SKIFF_TEST_RELAY = '7443';
    try {
      const p = await loadProject(project(y('services:', '  web:', '    image: x', '    ports: ["${SKIFF_TEST_RELAY}:443"]')));
      assert.deepEqual(p.services[0]?.config.ports, ['7443:443']);
    } finally {
      delete process.env.SKIFF_TEST_RELAY;
    }
  });
  it('ignores a .env outside the project folder', async () => {
    const d = project(compose);
    writeFileSync(path.join(path.dirname(d), '.env'), 'RELAY_PORT=1\n');
    assert.deepEqual((await loadProject(d, { environment: {} })).services[0]?.config.ports, ['443:443']);
  });
  it('refuses a malformed .env line with .env:line before reading the compose file', async () => {
    await assert.rejects(loadProject(project(compose, 'A=1\nB="open\n'), { environment: {} }), (err: SkiffError) => {
      assert.equal(err.name, 'SkiffError');
      assert.equal(err.code, 'project');
      assert.equal(err.where, '.env:2');
      assert.match(err.message, /unterminated quoted value/);
      return true;
    });
  });
  it('carries the .env warnings with the compose ones', async () => {
    const p = await loadProject(project(y('services:', '  web:', '    image: "x${NOPE}"'), 'A=$UNSET_IN_ENV\n'), { environment: {} });
    assert.deepEqual(p.warnings, [
      { message: 'variable UNSET_IN_ENV is not set; using an empty string', where: '.env:1' },
      { message: 'variable NOPE is not set; using an empty string', where: 'docker-compose.yml:3' },
    ]);
  });
  it('names the required variable and the compose file:line', async () => {
    await assert.rejects(loadProject(project(y('services:', '  web:', '    image: x', '    environment:', '      TOKEN: ${TOKEN:?}')), { environment: {} }), (err: SkiffError) => {
      assert.equal(err.name, 'SkiffError');
      assert.equal(err.toLine(), "docker-compose.yml:5: required variable TOKEN is missing a value. Set TOKEN in the environment or in the project's .env file.");
      return true;
    });
  });
});
