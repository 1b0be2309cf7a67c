import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseDotenv, readDotenv, type DotenvResult } from '../../src/lib/project/dotenv.js';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { scratchDir } from '../support/tmp.js';

const none = (): string | undefined => undefined;
const parse = (text: string, env: Record<string, string> = {}): DotenvResult => parseDotenv(text, (n) => (Object.hasOwn(env, n) ? env[n] : undefined));
const value = (text: string, name: string, env: Record<string, string> = {}): string | undefined => parse(text, env).values[name];

function rejects(text: string, message: RegExp, where: string): void {
  assert.throws(() => parse(text), (err: unknown) => {
    assert.ok(err instanceof SkiffError, `expected a SkiffError, got ${String(err)}`);
    assert.equal(err.code, 'project');
    assert.match(err.message, message);
    assert.equal(err.where, where);
    return true;
  });
}

describe('.env (compose dotenv rules)', () => {
  describe('one line, one variable', () => {
    const cases: Array<[string, string, string]> = [
      ['FOO=bar', 'FOO', 'bar'],
      ['FOO =bar', 'FOO', 'bar'],
      ['FOO= bar', 'FOO', 'bar'],
      [' KEY =value', 'KEY', 'value'],
      ['\tKEY=value', 'KEY', 'value'],
      ['FOO=bar ', 'FOO', 'bar'],
      ['FOO=foobar=', 'FOO', 'foobar='],
      ['OPTION_A=1:B', 'OPTION_A', '1:B'],
      ['OPTION_A: 1', 'OPTION_A', '1'],
      ['OPTION_A: Foo=bar', 'OPTION_A', 'Foo=bar'],
      ['FOO.BAR=foobar', 'FOO.BAR', 'foobar'],
      ['VAR-WITH-DASHES=dashes', 'VAR-WITH-DASHES', 'dashes'],
      ['a[1]=c', 'a[1]', 'c'],
      ['árvíztűrő-TÜKÖRFÚRÓGÉP=ÁRVÍZTŰRŐ-tükörfúrógép', 'árvíztűrő-TÜKÖRFÚRÓGÉP', 'ÁRVÍZTŰRŐ-tükörfúrógép'],
      ['EMPTY=', 'EMPTY', ''],
      ['URL=postgres://localhost:5432/db?sslmode=disable', 'URL', 'postgres://localhost:5432/db?sslmode=disable'],
      ['B=first one with an unquoted phrase', 'B', 'first one with an unquoted phrase'],
      ['FOO=a\\tb', 'FOO', 'a\\tb'],
    ];
    for (const [line, name, expected] of cases) it(`reads ${JSON.stringify(line)} as ${name}=${JSON.stringify(expected)}`, () => assert.equal(value(line, name), expected));
  });

  describe('export, comments and blank lines', () => {
    const cases: Array<[string, string, string]> = [
      ['export OPTION_A=2', 'OPTION_A', '2'],
      ['export\tOPTION_A=2', 'OPTION_A', '2'],
      ['  export OPTION_A=2', 'OPTION_A', '2'],
      ['export OPTION_A="export A"', 'OPTION_A', 'export A'],
      ['export exportFoo=2', 'exportFoo', '2'],
      ['exportFOO=2', 'exportFOO', '2'],
      ['export_FOO =2', 'export_FOO', '2'],
      ['export.FOO= 2', 'export.FOO', '2'],
      ['FOO=bar # this is foo', 'FOO', 'bar'],
      ['FOO=bar #this is foo', 'FOO', 'bar'],
      ['FOO=bar #', 'FOO', 'bar'],
      ['FOO=123#not-an-inline-comment', 'FOO', '123#not-an-inline-comment'],
      ['FOO="bar#baz" # comment', 'FOO', 'bar#baz'],
      ['FOO="bar#baz"#', 'FOO', 'bar#baz'],
      ["FOO='bar#baz' # comment", 'FOO', 'bar#baz'],
    ];
    for (const [line, name, expected] of cases) it(`reads ${JSON.stringify(line)} as ${name}=${JSON.stringify(expected)}`, () => assert.equal(value(line, name), expected));

    it('skips blank lines, whitespace-only lines, CRLF line ends and comments, indented or not', () => {
      assert.deepEqual(parse('\n\r\n\t\t \n# comment\n\t # indented comment\nA=1\r\nB=2\r\n').values, { A: '1', B: '2' });
    });
    it('ignores a UTF-8 byte order mark', () => assert.deepEqual(parse('\uFEFFA=1\n').values, { A: '1' }));
  });

  describe('quotes', () => {
    const cases: Array<[string, string]> = [
      ["A='1'", '1'],
      ["A=''", ''],
      ["A='\\n'", '\\n'],
      ['A="1"', '1'],
      ['A=""', ''],
      ['A="\\n"', '\n'],
      ['A = "echo \'asd\'" # Inline comment', "echo 'asd'"],
      ["A='Let\\'s go!'", "Let's go!"],
      ['A="escaped\\"bar"', 'escaped"bar'],
      ['A="\\"quoted\\""', '"quoted"'],
      ['A="\'d\'"', "'d'"],
      ['A="bar\\nbaz"', 'bar\nbaz'],
      ['A="a\\tb"', 'a\tb'],
      ['A="Z\\aZ\\bZ\\fZ\\nZ\\rZ\\tZ\\vZ\\\\Z\\0123Z"', 'Z\x07Z\bZ\fZ\nZ\rZ\tZ\vZ\\ZSZ'],
      ['A="\\0123"', 'S'],
      ['A="\\x07"', '\\x07'],
      ['A="\\u12e4"', '\\u12e4'],
      ['A="bar\\n\\ b\\az"', 'bar\n\\ b\x07z'],
      ['A="bar\\\\\\n\\ b\\az"', 'bar\\\n\\ b\x07z'],
      ['A="bar\\nbaz\\\\"', 'bar\nbaz\\'],
    ];
    for (const [line, expected] of cases) it(`reads ${line} as ${JSON.stringify(expected)}`, () => assert.equal(value(line, 'A'), expected));

    it('lets a quoted value span lines and keeps counting lines after it', () => {
      const r = parse("J = 'first line\nsecond line\nthird line'\nK=\"a\nb\"\nL=${MISSING}\n");
      assert.equal(r.values.J, 'first line\nsecond line\nthird line');
      assert.equal(r.values.K, 'a\nb');
      assert.deepEqual(r.warnings, [{ message: 'variable MISSING is not set; using an empty string', where: '.env:6' }]);
    });
  });

  describe('substitution inside values', () => {
    it('substitutes earlier lines in bare and double-quoted values, not in single-quoted ones', () => {
      assert.deepEqual(parse('OPTION_A=1\nOPTION_B=${OPTION_A}\nOPTION_C=$OPTION_B\nOPTION_D=${OPTION_A}_${OPTION_B}\nQ="quote $OPTION_A"\nS=\'quote $OPTION_A\'\n').values, {
        OPTION_A: '1', OPTION_B: '1', OPTION_C: '1', OPTION_D: '1_1', Q: 'quote 1', S: 'quote $OPTION_A',
      });
    });
    it('uses the process environment before the file (compose precedence)', () => {
      const r = parse('OPTION_A=1\nOPTION_B=${OPTION_A}\nOPTION_D=${OPTION_A}_${OPTION_B}\n', { OPTION_A: '5' });
      assert.deepEqual(r.values, { OPTION_A: '1', OPTION_B: '5', OPTION_D: '5_5' });
    });
    it('supports defaults and nesting: ${A:-${B}}', () => assert.equal(value('B=fallback\nA=${UNSET:-${B}}', 'A'), 'fallback'));
    it('keeps \\$ and $$ as a literal dollar in double quotes', () => {
      assert.deepEqual(parse('FOO=test\nA="foo\\$BAR"\nB="foo\\${BAR}"\nC="foo\\${FOO} ${FOO}"\nD=$$FOO\n').values, { FOO: 'test', A: 'foo$BAR', B: 'foo${BAR}', C: 'foo${FOO} test', D: '$FOO' });
    });
    it('turns an unset variable into an empty string, with one warning naming .env:line', () => {
      const r = parse('A=x\nB=$NOPE\nC=${NOPE}\n');
      assert.deepEqual(r.values, { A: 'x', B: '', C: '' });
      assert.deepEqual(r.warnings, [{ message: 'variable NOPE is not set; using an empty string', where: '.env:2' }]);
    });
  });

  describe('a name without a value', () => {
    it('takes the value from the environment when it is set there', () => {
      assert.deepEqual(parse('foo=bar\nFROM_ENV\nbar=baz\n', { FROM_ENV: 'x' }).values, { foo: 'bar', FROM_ENV: 'x', bar: 'baz' });
    });
    it('leaves the variable unset when the environment does not have it', () => {
      assert.deepEqual(parse('NOT_FOUND\n').values, {});
    });
  });

  it('ignores names that start with a digit, as compose does, and says so', () => {
    const r = parse('1A=x\nB=y\n');
    assert.deepEqual(r.values, { B: 'y' });
    assert.match(r.warnings[0]?.message ?? '', /'1A' starts with a digit/);
    assert.equal(r.warnings[0]?.where, '.env:1');
  });

  describe('malformed lines are errors with .env:line', () => {
    const bad: Array<[string, string, RegExp, string]> = [
      ['a name with a space', 'A=1\nINVALID LINE\n', /variable name 'INVALID LINE' contains a space/, '.env:2'],
      ['a name with a space before =', 'FOO BAR=1', /contains a space/, '.env:1'],
      ['a $ in the name', 'lol$wut', /unexpected character '\$' in variable name 'lol\$wut'/, '.env:1'],
      ['a character compose refuses', '%!(EXTRA string)=foo', /unexpected character '%'/, '.env:1'],
      ['no name before =', '="value"', /no variable name before '='/, '.env:1'],
      ['an unterminated double quote', 'A=1\nKEY="', /unterminated quoted value "/, '.env:2'],
      ['an unterminated value', 'KEY="value', /unterminated quoted value/, '.env:1'],
      ['an escaped closing quote', 'KEY="value\\"', /unterminated quoted value/, '.env:1'],
      ['the other quote', 'KEY="value\'', /unterminated quoted value/, '.env:1'],
      ['an unterminated single quote', "KEY='", /unterminated quoted value/, '.env:1'],
      ['an escaped single quote', "KEY='value\\'", /unterminated quoted value/, '.env:1'],
      ['a single quote closed by a double', "KEY='value\"", /unterminated quoted value/, '.env:1'],
      ['text after the closing quote', 'A="x" B=y', /unexpected 'B=y' after the quoted value of A/, '.env:1'],
      ['a required variable', 'A=1\nB=${NEED:?set NEED first}\n', /required variable NEED is missing a value: set NEED first/, '.env:2'],
      ['bad substitution syntax', '\n\nB=${oops\n', /invalid variable substitution in '\$\{oops' at column 1: '\$\{oops' is not closed/, '.env:3'],
      ['bad syntax in double quotes', 'B="${}"', /names no variable/, '.env:1'],
      ['an error after a multi-line value', "# c\nfoo=\"\n  a\n  multiline\n  value\n\"\nINVALID LINE\nzot=qix", /contains a space/, '.env:7'],
    ];
    for (const [name, text, message, where] of bad) it(`refuses ${name}`, () => rejects(text, message, where));

    it('does not substitute in single quotes, so bad syntax there is just text', () => assert.equal(value("A='${'", 'A'), '${'));
  });

  describe('readDotenv', () => {
    it('refuses a .env that is not a readable file', () => {
      const dir = scratchDir('skiff-dotenv-');
      mkdirSync(path.join(dir, '.env'));
      assert.throws(() => readDotenv(dir, none), (err: unknown) => err instanceof SkiffError && err.code === 'project' && err.where === '.env' && /cannot read \.env/.test(err.message));
    });
    it('reads the .env of the project folder', () => {
      const dir = scratchDir('skiff-dotenv-');
      writeFileSync(path.join(dir, '.env'), 'A=1\n');
      assert.deepEqual(readDotenv(dir, none), { file: path.join(dir, '.env'), values: { A: '1' }, warnings: [] });
    });
    it('returns no values when there is no .env', () => {
      assert.deepEqual(readDotenv(scratchDir('skiff-dotenv-'), none), { values: {}, warnings: [] });
    });
  });
});
