import assert from 'node:assert/strict';
import { classicBuilderError, lowerDockerfile, missingSecretsError, scanDockerfile } from '../../src/lib/project/dockerfile-features.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

const ALL = { heredocs: true, copyLink: true };
const W = 'web/Dockerfile';

function lower(text: string, options = ALL) {
  const out = lowerDockerfile(text, W, options);
  assert.equal(out.contents.split('\n').length, text.split('\n').length, 'line count kept');
  return out;
}

/** The exec-form array of the instruction on a 1-based line of lowered text. */
function execForm(text: string, line: number, keyword = 'RUN'): { flags: string; argv: string[] } {
  const l = text.split('\n')[line - 1] ?? '';
  const m = new RegExp(`^${keyword} ((?:--\\S+ )*)(\\[.*\\])$`).exec(l);
  assert.ok(m, `line ${line} is an exec-form ${keyword}: ${l}`);
  return { flags: (m[1] ?? '').trim(), argv: JSON.parse(m[2] ?? '') as string[] };
}

function throwsSkiff(fn: () => unknown, where: string, message: RegExp, code: SkiffError['code'] = 'project'): SkiffError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SkiffError, `a SkiffError, got ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.equal(caught.where, where);
  assert.match(caught.message, message);
  return caught;
}

describe('scanDockerfile', () => {
  it('lists each BuildKit-only use with its line', () => {
    const scan = scanDockerfile(
      [
        'FROM alpine',
        'RUN --mount=type=cache,target=/root/.cache pip install x',
        'RUN --mount=target=/src echo bind',
        'RUN --network=none --security=insecure true',
        'COPY --chmod=0755 a /a',
        'COPY --link b /b',
        'ADD --link=false c /c',
        'COPY --parents x/./y /z/',
        'ADD --checksum=sha256:abc https://example.com/f /f',
        'ADD --keep-git-dir=true https://example.com/r.git /r',
        'COPY --chown=1:1 plain /plain',
        'RUN echo plain',
      ].join('\n'),
      W,
    );
    assert.deepEqual(scan.buildkitOnly, [
      { line: 2, what: 'RUN --mount=type=cache' },
      { line: 3, what: 'RUN --mount=type=bind' },
      { line: 4, what: 'RUN --network' },
      { line: 4, what: 'RUN --security' },
      { line: 5, what: 'COPY --chmod' },
      { line: 6, what: 'COPY --link' },
      { line: 7, what: 'ADD --link' },
      { line: 8, what: 'COPY --parents' },
      { line: 9, what: 'ADD --checksum' },
      { line: 10, what: 'ADD --keep-git-dir' },
    ]);
    assert.equal(scan.copyLink, 2);
    assert.equal(scan.heredocs, 0);
    assert.equal(scan.escape, '\\');
    assert.equal(scan.syntax, undefined);
  });

  it('counts heredocs in RUN, COPY and ADD, not in other instructions', () => {
    const scan = scanDockerfile('FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<a.txt <<b.txt /dir/\nA\na.txt\nB\nb.txt\nLABEL x="<<EOF"\n', W);
    assert.equal(scan.heredocs, 3);
    assert.deepEqual(scan.buildkitOnly, [
      { line: 2, what: 'RUN heredoc (<<EOF)' },
      { line: 5, what: 'COPY heredoc (<<a.txt)' },
      { line: 5, what: 'COPY heredoc (<<b.txt)' },
    ]);
  });

  it('does not take a quoted <<EOF or a here-string for a heredoc', () => {
    const scan = scanDockerfile('FROM a\nRUN echo "<<EOF" && cat <<<word\nRUN ["sh", "-c", "cat <<EOF"]\n', W);
    assert.equal(scan.heredocs, 0);
    assert.deepEqual(scan.buildkitOnly, []);
  });

  it('reads secret mounts: id, default id from target, required', () => {
    const scan = scanDockerfile(
      [
        'FROM a',
        'RUN --mount=type=secret,id=npmrc,target=/root/.npmrc npm ci',
        'RUN --mount=type=secret,target=/run/secrets/token,required cat /run/secrets/token',
        'RUN --mount=type=secret,id=opt,required=false true',
        'RUN --mount=type=secret,id=aws,dst=/aws --mount=type=cache,target=/c true',
      ].join('\n'),
      W,
    );
    assert.deepEqual(scan.secretMounts, [
      { id: 'npmrc', line: 2, required: undefined, target: '/root/.npmrc' },
      { id: 'token', line: 3, required: true, target: '/run/secrets/token' },
      { id: 'opt', line: 4, required: false },
      { id: 'aws', line: 5, required: undefined, target: '/aws' },
    ]);
  });

  it('refuses --mount without a value and a secret mount that names nothing', () => {
    throwsSkiff(() => scanDockerfile('FROM a\n\nRUN --mount true\n', W), `${W}:3`, /--mount needs a value/);
    throwsSkiff(() => scanDockerfile('FROM a\nRUN --mount= true\n', W), `${W}:2`, /--mount needs a value/);
    throwsSkiff(() => scanDockerfile('FROM a\nRUN --mount=type=secret true\n', W), `${W}:2`, /names no secret/);
  });

  describe('# syntax directive', () => {
    const cases: Array<[string, string, { image: string; line: number } | undefined]> = [
      ['at the top', '# syntax=docker/dockerfile:1.4\nFROM a\n', { image: 'docker/dockerfile:1.4', line: 1 }],
      ['without spaces', '#syntax=docker/dockerfile:1\nFROM a\n', { image: 'docker/dockerfile:1', line: 1 }],
      ['key in any case', '# SYNTAX = example.com/df:2  \nFROM a\n', { image: 'example.com/df:2', line: 1 }],
      ['after another directive', '# escape=\\\n# syntax=x/df\nFROM a\n', { image: 'x/df', line: 2 }],
      ['after an ordinary comment', '# hello\n# syntax=x/df\nFROM a\n', undefined],
      ['after a blank line', '\n# syntax=x/df\nFROM a\n', undefined],
      ['after an unknown directive', '# foo=bar\n# syntax=x/df\nFROM a\n', undefined],
      ['after an instruction', 'FROM a\n# syntax=x/df\n', undefined],
    ];
    for (const [name, text, expected] of cases) {
      it(name, () => assert.deepEqual(scanDockerfile(text, W).syntax, expected));
    }
  });

  it('honours the escape directive for continuation lines', () => {
    const scan = scanDockerfile('# escape=`\nFROM a\nRUN --network=none `\n  echo C:\\path\\\nCOPY --link x /y\n', W);
    assert.equal(scan.escape, '`');
    // With a backtick escape the trailing backslash of line 4 is an ordinary character: COPY is its own instruction.
    assert.deepEqual(scan.buildkitOnly, [
      { line: 3, what: 'RUN --network' },
      { line: 5, what: 'COPY --link' },
    ]);
  });

  it('reads flags on continuation lines, past comment and blank lines', () => {
    const scan = scanDockerfile('FROM a\nRUN \\\n# a comment inside\n\n  --mount=type=secret,id=tok \\\n  cat /run/secrets/tok\n', W);
    assert.deepEqual(scan.secretMounts, [{ id: 'tok', line: 2, required: undefined }]);
  });

  it('names the line of an unterminated heredoc, in RUN and in COPY', () => {
    const e = throwsSkiff(() => scanDockerfile('FROM a\nRUN echo ok\nRUN <<EOF\necho hi\nEOf\n', W), `${W}:3`, /heredoc <<EOF opened here is never closed: no line reads EOF/);
    assert.match(e.hint ?? '', /add a line reading exactly EOF/);
    throwsSkiff(() => scanDockerfile('FROM a\nCOPY <<"END" /x\ncontent\n END\n', W), `${W}:2`, /heredoc <<"END" opened here is never closed: no line reads END/);
    throwsSkiff(() => lowerDockerfile('FROM a\n\nCOPY <<A <<B /d/\na\nA\nb\n', W, ALL), `${W}:3`, /<<B .*no line reads B/);
  });

  it('rejects an invalid escape directive', () => {
    throwsSkiff(() => scanDockerfile('# escape=x\nFROM a\n', W), `${W}:1`, /invalid escape directive/);
  });
});

