import assert from 'node:assert/strict';
import { errorAnswer } from '../../src/lib/server/http/errors.js';
import { isDatabaseUnavailable, isUniqueViolation } from '../../src/lib/server/db/database.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

function validation(context: string, issue: { instancePath?: string; params?: Record<string, unknown>; message?: string }) {
  return Object.assign(new Error('validation'), { statusCode: 400, validation: [issue], validationContext: context });
}

describe('server HTTP errors: validation names the field', () => {
  for (const [name, err, field] of [
    ['a top-level property', validation('body', { instancePath: '/name', message: 'must match pattern' }), 'name'],
    ['a nested property', validation('body', { instancePath: '/composition/services/main', message: 'must be object' }), 'composition.services.main'],
    ['a missing property', validation('body', { instancePath: '', params: { missingProperty: 'password' }, message: "must have required property 'password'" }), 'password'],
    ['a missing nested property', validation('body', { instancePath: '/images', params: { missingProperty: 'main' } }), 'images.main'],
    ['an unknown property', validation('body', { instancePath: '/abc1234', params: { additionalProperty: 'colour' } }), 'abc1234.colour'],
    ['a key with a slash', validation('body', { instancePath: '/labels/io.balena~1x' }), 'labels.io.balena/x'],
    ['a whole querystring', validation('querystring', { instancePath: '' }), 'querystring'],
    ['a path parameter', validation('params', { instancePath: '/id', message: 'must match pattern' }), 'id'],
  ] as const) {
    it(`${name} → ${field}`, () => {
      const { status, body, fault } = errorAnswer(err);
      assert.equal(status, 400);
      assert.equal(body.field, field);
      assert.equal(fault, false);
      assert.equal(body.statusCode, 400);
    });
  }
});

describe('server HTTP errors: status by cause', () => {
  for (const [name, err, status, fault] of [
    ['usage', new SkiffError('usage', 'bad', { where: 'deviceType' }), 400, false],
    ['not logged in', new SkiffError('notLoggedIn', 'who?'), 401, false],
    ['refused to a kind of key', new SkiffError('deviceRefused', 'no'), 403, false],
    ['not found', new SkiffError('notFound', 'fleet x not found'), 404, false],
    ['conflict', new SkiffError('conflict', 'exists'), 409, false],
    ['no registry', new SkiffError('serverUnreachable', 'no registry'), 503, false],
    ['another SkiffError', new SkiffError('buildFailed', 'odd'), 500, true],
    ['PostgreSQL refusing connections', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 503, false],
    ['PostgreSQL shutting down', Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }), 503, false],
    ['a dropped connection', new Error('Connection terminated unexpectedly'), 503, false],
    ['SQLite busy past its timeout', Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' }), 503, false],
    ['a wrapped cause', new Error('query failed', { cause: Object.assign(new Error('x'), { code: 'ECONNRESET' }) }), 503, false],
    ['a body too large', Object.assign(new Error('Request body is too large'), { statusCode: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE' }), 413, false],
    ['rate limited', Object.assign(new Error('Rate limit exceeded'), { statusCode: 429 }), 429, false],
    ['a bug', new TypeError('x is undefined'), 500, true],
  ] as const) {
    it(`${name} → ${status}`, () => {
      const answer = errorAnswer(err);
      assert.equal(answer.status, status);
      assert.equal(answer.body.statusCode, status);
      assert.equal(answer.fault, fault);
    });
  }

  it('names the field of a usage error, and says nothing of a bug but "see the log"', () => {
    assert.equal(errorAnswer(new SkiffError('usage', 'bad', { where: 'deviceType' })).body.field, 'deviceType');
    assert.equal(errorAnswer(new SkiffError('notFound', 'x', { where: 'ignored' })).body.field, undefined);
    assert.doesNotMatch(errorAnswer(new TypeError('secret internals')).body.message, /secret/);
  });

  it('puts the hint in the message', () => {
    assert.equal(errorAnswer(new SkiffError('notLoggedIn', 'wrong email or password', { hint: "log in again with 'skiff login'" })).body.message, "wrong email or password; log in again with 'skiff login'");
  });
});

describe('server database errors', () => {
  it('tells a unique violation on both dialects from other errors', () => {
    assert.equal(isUniqueViolation(Object.assign(new Error(), { code: '23505' })), true);
    assert.equal(isUniqueViolation(Object.assign(new Error(), { code: 'SQLITE_CONSTRAINT_UNIQUE' })), true);
    assert.equal(isUniqueViolation(Object.assign(new Error(), { code: 'SQLITE_CONSTRAINT_FOREIGNKEY' })), false);
    assert.equal(isUniqueViolation(undefined), false);
  });
  it('does not take a refused query for an unavailable database', () => {
    assert.equal(isDatabaseUnavailable(Object.assign(new Error('syntax error'), { code: '42601' })), false);
    assert.equal(isDatabaseUnavailable(undefined), false);
  });
});
