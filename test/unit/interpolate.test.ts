import assert from 'node:assert/strict';
import { describeProblem, hasExpression, interpolate, type TemplateProblem } from '../../src/lib/project/interpolate.js';

// The variables of compose-go's template tests: one set, one set but empty, one holding braces.
const vars: Record<string, string> = { FOO: 'first', BAR: '', JSON: '{"json":2}' };
const lookup = (name: string): string | undefined => (Object.hasOwn(vars, name) ? vars[name] : undefined);

function resolves(template: string, expected: string, unset: string[] = []): void {
  const r = interpolate(template, lookup);
  assert.ok(r.ok, `expected '${template}' to resolve, got ${JSON.stringify(r)}`);
  assert.equal(r.value, expected);
  assert.deepEqual(r.unset, unset);
}

function problem(template: string): TemplateProblem {
  const r = interpolate(template, lookup);
  assert.ok(!r.ok, `expected '${template}' to fail, got ${JSON.stringify(r)}`);
  return r.problem;
}

describe('interpolate (compose variable substitution)', () => {
  describe('plain text and the $ that is not a variable', () => {
    const literal = ['foo', 'a $ string', '^REGEX$', '$}', '$', '$1', 'price: 5$', '$-x', '100%'];
    for (const text of literal) it(`leaves '${text}' as it is`, () => resolves(text, text));

    it('reads $$ as one literal $ and never as a variable', () => {
      resolves('$${foo}', '${foo}');
      resolves('$$FOO', '$FOO');
      resolves('cost=$$5', 'cost=$5');
      resolves('$$$FOO', '$first');
    });
  });

  describe('$VAR and ${VAR}', () => {
    it('substitutes a set variable, braced or not', () => {
      resolves('This $FOO var', 'This first var');
      resolves('This ${FOO} var', 'This first var');
    });
    it('ends an unbraced name at the first character that cannot be in a name', () => {
      resolves('$FOO-bar', 'first-bar');
      resolves('$FOO.bar', 'first.bar');
      resolves('$FOObar', '', ['FOObar']);
      resolves('${FOO}bar', 'firstbar');
    });
    it('accepts lower-case and underscore names, and digits after the first character', () => {
      vars.lower_1 = 'x';
      try {
        resolves('$lower_1/${lower_1}', 'x/x');
        resolves('$_', '', ['_']);
      } finally {
        delete vars.lower_1;
      }
    });
    it('turns an unset variable into an empty string and reports it as unset', () => {
      resolves('This ${missing} var', 'This  var', ['missing']);
      resolves('$missing and $missing', ' and ', ['missing']);
    });
    it('turns a set-but-empty variable into an empty string without reporting it', () => resolves('This ${BAR} var', 'This  var'));
  });

  describe('defaults: ${VAR:-default} and ${VAR-default}', () => {
    const cases: Array<[string, string]> = [
      ['ok ${missing:-def}', 'ok def'],
      ['ok ${missing-def}', 'ok def'],
      ['ok ${BAR:-def}', 'ok def'],
      ['ok ${BAR-def}', 'ok '],
      ['ok ${FOO:-def}', 'ok first'],
      ['ok ${FOO-def}', 'ok first'],
      ['ok ${BAR:-/non:-alphanumeric}', 'ok /non:-alphanumeric'],
      ['ok ${missing:-}', 'ok '],
      ['ok ${missing:-a b  c}', 'ok a b  c'],
      ['${UNSET_VAR-myerror?msg}', 'myerror?msg'],
      ['ok ${missing:-{"json":1}}', 'ok {"json":1}'],
      ['ok ${missing-{"json":1}}', 'ok {"json":1}'],
      ['ok ${JSON:-{"json":1}}', 'ok {"json":2}'],
      ['ok ${JSON-{"json":1}}', 'ok {"json":2}'],
      ['${RELAY_PORT:-443}:443', '443:443'],
      ['MODE=${MODE:-prod}', 'MODE=prod'],
    ];
    for (const [template, expected] of cases) it(`'${template}' → '${expected}'`, () => resolves(template, expected));
  });

  describe('alternatives: ${VAR:+alt} and ${VAR+alt}', () => {
    const cases: Array<[string, string]> = [
      ['ok ${UNSET_VAR:+presence_value}', 'ok '],
      ['ok ${UNSET_VAR+presence_value}', 'ok '],
      ['ok ${FOO:+presence_value}', 'ok presence_value'],
      ['ok ${FOO+presence_value}', 'ok presence_value'],
      ['ok ${BAR+presence_value}', 'ok presence_value'],
      ['ok ${BAR:+presence_value}', 'ok '],
    ];
    for (const [template, expected] of cases) it(`'${template}' → '${expected}'`, () => resolves(template, expected));
  });

  describe('text around an expression never changes its meaning', () => {
    const cases: Array<[string, string]> = [
      ['-ok ${BAR:-defaultValue}', '-ok defaultValue'],
      ['+ok ${UNSET:-${BAR-defaultValue}}', '+ok '],
      ['-ok ${FOO:-defaultValue}', '-ok first'],
      [':-ok ${UNSET-defaultValue}', ':-ok defaultValue'],
      [':-ok ${BAR-defaultValue}', ':-ok '],
      [':?ok ${BAR-defaultValue}', ':?ok '],
      [':?ok ${BAR:-defaultValue}', ':?ok defaultValue'],
      [':+ok ${BAR:-defaultValue}', ':+ok defaultValue'],
      ['+ok ${BAR-defaultValue}', '+ok '],
      ['?ok ${BAR:-defaultValue}', '?ok defaultValue'],
      ['} ${FOO} {', '} first {'],
    ];
    for (const [template, expected] of cases) it(`'${template}' → '${expected}'`, () => resolves(template, expected));
  });

  describe('nested expansion in defaults, alternatives and messages', () => {
    const cases: Array<[string, string]> = [
      ['ok ${UNSET_VAR-$FOO}', 'ok first'],
      ['ok ${UNSET_VAR-${FOO}}', 'ok first'],
      ['ok ${UNSET_VAR-${FOO} ${FOO}}', 'ok first first'],
      ['ok ${BAR:-$FOO}', 'ok first'],
      ['ok ${BAR:-${FOO}}', 'ok first'],
      ['ok ${BAR:-${FOO} ${FOO}}', 'ok first first'],
      ['ok ${BAR+$FOO}', 'ok first'],
      ['ok ${BAR+$FOO ${FOO:+second}}', 'ok first second'],
      ['${A:-${B:-${C:-deep}}}', 'deep'],
      ['${A:-$$literal}', '$literal'],
      ['ok ${SUBDOMAIN:-redis}.${FOO:?}', 'ok redis.first'],
    ];
    for (const [template, expected] of cases) it(`'${template}' → '${expected}'`, () => resolves(template, expected));

    it('evaluates a default only when it is used: an unused one reports nothing', () => {
      resolves('${A:+${A},}B', 'B');
      resolves('${FOO:-${NOT_SET}}', 'first');
      resolves('${FOO:-${NOT_SET:?never asked}}', 'first');
      resolves('${FOO?${B}}', 'first');
    });
    it('reports a variable a used default leaves unset', () => resolves('${A:-${B}}', '', ['B']));
  });

  describe('required: ${VAR:?message} and ${VAR?message}', () => {
    const cases: Array<[string, string, string]> = [
      ['not ok ${UNSET_VAR:?Mandatory Variable Unset}', 'UNSET_VAR', 'Mandatory Variable Unset'],
      ['not ok ${BAR:?Mandatory Variable Empty}', 'BAR', 'Mandatory Variable Empty'],
      ['not ok ${UNSET_VAR:?}', 'UNSET_VAR', ''],
      ['not ok ${UNSET_VAR?Mandatory Variable Unset}', 'UNSET_VAR', 'Mandatory Variable Unset'],
      ['not ok ${UNSET_VAR?}', 'UNSET_VAR', ''],
      ['not ok ${UNSET_VAR:?Mandatory Variable ${FOO}}', 'UNSET_VAR', 'Mandatory Variable first'],
      ['not ok ${UNSET_VAR?Mandatory Variable ${FOO}}', 'UNSET_VAR', 'Mandatory Variable first'],
      ['${UNSET_VAR?bar-baz}', 'UNSET_VAR', 'bar-baz'],
    ];
    for (const [template, variable, message] of cases) {
      it(`'${template}' names ${variable}${message ? ` with '${message}'` : ' without a message'}`, () => {
        const p = problem(template);
        assert.deepEqual(p, { kind: 'required', variable, message, column: template.indexOf('$') + 1 });
      });
    }

    it('describes the problem in one line, with and without the message (the empty ${VAR:?} case)', () => {
      assert.equal(describeProblem(problem('${UNSET_VAR:?set it}')), 'required variable UNSET_VAR is missing a value: set it');
      assert.equal(describeProblem(problem('${UNSET_VAR:?}')), 'required variable UNSET_VAR is missing a value');
    });

    const satisfied: Array<[string, string]> = [
      ['ok ${FOO:?err}', 'ok first'],
      ['ok ${FOO?err}', 'ok first'],
      ['ok ${BAR?err}', 'ok '],
      ['${FOO?bar-baz}', 'first'],
    ];
    for (const [template, expected] of satisfied) it(`'${template}' → '${expected}'`, () => resolves(template, expected));

    it('reports the column of the expression that failed, also inside a default', () => {
      assert.equal(problem('abc ${X:?}').column, 5);
      assert.equal(problem('${A:-x ${B:?no B}}').column, 8);
    });
  });

  describe('invalid syntax', () => {
    const invalid: Array<[string, RegExp, number]> = [
      ['${', /'\$\{' is not closed/, 1],
      ['${}', /'\$\{\}' names no variable/, 1],
      ['${ }', /' ' cannot start a variable name/, 1],
      ['${ foo}', /' ' cannot start a variable name/, 1],
      ['${foo }', /unexpected ' ' after the name/, 1],
      ['${foo!}', /unexpected '!' after the name/, 1],
      ['${foo:bar}', /unexpected ':' after the name/, 1],
      ['${foo:}', /unexpected ':' after the name/, 1],
      ['${1abc}', /'1' cannot start a variable name/, 1],
      ['x ${FOO', /'\$\{FOO' is not closed/, 3],
      ['${FOO:-unterminated', /'\$\{FOO:-…' is not closed/, 1],
      ['${FOO:-{"a":1}', /is not closed/, 1],
      ['ok ${FOO:-${}}', /names no variable/, 11],
    ];
    for (const [template, message, column] of invalid) {
      it(`refuses '${template}' at column ${column}`, () => {
        const p = problem(template);
        assert.equal(p.kind, 'invalid');
        assert.match(p.message, message);
        assert.equal(p.column, column);
        assert.match(describeProblem(p), new RegExp(`^invalid variable substitution at column ${column}: `));
        assert.ok(describeProblem(p, template).startsWith(`invalid variable substitution in '${template}' at column ${column}: `));
      });
    }

    it('refuses bad syntax in a default even when the default is not used (a typo is a typo)', () => {
      assert.equal(problem('${FOO:-${}}').kind, 'invalid');
    });
  });

  describe('hasExpression', () => {
    const cases: Array<[string, boolean]> = [
      ['plain', false], ['$$HOME', false], ['cost $$5', false], ['$', false], ['a $ b', false],
      ['$HOME', true], ['${HOME}', true], ['x${A:-b}', true], ['$${A}$B', true], ['${', false],
    ];
    for (const [text, expected] of cases) it(`'${text}' → ${String(expected)}`, () => assert.equal(hasExpression(text), expected));
  });
});
