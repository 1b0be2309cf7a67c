import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { LABELLED_DOCKERFILE, loadIgnoreRules, packContext } from '../../src/lib/project/build-context.js';
import type { ResolvedDockerfile } from '../../src/lib/project/dockerfile.js';
import { scratchDir } from '../support/tmp.js';

function tree(files: Record<string, string>): string {
  const dir = scratchDir('skiff-ctx-');
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), text);
  }
  return dir;
}

async function unpack(dir: string, dockerfile: ResolvedDockerfile, base = dir): Promise<string> {
  const rules = await loadIgnoreRules(base);
  const out = scratchDir('skiff-out-');
  const tar = await import('tar-fs');
  await pipeline((await packContext({ contextDir: dir, rules, dockerfile, displayBase: base, service: 'main' })).stream, tar.extract(out));
  return out;
}

const plain: ResolvedDockerfile = { pathRel: 'Dockerfile', contents: 'FROM x\n', processed: false, kind: 'dockerfile' };

describe('build context', () => {
  it('applies Docker .dockerignore semantics, including ** and exceptions', async () => {
    const dir = tree({
      Dockerfile: 'FROM x\n',
      '.dockerignore': '# a comment\n\n**/*.log\nnode_modules\ndocs/*\n!docs/keep.md\n',
      'app.js': 'a',
      'deep/er/trace.log': 'x',
      'node_modules/m/index.js': 'x',
      'docs/drop.md': 'x',
      'docs/keep.md': 'k',
    });
    const out = await unpack(dir, plain);
    assert.ok(existsSync(path.join(out, 'app.js')));
    assert.ok(!existsSync(path.join(out, 'deep/er/trace.log')));
    assert.ok(!existsSync(path.join(out, 'node_modules/m/index.js')));
    assert.ok(!existsSync(path.join(out, 'docs/drop.md')));
    assert.equal(readFileSync(path.join(out, 'docs/keep.md'), 'utf8'), 'k');
  });

  it('never sends .git, even without a .dockerignore', async () => {
    const dir = tree({ Dockerfile: 'FROM x\n', '.git/config': 'x', '.gitignore': 'y', 'src/.git/HEAD': 'nested' });
    const out = await unpack(dir, plain);
    assert.ok(!existsSync(path.join(out, '.git')));
    assert.ok(existsSync(path.join(out, '.gitignore')));
    assert.ok(existsSync(path.join(out, 'src/.git/HEAD')), 'only the context root .git is special');
  });

  it('sends the processed Dockerfile in place of the template', async () => {
    const dir = tree({ 'Dockerfile.template': 'FROM %%BALENA_ARCH%%\n' });
    const out = await unpack(dir, { pathRel: 'Dockerfile.template', contents: 'FROM aarch64\n', processed: true, kind: 'template' });
    assert.equal(readFileSync(path.join(out, 'Dockerfile.template'), 'utf8'), 'FROM aarch64\n');
  });

  it('sends a Dockerfile that .dockerignore excludes, with the .dockerignore the engine reads to hide it from COPY', async () => {
    const dir = tree({ Dockerfile: 'FROM x\n', '.dockerignore': '*.md\n\nDocker*\n.dockerignore\n', 'a.md': 'x', 'app.js': 'a' });
    const out = await unpack(dir, plain);
    assert.equal(readFileSync(path.join(out, 'Dockerfile'), 'utf8'), 'FROM x\n');
    assert.equal(readFileSync(path.join(out, '.dockerignore'), 'utf8'), '*.md\n\nDocker*\n.dockerignore\n', 'the user\'s own file, even though it excludes itself');
    assert.ok(!existsSync(path.join(out, 'a.md')));
    assert.ok(existsSync(path.join(out, 'app.js')));
  });

  it('sends an excluded Dockerfile inside an excluded folder, and nothing else from that folder', async () => {
    const dir = tree({ 'docker/Dockerfile': 'FROM x\n', 'docker/notes.txt': 'n', '.dockerignore': 'docker\n' });
    const out = await unpack(dir, { ...plain, pathRel: 'docker/Dockerfile' });
    assert.ok(existsSync(path.join(out, 'docker/Dockerfile')));
    assert.ok(!existsSync(path.join(out, 'docker/notes.txt')));
  });

  it('when the project root .dockerignore excludes a service Dockerfile, puts a .dockerignore naming it at the context root', async () => {
    const root = tree({ '.dockerignore': 'svc/Dockerfile\n', 'svc/Dockerfile': 'FROM x\n', 'svc/ok.txt': 'o' });
    const out = await unpack(path.join(root, 'svc'), plain, root);
    assert.equal(readFileSync(path.join(out, 'Dockerfile'), 'utf8'), 'FROM x\n');
    assert.equal(readFileSync(path.join(out, '.dockerignore'), 'utf8'), '.dockerignore\nDockerfile\n');
    assert.ok(existsSync(path.join(out, 'ok.txt')));
  });

  it('sends an included Dockerfile byte for byte and no .dockerignore of its own making', async () => {
    const bytes = 'FROM x\r\n# no newline at the end';
    const dir = tree({ Dockerfile: bytes, 'app.js': 'a' });
    const out = await unpack(dir, { ...plain, contents: bytes });
    assert.equal(readFileSync(path.join(out, 'Dockerfile'), 'utf8'), bytes);
    assert.ok(!existsSync(path.join(out, '.dockerignore')));
  });

  it('accepts a Dockerfile that a later exception brings back', async () => {
    const dir = tree({ Dockerfile: 'FROM x\n', '.dockerignore': 'Docker*\n!Dockerfile\n' });
    const out = await unpack(dir, plain);
    assert.ok(existsSync(path.join(out, 'Dockerfile')));
  });

  it('matches a service context against the project root .dockerignore by project-relative paths', async () => {
    const root = tree({ '.dockerignore': 'svc/secret.txt\n', 'svc/Dockerfile': 'FROM x\n', 'svc/secret.txt': 's', 'svc/ok.txt': 'o' });
    const out = await unpack(path.join(root, 'svc'), plain, root);
    assert.ok(existsSync(path.join(out, 'ok.txt')));
    assert.ok(!existsSync(path.join(out, 'secret.txt')));
  });
});