describe('classicBuilderError and missingSecretsError', () => {
  it('names the first BuildKit-only use and the reason', () => {
    const scan = scanDockerfile('FROM a\nRUN true\nRUN --mount=type=cache,target=/c true\nCOPY --link a /a\n', W);
    const e = classicBuilderError(scan, W, '--no-buildkit');
    assert.ok(e);
    assert.equal(e.code, 'project');
    assert.equal(e.toLine().split('\n').length, 1);
    assert.match(e.toLine(), /^web\/Dockerfile:3: RUN --mount=type=cache needs BuildKit, which this build does not use \(--no-buildkit\)\. Build without --no-buildkit \(or with --buildkit\)/);
    assert.equal(classicBuilderError(scanDockerfile('FROM a\nRUN true\n', W), W, 'x'), undefined);
  });

  it('names the first required secret that was not given', () => {
    const scan = scanDockerfile('FROM a\nRUN --mount=type=secret,id=opt,required=false true\nRUN --mount=type=secret,id=npmrc npm ci\nRUN --mount=type=secret,id=tok,required true\n', W);
    const e = missingSecretsError(scan, ['tok'], W);
    assert.ok(e);
    assert.equal(e.where, `${W}:3`);
    assert.equal(e.message, "the Dockerfile mounts secret 'npmrc', which was not given");
    assert.match(e.hint ?? '', /build-secrets in balena\.yml .*\.balena\/secrets.*--secret id=npmrc,src=<file>/);
    assert.equal(missingSecretsError(scan, ['npmrc', 'tok'], W), undefined);
  });
});

