/**
 * The BuildKit trace fold: messages encoded here the way the engine sends them (protobuf
 * StatusResponse, base64 in the `aux` of a `moby.buildkit.trace` line), folded, and checked.
 */
import assert from 'node:assert/strict';
import { BuildkitTrace, decodeStatus, isCountedStep, OUTPUT_MAX_LINES, StatusResponseType, type TraceMessage } from '../../src/lib/docker/buildkit/status.js';
import { explainBuildkitError } from '../../src/lib/docker/buildkit/build.js';
import { ClassicStepTimes } from '../../src/lib/docker/image-build.js';

const T0 = 1_796_000_000_000;

function ts(msSinceT0: number): { seconds: number; nanos: number } {
  const ms = T0 + msSinceT0;
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

interface V {
  digest: string;
  name: string;
  cached?: boolean;
  started?: number;
  completed?: number;
  error?: string;
}

/** One trace message as the engine would put it in `aux`. */
function aux(m: { vertexes?: V[]; logs?: Array<{ vertex: string; text: string; stream?: number }> }): string {
  const obj = {
    vertexes: (m.vertexes ?? []).map((v) => ({
      digest: v.digest,
      name: v.name,
      cached: v.cached ?? false,
      ...(v.started !== undefined ? { started: ts(v.started) } : {}),
      ...(v.completed !== undefined ? { completed: ts(v.completed) } : {}),
      ...(v.error ? { error: v.error } : {}),
    })),
    logs: (m.logs ?? []).map((l) => ({ vertex: l.vertex, stream: l.stream ?? 1, timestamp: ts(0), msg: Buffer.from(l.text) })),
  };
  return Buffer.from(StatusResponseType.encode(StatusResponseType.fromObject(obj)).finish()).toString('base64');
}

function msg(m: Parameters<typeof aux>[0]): TraceMessage {
  const decoded = decodeStatus(aux(m));
  assert.ok(decoded);
  return decoded;
}

const FROM = { digest: 'sha256:from', name: '[stage-0 1/4] FROM docker.io/skiff-test/busybox:amd64' };
const COPY = { digest: 'sha256:copy', name: '[stage-0 2/4] COPY app /app' };
const RUN = { digest: 'sha256:run', name: '[stage-0 3/4] RUN make' };
const TEST = { digest: 'sha256:test', name: '[stage-0 4/4] RUN ./test.sh' };
const CTX = { digest: 'sha256:ctx', name: '[internal] load remote build context' };
const COPYCTX = { digest: 'sha256:copyctx', name: 'copy /context /' };
const META = { digest: 'sha256:meta', name: '[internal] load metadata for docker.io/skiff-test/busybox:amd64' };
const EXPORT = { digest: 'sha256:export', name: 'exporting to image' };

function fold(trace: BuildkitTrace, messages: TraceMessage[]): string[] {
  return messages.flatMap((m) => trace.apply(m));
}

describe('BuildKit trace', () => {
  describe('decodeStatus', () => {
    it('decodes vertices with their times in ms, and log chunks as bytes', () => {
      const m = msg({ vertexes: [{ ...RUN, started: 100, completed: 1350 }], logs: [{ vertex: RUN.digest, text: 'hello\n', stream: 2 }] });
      assert.deepEqual(m.vertexes, [{ digest: RUN.digest, name: RUN.name, cached: false, started: T0 + 100, completed: T0 + 1350 }]);
      assert.equal(m.logs[0]?.stream, 2);
      assert.equal(m.logs[0]?.msg.toString(), 'hello\n');
    });

    it('returns undefined for bytes that are no StatusResponse, and never throws', () => {
      assert.equal(decodeStatus('!!!not base64 at all'), undefined);
      assert.equal(decodeStatus(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), undefined);
      for (let i = 0; i < 200; i++) {
        const bytes = Buffer.from(Array.from({ length: 1 + (i % 40) }, (_, j) => (i * 31 + j * 17) % 256));
        assert.doesNotThrow(() => decodeStatus(bytes));
      }
    });

    it('treats Go zero times (year 1) as not set', () => {
      const bytes = StatusResponseType.encode(StatusResponseType.fromObject({ vertexes: [{ digest: 'd', name: 'n', started: { seconds: -62135596800, nanos: 0 } }] })).finish();
      assert.equal(decodeStatus(bytes)?.vertexes[0]?.started, undefined);
    });
  });

  it('prints a plain line per step start, output line, cache hit and end, numbered in order shown; internal steps left out', () => {
    const trace = new BuildkitTrace();
    const lines = fold(trace, [
      msg({ vertexes: [{ ...CTX, started: 0 }, { ...META, started: 0 }] }),
      msg({ vertexes: [{ ...CTX, started: 0, completed: 10 }, { ...COPYCTX, started: 10, completed: 20 }, { ...META, started: 0, completed: 30 }] }),
      msg({ vertexes: [{ ...FROM, cached: true, started: 30, completed: 30 }, { ...COPY, cached: true, started: 30, completed: 30 }] }),
      msg({ vertexes: [{ ...RUN, started: 40 }] }),
      msg({ logs: [{ vertex: RUN.digest, text: 'compiling a\ncompil' }] }),
      msg({ logs: [{ vertex: RUN.digest, text: 'ing b\n' }, { vertex: RUN.digest, text: 'linking', stream: 2 }] }),
      msg({ vertexes: [{ ...RUN, started: 40, completed: 1280 }] }),
      msg({ vertexes: [{ ...EXPORT, started: 1300, completed: 1400 }] }),
    ]);
    assert.deepEqual(lines, [
      `#1 ${FROM.name}`,
      '#1 CACHED',
      `#2 ${COPY.name}`,
      '#2 CACHED',
      `#3 ${RUN.name}`,
      '#3 compiling a',
      '#3 compiling b',
      '#3 linking',
      '#3 DONE 1.2s',
    ]);
  });

  it('reports each end once though the engine re-sends a vertex as it changes', () => {
    const trace = new BuildkitTrace();
    const done = { ...RUN, started: 0, completed: 500 };
    const lines = fold(trace, [msg({ vertexes: [{ ...RUN, started: 0 }] }), msg({ vertexes: [done] }), msg({ vertexes: [done] })]);
    assert.deepEqual(lines, [`#1 ${RUN.name}`, '#1 DONE 0.5s']);
  });

  it('counts steps as the classic builder does (FROM and internal steps out) and times them', () => {
    const trace = new BuildkitTrace();
    fold(trace, [
      msg({ vertexes: [{ ...META, started: 0, completed: 5 }, { ...FROM, cached: true, started: 5, completed: 5 }, { ...COPY, cached: true }] }),
      msg({ vertexes: [{ ...RUN, started: 100, completed: 2600 }, { ...TEST, started: 2600, completed: 2650 }, { ...EXPORT, started: 2650, completed: 2700 }] }),
    ]);
    assert.equal(trace.steps, 3);
    assert.equal(trace.cachedSteps, 1);
    assert.deepEqual(trace.stepTimes(), [
      { name: COPY.name, cached: true, seconds: 0 },
      { name: RUN.name, cached: false, seconds: 2.5 },
      { name: TEST.name, cached: false, seconds: 0.1 },
    ]);
    assert.ok(isCountedStep('[3/6] RUN make'), 'a one-stage build names steps without the stage');
    assert.ok(!isCountedStep('[builder 1/3] FROM docker.io/library/alpine'));
    assert.ok(!isCountedStep('[internal] load build definition from Dockerfile'));
  });

  it('gives the live view the running steps, the last 5 lines of the one that printed last, and done/cached/total', () => {
    const trace = new BuildkitTrace();
    fold(trace, [
      msg({ vertexes: [{ ...FROM, cached: true, started: 0, completed: 0 }, { ...COPY, cached: true }, { ...RUN, started: 10 }, { ...TEST, started: 20 }] }),
      msg({ logs: [{ vertex: RUN.digest, text: '1\n2\n3\n4\n5\n6\n7' }] }),
      msg({ logs: [{ vertex: TEST.digest, text: 'a\nb\n' }] }),
    ]);
    assert.deepEqual(trace.progress(), {
      done: 1,
      cached: 1,
      total: 3,
      running: [
        { name: RUN.name, startedAt: T0 + 10 },
        { name: TEST.name, startedAt: T0 + 20 },
      ],
      lastLines: ['a', 'b'],
    });
    trace.apply(msg({ logs: [{ vertex: RUN.digest, text: '\n' }] }));
    assert.deepEqual(trace.progress().lastLines, ['3', '4', '5', '6', '7']);
    trace.apply(msg({ vertexes: [{ ...RUN, started: 10, completed: 90 }, { ...TEST, started: 20, completed: 95 }] }));
    const p = trace.progress();
    assert.deepEqual([p.done, p.cached, p.total, p.running.length], [3, 1, 3, 0]);
  });

  it('names the failing step with its whole output, not a sibling the engine cancelled', () => {
    const trace = new BuildkitTrace();
    const out = Array.from({ length: 50 }, (_, i) => `line ${i + 1}`);
    const lines = fold(trace, [
      msg({ vertexes: [{ ...RUN, started: 0 }, { ...TEST, started: 0 }] }),
      msg({ logs: [{ vertex: RUN.digest, text: `${out.join('\n')}\n` }] }),
      msg({ vertexes: [{ ...TEST, started: 0, completed: 50, error: 'context canceled' }] }),
      msg({ vertexes: [{ ...RUN, started: 0, completed: 60, error: 'executor failed running [/bin/sh -c make]: exit code: 3' }] }),
    ]);
    assert.ok(lines.includes('#1 ERROR: executor failed running [/bin/sh -c make]: exit code: 3'));
    assert.ok(lines.includes('#2 ERROR: context canceled'));
    assert.deepEqual(trace.failed(), { name: RUN.name, error: 'executor failed running [/bin/sh -c make]: exit code: 3', output: out });
    assert.equal(trace.progress().done, 0);
  });

  it('shows an internal step only when it fails, with what it printed', () => {
    const trace = new BuildkitTrace();
    const lines = fold(trace, [
      msg({ vertexes: [{ ...META, started: 0 }] }),
      msg({ logs: [{ vertex: META.digest, text: 'resolving\n' }] }),
      msg({ vertexes: [{ ...META, started: 0, completed: 10, error: 'failed to do request: no such host' }] }),
    ]);
    assert.deepEqual(lines, [`#1 ${META.name}`, '#1 resolving', '#1 ERROR: failed to do request: no such host']);
    assert.equal(trace.failed()?.name, META.name);
  });

  it('keeps the last lines of a long output, saying how many were cut; a line without its newline is kept too', () => {
    const trace = new BuildkitTrace();
    trace.apply(msg({ vertexes: [{ ...RUN, started: 0 }] }));
    const total = OUTPUT_MAX_LINES + 500;
    for (let i = 0; i < total; i += 100) trace.apply(msg({ logs: [{ vertex: RUN.digest, text: Array.from({ length: 100 }, (_, j) => `l${i + j}\n`).join('') }] }));
    trace.apply(msg({ logs: [{ vertex: RUN.digest, text: 'no newline' }] }));
    const kept = trace.output(RUN.digest);
    assert.equal(kept[0], '… 500 earlier lines cut');
    assert.equal(kept[1], 'l500');
    assert.equal(kept.at(-1), 'no newline');
    assert.equal(kept.length, OUTPUT_MAX_LINES + 2);
  });

  it('shows the last drawing of a line a progress bar redraws with carriage returns', () => {
    const trace = new BuildkitTrace();
    const lines = fold(trace, [msg({ vertexes: [{ ...RUN, started: 0 }] }), msg({ logs: [{ vertex: RUN.digest, text: '10%\r50%\r100%\r\nok\r\n' }] })]);
    assert.deepEqual(lines.slice(1), ['#1 100%', '#1 ok']);
  });

  it('ignores logs of vertices it never saw and vertices without a digest', () => {
    const trace = new BuildkitTrace();
    assert.deepEqual(fold(trace, [msg({ logs: [{ vertex: 'sha256:unknown', text: 'x\n' }] }), msg({ vertexes: [{ digest: '', name: 'x', started: 0 }] })]), []);
  });
});

describe('explainBuildkitError', () => {
  it('a # syntax= frontend that cannot be pulled', () => {
    const e = explainBuildkitError(
      'failed to solve with frontend dockerfile.v0: failed to solve with frontend gateway.v0: failed to do request: Head "https://nope.invalid/v2/frontend/manifests/1": dial tcp: lookup nope.invalid on 10.0.0.53:53: no such host',
      'web/Dockerfile',
    );
    assert.equal(e.message, "the Dockerfile's syntax directive names frontend image nope.invalid/frontend:1, which cannot be pulled (the registry host is unknown)");
    assert.match(e.hint ?? '', /remove the '# syntax=' line.*docker load/);
    assert.equal(e.where, 'web/Dockerfile:1');
  });

  it('a secret not given', () => {
    const e = explainBuildkitError('failed to solve with frontend dockerfile.v0: secret tok not found: not found', 'Dockerfile');
    assert.equal(e.message, "the build needs secret 'tok', but secret 'tok' was not given");
    assert.equal(e.hint, 'add it to build-secrets in balena.yml, or pass --secret id=tok,src=<file>');
  });

  it('a Dockerfile parse error, with its line', () => {
    const e = explainBuildkitError('failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 5: unknown instruction: ECHO', 'api/Dockerfile');
    assert.deepEqual(e, { message: 'Dockerfile parse error: unknown instruction: ECHO', where: 'api/Dockerfile:5' });
  });

  it('a base image neither local nor pullable', () => {
    const raw = 'failed to solve with frontend dockerfile.v0: failed to create LLB definition: failed to do request: Head "https://registry-1.docker.io/v2/skiff-test/nothere/manifests/1": dial tcp: lookup registry-1.docker.io: no such host';
    assert.equal(explainBuildkitError(raw, 'Dockerfile').message, 'the base image registry-1.docker.io/skiff-test/nothere:1 is neither on the engine nor pullable (the registry host is unknown)');
    const byStep = explainBuildkitError('failed to do request: Head "https://registry-1.docker.io/v2/x/manifests/1": no such host', 'Dockerfile', '[internal] load metadata for docker.io/skiff-test/nothere:1');
    assert.equal(byStep.message, 'the base image docker.io/skiff-test/nothere:1 is neither on the engine nor pullable (the registry host is unknown)');
    assert.match(explainBuildkitError('pull access denied, repository does not exist or may require authorization', 'Dockerfile').message, /^the base image .* \(access denied\)$/);
  });

  it('otherwise, the engine text without the frontend noise', () => {
    const e = explainBuildkitError('failed to solve with frontend dockerfile.v0: failed to create LLB definition: target stage nope could not be found', 'Dockerfile');
    assert.deepEqual(e, { message: 'target stage nope could not be found' });
  });
});

describe('classic builder step times', () => {
  it('times each step from its Step line to the next (or the end), marks cache hits, leaves FROM out', () => {
    const times = new ClassicStepTimes();
    const at = (line: string, ms: number) => times.line(line, T0 + ms);
    at('Step 1/4 : FROM skiff-test/busybox:amd64', 0);
    at(' ---> 1234abcd', 10);
    at('Step 2/4 : COPY app /app', 20);
    at(' ---> Using cache', 25);
    at(' ---> 5678abcd', 26);
    at('Step 3/4 : RUN make', 30);
    at('compiling', 500);
    at('Step 4/4 : CMD ["app"]', 2530);
    assert.deepEqual(times.end(T0 + 2580), [
      { name: 'COPY app /app', cached: true, seconds: 0 },
      { name: 'RUN make', cached: false, seconds: 2.5 },
      { name: 'CMD ["app"]', cached: false, seconds: 0.1 },
    ]);
  });

  it('has no steps for output without Step lines', () => {
    const times = new ClassicStepTimes();
    times.line('Sending build context to Docker daemon  2.048kB', T0);
    assert.deepEqual(times.end(T0 + 100), []);
  });
});