describe('build context: the labels', () => {
  const labels = { 'io.skiff.project': 'demo', 'io.skiff.service': 'main' };
  async function pack(dir: string, extra: { labels?: Record<string, string>; target?: string } = {}) {
    const rules = await loadIgnoreRules(dir);
    const out = scratchDir('skiff-out-');
    const tar = await import('tar-fs');
    const packed = await packContext({ contextDir: dir, rules, dockerfile: plain, displayBase: dir, service: 'main', labels, ...extra });
    await pipeline(packed.stream, tar.extract(out));
    return { out, packed };
  }

  it('go in one LABEL line of a Dockerfile of their own that the tar\'s .dockerignore hides from COPY (no .dockerignore on disk)', async () => {
    const { out, packed } = await pack(tree({ Dockerfile: 'FROM x\n', 'app.js': 'a' }));
    assert.equal(packed.dockerfile, LABELLED_DOCKERFILE);
    assert.deepEqual(packed.apiLabels, {});
    assert.equal(readFileSync(path.join(out, LABELLED_DOCKERFILE), 'utf8'), 'FROM x\nLABEL "io.skiff.project"="demo" "io.skiff.service"="main"\n');
    assert.equal(readFileSync(path.join(out, '.dockerignore'), 'utf8'), `.dockerignore\n${LABELLED_DOCKERFILE}\n`);
    assert.equal(readFileSync(path.join(out, 'Dockerfile'), 'utf8'), 'FROM x\n', "the user's Dockerfile is sent as it is");
  });

  it('go in the generated Dockerfile too when the .dockerignore excludes itself (COPY never sees either)', async () => {
    const { out, packed } = await pack(tree({ Dockerfile: 'FROM x\n', '.dockerignore': '*.log\n.dockerignore', 'a.log': 'x' }));
    assert.equal(packed.dockerfile, LABELLED_DOCKERFILE);
    assert.equal(readFileSync(path.join(out, '.dockerignore'), 'utf8'), `.dockerignore\n${LABELLED_DOCKERFILE}\n`);
    assert.ok(!existsSync(path.join(out, 'a.log')));
  });

  it('go through the build API when COPY would see the .dockerignore, which is then sent byte for byte', async () => {
    const { out, packed } = await pack(tree({ Dockerfile: 'FROM x\n', '.dockerignore': '*.log\n' }));
    assert.equal(packed.dockerfile, 'Dockerfile');
    assert.deepEqual(packed.apiLabels, labels);
    assert.equal(readFileSync(path.join(out, '.dockerignore'), 'utf8'), '*.log\n');
    assert.ok(!existsSync(path.join(out, LABELLED_DOCKERFILE)));
  });

  it('go through the build API for a target stage (a line at the end labels the last stage only)', async () => {
    const { packed } = await pack(tree({ Dockerfile: 'FROM x\n' }), { target: 'base' });
    assert.equal(packed.dockerfile, 'Dockerfile');
    assert.deepEqual(packed.apiLabels, labels);
  });

  it('leave a label with quotes, backslashes or line breaks to the build API, the others in the line', async () => {
    const odd = { 'com.example.note': 'say "hi"\\now' };
    const { out, packed } = await pack(tree({ Dockerfile: 'FROM x' }), { labels: { ...labels, ...odd } });
    assert.deepEqual(packed.apiLabels, odd);
    assert.equal(readFileSync(path.join(out, LABELLED_DOCKERFILE), 'utf8'), 'FROM x\nLABEL "io.skiff.project"="demo" "io.skiff.service"="main"\n');
  });
});

