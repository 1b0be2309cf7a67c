import assert from 'node:assert/strict';
import { ServiceTails } from '../../src/lib/cloud/service-tails.js';

describe('service tails of a build', () => {
  it('keeps the newest lines of each service, oldest first', () => {
    const t = new ServiceTails(2);
    for (const line of ['1', '2', '3']) t.add('api', line);
    t.add('web', 'w');
    assert.deepEqual(t.tail('api'), ['2', '3']);
    assert.deepEqual(t.tail('web'), ['w']);
    assert.deepEqual(t.tail('none'), []);
  });
  it('names the service that printed last', () => {
    const t = new ServiceTails();
    assert.equal(t.lastService(), undefined);
    t.add('api', 'a');
    t.add('web', 'w');
    t.add('api', 'b');
    assert.equal(t.lastService(), 'api');
  });
  it('a tail is buried once another service printed after it', () => {
    const t = new ServiceTails();
    t.add('api', 'a');
    assert.equal(t.buried('api'), false);
    t.add('web', 'w');
    assert.equal(t.buried('api'), true);
    assert.equal(t.buried('web'), false);
    assert.equal(t.buried('none'), false);
  });
});
