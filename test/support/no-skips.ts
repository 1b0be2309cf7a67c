/**
 * A mocha root hook plugin (see .mocharc.json): in CI a skipped or pending test fails the run, so
 * a test that silently stops running is seen. Outside CI skips are allowed (a laptop without root).
 */
import { IN_CI } from './prerequisites.js';

function pendingTitles(suite: Mocha.Suite): string[] {
  return [...suite.tests.filter((t) => t.isPending()).map((t) => t.fullTitle()), ...suite.suites.flatMap(pendingTitles)];
}

export const mochaHooks = {
  afterAll(this: Mocha.Context): void {
    const root = this.test?.parent;
    if (!IN_CI || !root) return;
    const skipped = pendingTitles(root);
    if (skipped.length > 0) throw new Error(`${skipped.length} test(s) skipped in CI, where every test must run:\n  ${skipped.join('\n  ')}`);
  },
};
