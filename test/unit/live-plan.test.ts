import assert from 'node:assert/strict';
import { copyMap, globToRegExp, liveAction } from '../../src/lib/device/live-plan.js';

describe('live updates: which change needs what', () => {
  const cases: Array<{ name: string; dockerfile: string; file: string; deleted?: boolean; expect: ReturnType<typeof liveAction> | 'rebuild' }> = [
    {
      name: 'a file copied last is synced to its destination file',
      dockerfile: 'FROM x\nCOPY index.html /www/index.html\nCMD ["httpd"]',
      file: 'index.html',
      expect: { kind: 'sync', targets: [{ dest: '/www/index.html', destMayBeDir: true }] },
    },
    {
      name: 'a destination ending in / takes the file name',
      dockerfile: 'FROM x\nCOPY index.html /www/',
      file: 'index.html',
      expect: { kind: 'sync', targets: [{ dest: '/www/index.html', destMayBeDir: false }] },
    },
    {
      name: 'COPY . . under a WORKDIR syncs into the workdir, keeping sub-folders',
      dockerfile: 'FROM x\nWORKDIR /usr/src/app\nCOPY . .\nCMD ["node", "index.js"]',
      file: 'lib/util.js',
      expect: { kind: 'sync', targets: [{ dest: '/usr/src/app/lib/util.js', destMayBeDir: false }] },
    },
    {
      name: 'a folder source copies its contents',
      dockerfile: 'FROM x\nCOPY src/ /app/src/',
      file: 'src/a/b.py',
      expect: { kind: 'sync', targets: [{ dest: '/app/src/a/b.py', destMayBeDir: false }] },
    },
    {
      name: 'a glob source matches by name, within one folder',
      dockerfile: 'FROM x\nCOPY *.py /app/',
      file: 'main.py',
      expect: { kind: 'sync', targets: [{ dest: '/app/main.py', destMayBeDir: false }] },
    },
    {
      name: 'a glob does not reach into sub-folders',
      dockerfile: 'FROM x\nCOPY *.py /app/',
      file: 'pkg/main.py',
      expect: { kind: 'ignore' },
    },
    {
      name: 'the JSON form, with --chown, and ARG/ENV in the destination',
      dockerfile: 'FROM x\nARG DIR=/srv\nENV SUB=site\nCOPY --chown=1000:1000 ["page.html", "$DIR/${SUB}/"]',
      file: 'page.html',
      expect: { kind: 'sync', targets: [{ dest: '/srv/site/page.html', destMayBeDir: false }] },
    },
    {
      name: 'a file copied before a RUN step needs a rebuild',
      dockerfile: 'FROM x\nCOPY run.sh /run.sh\nRUN chmod +x /run.sh\nCMD ["/run.sh"]',
      file: 'run.sh',
      expect: 'rebuild',
    },
    {
      name: 'a file copied after the last RUN is synced even if earlier copies are not',
      dockerfile: 'FROM x\nCOPY package.json /app/\nRUN npm ci\nCOPY src /app/src',
      file: 'src/index.js',
      expect: { kind: 'sync', targets: [{ dest: '/app/src/index.js', destMayBeDir: false }] },
    },
    {
      name: 'package.json before RUN npm ci needs a rebuild',
      dockerfile: 'FROM x\nCOPY package.json /app/\nRUN npm ci\nCOPY src /app/src',
      file: 'package.json',
      expect: 'rebuild',
    },
    {
      name: 'a file copied into an earlier stage needs a rebuild',
      dockerfile: 'FROM x AS build\nCOPY main.c /src/\nFROM y\nCOPY --from=build /out /app',
      file: 'main.c',
      expect: 'rebuild',
    },
    {
      name: 'an archive ADD unpacks needs a rebuild',
      dockerfile: 'FROM x\nADD rootfs.tar.gz /',
      file: 'rootfs.tar.gz',
      expect: 'rebuild',
    },
    {
      name: 'a file no COPY takes is ignored',
      dockerfile: 'FROM x\nCOPY index.html /www/',
      file: 'README.md',
      expect: { kind: 'ignore' },
    },
    {
      name: 'a deleted file that is in the image needs a rebuild',
      dockerfile: 'FROM x\nCOPY . /app',
      file: 'old.txt',
      deleted: true,
      expect: 'rebuild',
    },
    {
      name: 'continuation lines and comments inside them',
      dockerfile: 'FROM x\nCOPY a.txt \\\n# a comment\n  b.txt /data/\n',
      file: 'b.txt',
      expect: { kind: 'sync', targets: [{ dest: '/data/b.txt', destMayBeDir: false }] },
    },
    {
      name: 'sources given as ./name',
      dockerfile: 'FROM x\nCOPY ./conf/app.ini /etc/app.ini',
      file: 'conf/app.ini',
      expect: { kind: 'sync', targets: [{ dest: '/etc/app.ini', destMayBeDir: true }] },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const action = liveAction(copyMap(c.dockerfile), c.file, c.deleted);
      if (c.expect === 'rebuild') assert.equal(action.kind, 'rebuild', JSON.stringify(action));
      else assert.deepEqual(action, c.expect);
    });
  }

  it('says why a rebuild is needed, with the Dockerfile line', () => {
    const action = liveAction(copyMap('FROM x\nCOPY run.sh /run.sh\nRUN chmod +x /run.sh'), 'run.sh');
    assert.deepEqual(action, { kind: 'rebuild', reason: "'run.sh' is used by the build: a RUN step comes after its COPY (line 2)" });
  });

  it('build args override ARG defaults in paths', () => {
    const map = copyMap('FROM x\nARG DIR=/a\nCOPY f /$DIR/', { DIR: '/b' });
    assert.deepEqual(map.copies.map((c) => c.dest), ['/b/']);
  });

  it('globs follow Go filepath.Match', () => {
    assert.ok(globToRegExp('a?c').test('abc'));
    assert.ok(!globToRegExp('a?c').test('a/c'));
    assert.ok(globToRegExp('[a-c]x').test('bx'));
    assert.ok(!globToRegExp('[!a-c]x').test('bx'));
    assert.ok(globToRegExp('file.txt').test('file.txt'));
    assert.ok(!globToRegExp('file.txt').test('fileXtxt'));
  });
});