describe('lowerDockerfile', () => {
  it('gives back a Dockerfile without these features byte for byte', () => {
    const texts = [
      'FROM a\r\nRUN echo hi \\\r\n  there\r\nCOPY --chmod=0755 x /y\r\n',
      '# escape=`\nFROM a\nRUN --mount=type=cache,target=/c echo `\n  hi\n# trailing comment',
      'FROM a\nRUN cat <<<word\n',
    ];
    for (const text of texts) {
      const out = lowerDockerfile(text, W, ALL);
      assert.equal(out.contents, text);
      assert.deepEqual(out.changes, []);
    }
  });

  it('leaves a Dockerfile with a # syntax directive alone', () => {
    const text = '# syntax=docker/dockerfile:1.4\nFROM a\nRUN <<EOF\necho hi\nEOF\nCOPY --link a /a\n';
    assert.deepEqual(lowerDockerfile(text, W, ALL), { contents: text, changes: [] });
  });

  it('lowers only what the options ask for', () => {
    const text = 'FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY --link a /a\n';
    assert.equal(lowerDockerfile(text, W, { heredocs: false, copyLink: false }).contents, text);
    assert.equal(lower(text, { heredocs: false, copyLink: true }).contents, 'FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY a /a\n');
    assert.equal(lower(text, { heredocs: true, copyLink: false }).contents, `FROM a\nRUN ${JSON.stringify(['/bin/sh', '-c', 'echo hi\n'])}\n\n\nCOPY --link a /a\n`);
  });

  describe('RUN heredocs', () => {
    const cases: Array<{ name: string; text: string; line: number; flags?: string; argv: string[] }> = [
      {
        name: 'a lone heredoc runs its content in the shell',
        text: 'FROM a\nRUN <<EOF\necho "hi $HOME"\necho \'q\' \\\n  done\nEOF\nRUN true\n',
        line: 2,
        argv: ['/bin/sh', '-c', 'echo "hi $HOME"\necho \'q\' \\\n  done\n'],
      },
      {
        name: 'flags are kept',
        text: 'FROM a\nRUN --mount=type=cache,target=/c --network=none <<EOF\nls /c\nEOF\n',
        line: 2,
        flags: '--mount=type=cache,target=/c --network=none',
        argv: ['/bin/sh', '-c', 'ls /c\n'],
      },
      {
        name: '<<- strips leading tabs of a lone heredoc',
        text: 'FROM a\nRUN <<-EOT\n\techo a\n\t\techo b\n  echo c\n\tEOT\n',
        line: 2,
        argv: ['/bin/sh', '-c', 'echo a\necho b\n  echo c\n'],
      },
      {
        name: 'a quoted marker on a lone heredoc changes nothing (BuildKit ignores expansion for RUN)',
        text: "FROM a\nrun <<'EOF'\necho $X\nEOF\n",
        line: 2,
        argv: ['/bin/sh', '-c', 'echo $X\n'],
      },
      {
        name: 'a command with a heredoc goes to the shell whole',
        text: 'FROM a\nRUN python3 <<EOF > /out\nprint("hi")\nEOF\n',
        line: 2,
        argv: ['/bin/sh', '-c', 'python3 <<EOF > /out\nprint("hi")\nEOF'],
      },
      {
        name: 'several heredocs, quoted and tab-stripping markers, with the shell reading them',
        text: 'FROM a\nRUN cat <<"A" - <<-B > /f\n$x\nA\n\tb\n\tB\n',
        line: 2,
        argv: ['/bin/sh', '-c', 'cat <<"A" - <<-B > /f\n$x\nA\n\tb\nB'],
      },
      {
        name: 'two lone heredocs are a complex command',
        text: 'FROM a\nRUN <<A <<B\none\nA\ntwo\nB\n',
        line: 2,
        argv: ['/bin/sh', '-c', '<<A <<B\none\nA\ntwo\nB'],
      },
      {
        name: 'a heredoc after continuation lines and comments starts after the last of them',
        text: 'FROM a\nRUN --network=none \\\n# comment\n  cat <<EOF\n# not a comment: content\nEOF\n',
        line: 2,
        flags: '--network=none',
        argv: ['/bin/sh', '-c', 'cat <<EOF\n# not a comment: content\nEOF'],
      },
      {
        name: 'the stage SHELL is used',
        text: 'FROM a\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\nRUN <<EOF\necho hi\nEOF\n',
        line: 3,
        argv: ['/bin/bash', '-eo', 'pipefail', '-c', 'echo hi\n'],
      },
      {
        name: 'a stage built FROM another stage inherits its SHELL; a new stage does not',
        text: 'FROM a AS base\nSHELL ["/bin/ash", "-c"]\nFROM base AS next\nRUN <<EOF\nx\nEOF\nFROM b\nRUN <<EOF\ny\nEOF\n',
        line: 4,
        argv: ['/bin/ash', '-c', 'x\n'],
      },
      {
        name: 'backslashes, quotes and unicode are JSON-escaped',
        text: 'FROM a\nRUN <<EOF\nprintf "%s\\n" "tab\there" \'é✓\' "\\\\"\nEOF\n',
        line: 2,
        argv: ['/bin/sh', '-c', 'printf "%s\\n" "tab\there" \'é✓\' "\\\\"\n'],
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const out = lower(c.text);
        const { flags, argv } = execForm(out.contents, c.line, c.text.split('\n')[c.line - 1]?.split(' ')[0]);
        assert.deepEqual(argv, c.argv);
        assert.equal(flags, c.flags ?? '');
        assert.ok(out.changes.some((ch) => ch.line === c.line));
      });
    }

    it('a new stage starts with /bin/sh -c again', () => {
      const out = lower('FROM a AS base\nSHELL ["/bin/ash", "-c"]\nFROM b\nRUN <<EOF\ny\nEOF\n');
      assert.deepEqual(execForm(out.contents, 4).argv, ['/bin/sh', '-c', 'y\n']);
    });

    it('pads the spanned lines with empty lines so later lines keep their numbers', () => {
      const text = 'FROM a\nRUN <<EOF\none\ntwo\nEOF\nRUN bad-command\n';
      const out = lower(text);
      const lines = out.contents.split('\n');
      assert.deepEqual(lines.slice(2, 5), ['', '', '']);
      assert.equal(lines[5], 'RUN bad-command');
    });

    it('keeps CRLF line ends', () => {
      const out = lower('FROM a\r\nRUN <<EOF\r\necho hi\r\nEOF\r\nRUN true\r\n');
      assert.equal(out.contents, `FROM a\r\nRUN ${JSON.stringify(['/bin/sh', '-c', 'echo hi\n'])}\r\n\r\n\r\nRUN true\r\n`);
    });

    it('a lone #! heredoc is written to a file, run, removed, and its status kept', () => {
      const text = 'FROM a\nRUN --mount=type=cache,target=/c <<EOF\n#!/usr/bin/env python3\nprint("hi")\nEOF\n';
      const out = lower(text);
      const { flags, argv } = execForm(out.contents, 2);
      assert.equal(flags, '--mount=type=cache,target=/c');
      assert.deepEqual(argv.slice(0, 2), ['/bin/sh', '-c']);
      const script = argv[2] ?? '';
      assert.equal(
        script,
        [
          'f="${TMPDIR:-/tmp}/skiff-heredoc-$$"',
          "cat > \"$f\" <<'SKIFF_EOF'",
          '#!/usr/bin/env python3',
          'print("hi")',
          'SKIFF_EOF',
          'chmod +x "$f"',
          '"$f"',
          's=$?',
          'rm -f "$f"',
          'exit $s',
        ].join('\n'),
      );
      assert.match(out.changes[0]?.what ?? '', /temporary file/);
    });

    it('the script marker never collides with a line of the script', () => {
      const out = lower('FROM a\nRUN <<EOF\n#!/bin/sh\nSKIFF_EOF\nSKIFF_EOF_1\nEOF\n');
      const script = execForm(out.contents, 2).argv[2] ?? '';
      assert.match(script, /<<'SKIFF_EOF_2'\n#!\/bin\/sh\nSKIFF_EOF\nSKIFF_EOF_1\nSKIFF_EOF_2\n/);
    });

    it('honours a backtick escape on the instruction line', () => {
      const out = lower('# escape=`\nFROM a\nRUN --network=none `\n  <<EOF\necho C:\\dir\\\nEOF\n');
      const { flags, argv } = execForm(out.contents, 3);
      assert.equal(flags, '--network=none');
      assert.deepEqual(argv, ['/bin/sh', '-c', 'echo C:\\dir\\\n']);
    });
  });

  describe('COPY and ADD heredocs', () => {
    it('write the file with the shell, unquoted: variables expand, command substitution stays literal', () => {
      const out = lower('FROM a\nWORKDIR /app\nCOPY <<EOF /etc/app.conf\nname=$NAME\nwhen=$(date) `id`\nEOF\n');
      const { argv } = execForm(out.contents, 3);
      assert.deepEqual(argv.slice(0, 2), ['/bin/sh', '-c']);
      assert.equal(
        argv[2],
        [
          'set -e',
          'f="/etc/app.conf"',
          'if [ -d "$f" ]; then f="$f"/\'EOF\'; else case "$f" in */*) mkdir -p "${f%/*}/" ;; esac; fi',
          'cat > "$f" <<SKIFF_EOF',
          'name=$NAME',
          'when=\\$(date) \\`id\\`',
          'SKIFF_EOF',
          "chmod '0644' \"$f\"",
        ].join('\n'),
      );
      assert.equal(out.changes[0]?.line, 3);
    });

    it('a quoted marker is written verbatim; --chmod and --chown apply; tabs stripped by <<-', () => {
      const out = lower('FROM a\nCOPY --chown=app:app --chmod=0755 <<-"EOF" run.sh\n\t#!/bin/sh\n\techo $HOME $(id)\n\tEOF\n');
      const script = execForm(out.contents, 2).argv[2] ?? '';
      assert.match(script, /^set -e\nf="run\.sh"\n/);
      assert.match(script, /cat > "\$f" <<'SKIFF_EOF'\n#!\/bin\/sh\necho \$HOME \$\(id\)\nSKIFF_EOF\nchmod '0755' "\$f"\nchown "app:app" "\$f"$/);
    });

    it('several heredocs go into the destination directory under their names', () => {
      const out = lower('FROM a\nADD --link <<a.txt <<b.txt /dir/\nA\na.txt\nB\nb.txt\n');
      const script = execForm(out.contents, 2).argv[2] ?? '';
      assert.match(script, /mkdir -p "\/dir\/"\nf="\/dir\/a\.txt"\ncat > "\$f" <<SKIFF_EOF\nA\nSKIFF_EOF\nchmod '0644' "\$f"\nmkdir -p "\/dir\/"\nf="\/dir\/b\.txt"\ncat > "\$f" <<SKIFF_EOF\nB\nSKIFF_EOF/);
      assert.deepEqual(
        out.changes.map((c) => c.line),
        [2, 2],
      );
    });

    it('context files with heredocs: COPY keeps the files, the RUN on the next line writes the heredocs', () => {
      const out = lower('FROM a\nCOPY --chmod=0600 --link conf/x.ini <<extra.ini /etc/app/\nk=v\nextra.ini\nRUN true\n');
      const lines = out.contents.split('\n');
      assert.equal(lines[1], 'COPY --chmod=0600 conf/x.ini /etc/app/');
      const script = execForm(out.contents, 3).argv[2] ?? '';
      assert.match(script, /f="\/etc\/app\/extra\.ini"\ncat > "\$f" <<SKIFF_EOF\nk=v\nSKIFF_EOF\nchmod '0600' "\$f"$/);
      assert.equal(lines[3], '');
      assert.equal(lines[4], 'RUN true');
    });

    it('a destination with variables stays expandable; quotes and backslashes are escaped', () => {
      const out = lower('FROM a\nCOPY <<EOF $DIR/a"b\\c\nx\nEOF\n');
      const script = execForm(out.contents, 2).argv[2] ?? '';
      assert.match(script, /f="\$DIR\/a\\"b\\\\c"/);
    });

    it('refuses a COPY heredoc in a scratch stage (also one built from a scratch stage)', () => {
      const e = throwsSkiff(() => lowerDockerfile('FROM busybox AS b\nRUN <<EOF\ntrue\nEOF\nFROM scratch\nCOPY <<EOF /x\nx\nEOF\n', W, ALL), `${W}:6`, /COPY heredoc \(<<EOF\) in a FROM scratch stage/);
      assert.match(e.hint ?? '', /remove the heredoc.*Docker 23\+/);
      throwsSkiff(() => lowerDockerfile('FROM scratch AS s\nFROM s\nADD <<EOF /x\nx\nEOF\n', W, ALL), `${W}:3`, /ADD heredoc/);
      // Not lowering heredocs: nothing to refuse.
      assert.doesNotThrow(() => lowerDockerfile('FROM scratch\nCOPY <<EOF /x\nx\nEOF\n', W, { heredocs: false, copyLink: true }));
    });
  });

  describe('long heredocs', () => {
    // 1600 lines of 54 characters: ~86 KiB, over the 64 KiB line limit of the engine's Dockerfile parser.
    const body = Array.from({ length: 1600 }, (_, i) => `line ${String(i).padStart(5, '0')} ${'y"'.repeat(20)}\\\n`).join('');

    it('cuts a lowered instruction over 64 KiB into continuation lines that join back to it', () => {
      const text = `FROM a\nCOPY <<EOF /big.txt\n${body}EOF\nRUN true\n`;
      const out = lower(text);
      const lines = out.contents.split('\n');
      const pieces = lines.slice(1, 1 + 1601).filter((l) => l !== '');
      assert.ok(pieces.length >= 2);
      for (const p of pieces) assert.ok(p.length < 65_535);
      for (const p of pieces.slice(0, -1)) {
        assert.ok(p.endsWith('\\') && !p.endsWith('\\\\'), 'one escape at the end');
      }
      for (const p of pieces.slice(1)) assert.doesNotMatch(p, /^\s*(#|$)/);
      const joined = pieces.map((p, i) => (i < pieces.length - 1 ? p.slice(0, -1) : p)).join('');
      assert.match(joined, /^RUN \[/);
      const script = (JSON.parse(joined.slice('RUN '.length)) as string[])[2] ?? '';
      assert.ok(script.includes(`<<SKIFF_EOF\n${body}SKIFF_EOF\n`));
      assert.equal(lines[lines.length - 2], 'RUN true');
    });

    it('cuts with the backtick escape of the file', () => {
      const out = lower(`# escape=\`\nFROM a\nRUN <<EOF\n${body}EOF\n`);
      const pieces = out.contents.split('\n').filter((l) => l.startsWith('RUN') || (l !== '' && !l.startsWith('#') && !l.startsWith('FROM')));
      assert.ok(pieces.length >= 2);
      assert.ok(pieces[0]?.endsWith('`'));
    });

    it('refuses a heredoc the shell would get as one argument over 128 KiB', () => {
      const huge = 'echo 0123456789012345678901234567890123456789\n'.repeat(3000);
      throwsSkiff(() => lowerDockerfile(`FROM a\nRUN true\nRUN <<EOF\n${huge}EOF\n`, W, ALL), `${W}:3`, /too long to rewrite .*128 KiB/);
    });
  });

  describe('--link', () => {
    const cases: Array<[string, string, string]> = [
      ['--link', 'COPY --link a /a', 'COPY a /a'],
      ['--link=true with other flags', 'COPY --from=build --link=true --chown=1:1 /out /app', 'COPY --from=build --chown=1:1 /out /app'],
      ['--link=false', 'ADD --link=false a.tar /', 'ADD a.tar /'],
      ['lower-case keyword', 'copy --link a /a', 'copy a /a'],
    ];
    for (const [name, from, to] of cases) {
      it(`drops ${name}`, () => {
        const out = lower(`FROM a\n${from}\nRUN true\n`);
        assert.equal(out.contents, `FROM a\n${to}\nRUN true\n`);
        assert.deepEqual(out.changes.map((c) => c.line), [2]);
        assert.match(out.changes[0]?.what ?? '', /--link dropped/);
      });
    }

    it('joins a continued COPY onto its first line and pads the rest', () => {
      const out = lower('FROM a\nCOPY --link \\\n  # comment\n  a \\\n  /a\nRUN true\n');
      assert.equal(out.contents, 'FROM a\nCOPY a   /a\n\n\n\nRUN true\n');
    });
  });
});

describe('lowerDockerfile: COPY heredocs under a USER', () => {
  const lower = (text: string) => lowerDockerfile(text, 'Dockerfile', { heredocs: true, copyLink: true }).contents.split('\n');
  it('writes as root, as COPY does, and gives the stage its USER back (inherited from a parent stage too)', () => {
    const lines = lower('FROM a AS base\nUSER 1000:1000\nFROM base\nCOPY <<EOF /etc/app.conf\nk=v\nEOF\nRUN id\n');
    assert.equal(lines[3], 'USER 0:0');
    assert.match(lines[4] ?? '', /^RUN \["\/bin\/sh","-c",/);
    assert.equal(lines[5], 'USER 1000:1000');
    assert.equal(lines[6], 'RUN id', 'line numbers kept');
  });
  it('adds nothing for root, and shifts later lines only when the heredoc is too short to hold the three', () => {
    assert.equal(lower('FROM a\nUSER root\nCOPY <<EOF /x\nk\nEOF\n')[2]?.startsWith('RUN '), true);
    const short = lower('FROM a\nUSER app\nCOPY <<EOF /x\nEOF\nRUN id\n');
    assert.deepEqual([short[2], short[4], short[5]], ['USER 0:0', 'USER app', 'RUN id']);
  });
});
