import assert from 'node:assert/strict';
import { parseRefUpdates, planPush, type RefUpdate } from '../../src/lib/server/git/push-plan.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const Z = '0'.repeat(40);

describe('git pre-receive: reading the ref updates', () => {
  it('reads one line per ref', () => {
    assert.deepEqual(parseRefUpdates(`${A} ${B} refs/heads/main\n${Z} ${A} refs/tags/v1\n`), [
      { old: A, new: B, ref: 'refs/heads/main' },
      { old: Z, new: A, ref: 'refs/tags/v1' },
    ]);
  });
  it('reads SHA-256 object names', () => {
    assert.equal(parseRefUpdates(`${'c'.repeat(64)} ${'d'.repeat(64)} refs/heads/main`)[0]?.new, 'd'.repeat(64));
  });
  it('nothing on stdin is no update', () => assert.deepEqual(parseRefUpdates(''), []));
  for (const bad of ['main', `${A} refs/heads/main`, `${A} ${B}`, `${A.slice(1)} ${B} refs/heads/main`, `${A} ${B} refs/heads/a b`]) {
    it(`refuses '${bad.slice(0, 30)}…'`, () => assert.throws(() => parseRefUpdates(bad), /not a ref update line/));
  }
});

describe('git pre-receive: what a push does', () => {
  const cases: Array<[string, RefUpdate[], { deploy?: string; refused?: RegExp; stored?: string[] }]> = [
    ['a push to main deploys its commit', [{ old: A, new: B, ref: 'refs/heads/main' }], { deploy: B }],
    ['the first push to main deploys', [{ old: Z, new: A, ref: 'refs/heads/main' }], { deploy: A }],
    ['deleting main is refused', [{ old: A, new: Z, ref: 'refs/heads/main' }], { refused: /deleting main is refused/ }],
    ['another branch is stored, not deployed', [{ old: Z, new: A, ref: 'refs/heads/dev' }], { stored: ['stored refs/heads/dev; only main deploys'] }],
    ['a tag is stored, not deployed', [{ old: Z, new: A, ref: 'refs/tags/v1' }], { stored: ['stored refs/tags/v1; only main deploys'] }],
    ['deleting another branch is allowed', [{ old: A, new: Z, ref: 'refs/heads/dev' }], { stored: ['deleted refs/heads/dev'] }],
    ['a branch named like main elsewhere is not main', [{ old: Z, new: A, ref: 'refs/heads/x/main' }], { stored: ['stored refs/heads/x/main; only main deploys'] }],
    ['main and a branch together: main deploys, the branch is stored', [{ old: A, new: B, ref: 'refs/heads/main' }, { old: Z, new: A, ref: 'refs/heads/dev' }], { deploy: B, stored: ['stored refs/heads/dev; only main deploys'] }],
    ['deleting main with another update refuses the whole push', [{ old: Z, new: A, ref: 'refs/heads/dev' }, { old: A, new: Z, ref: 'refs/heads/main' }], { refused: /deleting main/ }],
  ];
  for (const [name, updates, expected] of cases) {
    it(name, () => {
      const plan = planPush(updates);
      assert.equal(plan.deploy?.commit, expected.deploy);
      if (expected.deploy) assert.equal(plan.deploy?.ref, 'refs/heads/main');
      if (expected.refused) assert.match(plan.refused ?? '', expected.refused);
      else assert.equal(plan.refused, undefined);
      if (expected.stored) assert.deepEqual(plan.decisions.flatMap((d) => (d.kind === 'store' ? [d.message] : [])), expected.stored);
    });
  }
  it('another default branch can be named', () => {
    assert.equal(planPush([{ old: Z, new: A, ref: 'refs/heads/prod' }], 'prod').deploy?.commit, A);
  });
});