describe('build context: the labels and an excluded template', () => {
  it('leave a template .dockerignore excludes out of the tar; the engine builds from the generated Dockerfile', async () => {
    const dir = tree({ 'Dockerfile.template': 'FROM %%BALENA_ARCH%%\n', '.dockerignore': 'Dockerfile.template\n.dockerignore\n' });
    const rules = await loadIgnoreRules(dir);
    const out = scratchDir('skiff-out-');
    const tar = await import('tar-fs');
    const packed = await packContext({
      contextDir: dir, rules, displayBase: dir, service: 'main', labels: { 'io.skiff.service': 'main' },
      dockerfile: { pathRel: 'Dockerfile.template', contents: 'FROM aarch64\n', processed: true, kind: 'template' },
    });
    await pipeline(packed.stream, tar.extract(out));
    assert.ok(!existsSync(path.join(out, 'Dockerfile.template')), 'the user excluded it from what COPY sees');
    assert.equal(readFileSync(path.join(out, LABELLED_DOCKERFILE), 'utf8'), 'FROM aarch64\nLABEL "io.skiff.service"="main"\n');
  });
});

describe('build context: for BuildKit', () => {
  // BuildKit applies no .dockerignore to a tar context: the tar must hold exactly what COPY may see.
  it('holds only what the rules keep plus the Dockerfile, and leaves every label to the build API', async () => {
    const dir = tree({
      '.dockerignore': '.dockerignore\n*.log\nDockerfile\n',
      Dockerfile: 'FROM x\n',
      'app.js': 'a',
      'debug.log': 'l',
      '.balena/secrets/npmrc': 'token',
      '.balena/balena.yml': 'x: 1\n',
    });
    const rules = await loadIgnoreRules(dir);
    const out = scratchDir('skiff-out-');
    const tar = await import('tar-fs');
    const processed: ResolvedDockerfile = { ...plain, contents: 'FROM y\n', processed: true };
    const labels = { 'io.skiff.service': 'main' };
    const packed = await packContext({ contextDir: dir, rules, dockerfile: processed, displayBase: dir, service: 'main', labels, buildkit: true });
    await pipeline(packed.stream, tar.extract(out));
    assert.equal(packed.dockerfile, 'Dockerfile');
    assert.deepEqual(packed.apiLabels, labels);
    assert.equal(readFileSync(path.join(out, 'Dockerfile'), 'utf8'), 'FROM y\n', 'the processed text');
    assert.ok(existsSync(path.join(out, 'app.js')));
    for (const gone of ['.dockerignore', 'debug.log', LABELLED_DOCKERFILE, '.balena/secrets/npmrc']) assert.ok(!existsSync(path.join(out, gone)), `${gone} stays out`);
    assert.ok(existsSync(path.join(out, '.balena/balena.yml')), 'only the secrets folder is always left out');
  });
});
