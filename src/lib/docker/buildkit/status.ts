/**
 * BuildKit's build trace: the `moby.buildkit.trace` messages of `POST /build?version=2`, decoded,
 * and folded into what Skiff shows (plain lines, the live view's snapshot, step times, the failing
 * step's output). The fold is pure: messages in, state out; no clock but the trace's own.
 */
import protobuf from 'protobufjs';
import type { BuildProgress, BuildStepTime } from '../image-build.js';

/**
 * The part of BuildKit's status schema Skiff reads, from moby/buildkit
 * `api/services/control/control.proto` (StatusResponse and its parts) and
 * `google/protobuf/timestamp.proto`. Defined in code so `dist/` needs no `.proto` files.
 */
const root = protobuf.Root.fromJSON({
  nested: {
    google: { nested: { protobuf: { nested: { Timestamp: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } } } } } },
    moby: {
      nested: {
        buildkit: {
          nested: {
            v1: {
              nested: {
                StatusResponse: {
                  fields: {
                    vertexes: { rule: 'repeated', type: 'Vertex', id: 1 },
                    statuses: { rule: 'repeated', type: 'VertexStatus', id: 2 },
                    logs: { rule: 'repeated', type: 'VertexLog', id: 3 },
                    warnings: { rule: 'repeated', type: 'VertexWarning', id: 4 },
                  },
                },
                Vertex: {
                  fields: {
                    digest: { type: 'string', id: 1 },
                    inputs: { rule: 'repeated', type: 'string', id: 2 },
                    name: { type: 'string', id: 3 },
                    cached: { type: 'bool', id: 4 },
                    started: { type: 'google.protobuf.Timestamp', id: 5 },
                    completed: { type: 'google.protobuf.Timestamp', id: 6 },
                    error: { type: 'string', id: 7 },
                  },
                },
                VertexStatus: {
                  fields: {
                    ID: { type: 'string', id: 1 },
                    vertex: { type: 'string', id: 2 },
                    name: { type: 'string', id: 3 },
                    current: { type: 'int64', id: 4 },
                    total: { type: 'int64', id: 5 },
                    timestamp: { type: 'google.protobuf.Timestamp', id: 6 },
                    started: { type: 'google.protobuf.Timestamp', id: 7 },
                    completed: { type: 'google.protobuf.Timestamp', id: 8 },
                  },
                },
                VertexLog: {
                  fields: {
                    vertex: { type: 'string', id: 1 },
                    timestamp: { type: 'google.protobuf.Timestamp', id: 2 },
                    stream: { type: 'int64', id: 3 },
                    msg: { type: 'bytes', id: 4 },
                  },
                },
                VertexWarning: {
                  fields: {
                    vertex: { type: 'string', id: 1 },
                    level: { type: 'int64', id: 2 },
                    short: { type: 'bytes', id: 3 },
                    detail: { rule: 'repeated', type: 'bytes', id: 4 },
                    url: { type: 'string', id: 5 },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
});

/** The protobuf type of one trace message, exported so tests can encode messages the engine would send. */
export const StatusResponseType = root.lookupType('moby.buildkit.v1.StatusResponse');

/** A vertex (one node of the build graph) as last reported; times in ms since the epoch. */
export interface TraceVertex {
  digest: string;
  name: string;
  cached: boolean;
  started?: number;
  completed?: number;
  error?: string;
}

/** A chunk of a vertex's output: `stream` 1 is stdout, 2 stderr; `msg` may hold several lines or part of one. */
export interface TraceLog {
  vertex: string;
  stream: number;
  msg: Buffer;
}

/** A vertex's progress counter (pulls, transfers): not shown by Skiff today, kept for completeness. */
export interface TraceStatus {
  id: string;
  vertex: string;
  name: string;
  current: number;
  total: number;
}

export interface TraceWarning {
  vertex: string;
  short: string;
}

/** One decoded `moby.buildkit.v1.StatusResponse`. */
export interface TraceMessage {
  vertexes: TraceVertex[];
  statuses: TraceStatus[];
  logs: TraceLog[];
  warnings: TraceWarning[];
}

interface RawTimestamp {
  seconds?: number;
  nanos?: number;
}

function ms(t: RawTimestamp | undefined): number | undefined {
  if (!t) return undefined;
  const v = (t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
  // Go's zero time.Time (year 1) marshals as a negative timestamp: it means "not yet".
  return v > 0 ? v : undefined;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function buf(v: unknown): Buffer {
  return v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : Buffer.alloc(0);
}

function list(v: unknown): Array<Record<string, unknown>> {
  return Array.isArray(v) ? (v.filter((x) => x !== null && typeof x === 'object') as Array<Record<string, unknown>>) : [];
}

/**
 * Decodes one trace message: the `aux` of a `{"id":"moby.buildkit.trace","aux":"<base64>"}` line
 * (base64 text) or its raw protobuf bytes.
 * @returns undefined when the bytes are not a StatusResponse (the caller skips that message)
 */
export function decodeStatus(aux: string | Uint8Array): TraceMessage | undefined {
  try {
    const bytes = typeof aux === 'string' ? Buffer.from(aux, 'base64') : aux;
    const obj = StatusResponseType.toObject(StatusResponseType.decode(bytes), { longs: Number, defaults: false }) as Record<string, unknown>;
    return {
      vertexes: list(obj.vertexes).map((v) => {
        const started = ms(v.started as RawTimestamp | undefined);
        const completed = ms(v.completed as RawTimestamp | undefined);
        const error = str(v.error);
        return { digest: str(v.digest), name: str(v.name), cached: v.cached === true, ...(started ? { started } : {}), ...(completed ? { completed } : {}), ...(error ? { error } : {}) };
      }),
      statuses: list(obj.statuses).map((s) => ({ id: str(s.ID), vertex: str(s.vertex), name: str(s.name), current: num(s.current), total: num(s.total) })),
      logs: list(obj.logs).map((l) => ({ vertex: str(l.vertex), stream: num(l.stream), msg: buf(l.msg) })),
      warnings: list(obj.warnings).map((w) => ({ vertex: str(w.vertex), short: buf(w.short).toString('utf8') })),
    };
  } catch {
    return undefined;
  }
}

/** `[stage-0 3/6] RUN …` (`[3/6] RUN …` in a one-stage build): a Dockerfile instruction (FROM included); BuildKit's own vertices have other names. */
const STEP = /^\[(?:[^\]]+ )?\d+\/\d+\] (.*)$/s;

/** A Dockerfile step that makes a layer or runs: what the classic builder counts too (FROM is left out). */
export function isCountedStep(name: string): boolean {
  const m = STEP.exec(name);
  return m !== null && !/^FROM\s/i.test(m[1] ?? '');
}

/** BuildKit's bookkeeping vertices: shown only when they fail. */
function isQuiet(name: string): boolean {
  return name.startsWith('[internal] ') || name === 'copy /context /' || name.startsWith('exporting ');
}

/** Bounds on the output kept per step: the failing step's output goes into the error, whole if it fits. */
export const OUTPUT_MAX_LINES = 2000;
export const OUTPUT_MAX_BYTES = 1024 * 1024;

interface VertexState extends TraceVertex {
  /** Order of first sight. */
  seen: number;
  /** `#n` in the plain output, given when the vertex is first shown. */
  number?: number;
  shownStart: boolean;
  shownEnd: boolean;
  lines: string[];
  bytes: number;
  cut: number;
  partial: string;
  lastLogSeq: number;
}

/**
 * The fold of a BuildKit trace. Feed it each decoded message with {@link BuildkitTrace.apply}
 * (which returns the plain lines to print, `docker build --progress=plain` style); read the live
 * view's snapshot, the step counts and times, and the failing step at any point.
 */
export class BuildkitTrace {
  private readonly vertices = new Map<string, VertexState>();
  private nextNumber = 1;
  private logSeq = 0;

  /** Folds one message in; returns the plain lines it produces (`#3 RUN make`, `#3 DONE 1.2s`, …). */
  apply(msg: TraceMessage): string[] {
    const out: string[] = [];
    for (const v of msg.vertexes) {
      if (!v.digest) continue;
      let s = this.vertices.get(v.digest);
      if (!s) {
        s = { digest: v.digest, name: v.name, cached: false, seen: this.vertices.size, shownStart: false, shownEnd: false, lines: [], bytes: 0, cut: 0, partial: '', lastLogSeq: 0 };
        this.vertices.set(v.digest, s);
      }
      // A vertex is re-sent whole as it changes: take the newest view of each field.
      if (v.name) s.name = v.name;
      s.cached ||= v.cached;
      if (v.started !== undefined) s.started = v.started;
      if (v.completed !== undefined) s.completed = v.completed;
      if (v.error) s.error = v.error;
      this.show(s, out);
    }
    for (const log of msg.logs) {
      const s = this.vertices.get(log.vertex);
      if (!s) continue;
      this.addOutput(s, log.msg.toString('utf8'), out);
    }
    return out;
  }

  private label(s: VertexState): string {
    s.number ??= this.nextNumber++;
    return `#${s.number}`;
  }

  private visible(s: VertexState): boolean {
    return !isQuiet(s.name) || s.error !== undefined;
  }

  private show(s: VertexState, out: string[]): void {
    if (!this.visible(s)) return;
    const begun = s.started !== undefined || s.cached || s.completed !== undefined || s.error !== undefined;
    if (!begun) return;
    if (!s.shownStart) {
      s.shownStart = true;
      out.push(`${this.label(s)} ${s.name}`);
      // A quiet vertex shown because it failed: its output so far was held back.
      for (const line of s.lines) out.push(`${this.label(s)} ${line}`);
    }
    if (s.shownEnd) return;
    if (s.error !== undefined) {
      this.flush(s, out);
      s.shownEnd = true;
      out.push(`${this.label(s)} ERROR: ${s.error}`);
    } else if (s.cached) {
      this.flush(s, out);
      s.shownEnd = true;
      out.push(`${this.label(s)} CACHED`);
    } else if (s.completed !== undefined) {
      this.flush(s, out);
      s.shownEnd = true;
      out.push(`${this.label(s)} DONE ${seconds(s).toFixed(1)}s`);
    }
  }

  private flush(s: VertexState, out: string[]): void {
    if (s.partial === '') return;
    const line = s.partial;
    s.partial = '';
    this.keep(s, line, out);
  }

  private addOutput(s: VertexState, text: string, out: string[]): void {
    s.lastLogSeq = ++this.logSeq;
    const parts = (s.partial + text).split('\n');
    s.partial = parts.pop() ?? '';
    for (const part of parts) this.keep(s, part, out);
  }

  private keep(s: VertexState, raw: string, out: string[]): void {
    // A progress bar redraws its line with \r: the last drawing is what a terminal would show.
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const shown = line.includes('\r') ? line.slice(line.lastIndexOf('\r') + 1) : line;
    s.lines.push(shown);
    s.bytes += Buffer.byteLength(shown) + 1;
    while (s.lines.length > OUTPUT_MAX_LINES || (s.bytes > OUTPUT_MAX_BYTES && s.lines.length > 1)) {
      const dropped = s.lines.shift() ?? '';
      s.bytes -= Buffer.byteLength(dropped) + 1;
      s.cut++;
    }
    if (this.visible(s) && s.shownStart) out.push(`${this.label(s)} ${shown}`);
  }

  private ordered(): VertexState[] {
    return [...this.vertices.values()].sort((a, b) => a.seen - b.seen);
  }

  private counted(): VertexState[] {
    return this.ordered().filter((s) => isCountedStep(s.name));
  }

  /** Dockerfile steps seen that make a layer or run (FROM left out), as the classic builder counts them. */
  get steps(): number {
    return this.counted().length;
  }

  /** Of {@link steps}, those BuildKit took from its cache. */
  get cachedSteps(): number {
    return this.counted().filter((s) => s.cached).length;
  }

  /** Each counted step in order of first sight, with its seconds (0 when cached or not finished). */
  stepTimes(): BuildStepTime[] {
    return this.counted().map((s) => ({ name: s.name, cached: s.cached, seconds: s.cached ? 0 : Math.round(seconds(s) * 10) / 10 }));
  }

  /** The live view's snapshot (see {@link BuildProgress}). */
  progress(): BuildProgress {
    const counted = this.counted();
    const finished = counted.filter((s) => s.error === undefined && (s.cached || s.completed !== undefined));
    const running = this.ordered().filter((s) => this.visible(s) && s.started !== undefined && s.completed === undefined && !s.cached && s.error === undefined);
    const loudest = [...running].sort((a, b) => b.lastLogSeq - a.lastLogSeq)[0];
    const lastLines = loudest ? [...loudest.lines, ...(loudest.partial ? [loudest.partial] : [])].filter((l) => l.trim() !== '').slice(-5) : [];
    return {
      done: finished.length,
      cached: finished.filter((s) => s.cached).length,
      total: counted.length,
      running: running.map((s) => ({ name: s.name, startedAt: s.started ?? 0 })),
      lastLines,
    };
  }

  /** A vertex's whole output as kept (with a first line saying how many earlier lines were cut). */
  output(digest: string): string[] {
    const s = this.vertices.get(digest);
    if (!s) return [];
    const lines = [...s.lines, ...(s.partial ? [s.partial] : [])];
    return s.cut > 0 ? [`… ${s.cut} earlier lines cut`, ...lines] : lines;
  }

  /**
   * The step that failed: the first vertex with an error that is not merely a cancelled sibling
   * (BuildKit cancels the steps running beside the failing one, each with "context canceled").
   */
  failed(): { name: string; error: string; output: string[] } | undefined {
    const errored = this.ordered().filter((s) => s.error !== undefined);
    const s = errored.find((e) => !/context canceled/.test(e.error ?? '')) ?? errored[0];
    return s ? { name: s.name, error: s.error ?? '', output: this.output(s.digest) } : undefined;
  }
}

function seconds(s: TraceVertex): number {
  return s.started !== undefined && s.completed !== undefined ? Math.max(0, (s.completed - s.started) / 1000) : 0;
}
