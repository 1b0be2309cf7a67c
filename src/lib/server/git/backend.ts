/**
 * One smart-HTTP request served by the real `git http-backend`, run as a CGI (RFC 3875) per
 * request: the request body streams into its stdin, its answer streams out (the CGI head parsed
 * into a status and headers). Packs are never held in memory, either way.
 *
 * http-backend runs in a process group of its own with receive-pack or upload-pack and, for a push,
 * the pre-receive hook below it: a client that goes away takes the whole group down (SIGTERM), so a
 * cancelled push cancels its build (the hook's own handler) and moves no ref.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { Transform } from 'node:stream';
import { promisify } from 'node:util';
import { discardRest } from '../http/lingering-close.js';
import { parseCgiHead } from './smart-http.js';
import { gitEnv } from './repositories.js';

/** What one request needs besides the HTTP request and response. */
export interface BackendRequest {
  /** `GIT_PROJECT_ROOT`: the folder of all repositories. */
  projectRoot: string;
  /** The repository and route below the root, e.g. `/<fleet uuid>.git/info/refs`. */
  pathInfo: string;
  /** The query string without `?` (`service=git-receive-pack`). */
  query: string;
  /** Who the caller is (`REMOTE_USER`: receive-pack is enabled for authenticated users, and reflogs name them). */
  remoteUser: string;
  /** Largest request body accepted, bytes (as sent: a gzipped body counts compressed). */
  bodyLimit: number;
  /** Variables for the hooks (the server's loopback URL, the pusher's token, the fleet). */
  hookEnv: Record<string, string>;
  /** One line of http-backend's stderr (its errors), for the server's log. */
  log: (line: string) => void;
}

const execFileAsync = promisify(execFile);

/** Bytes of http-backend's answer held while the request body is still coming (see below). */
const HOLD_LIMIT = 256 * 1024;
let backendPath: Promise<string> | undefined;

/** `<git --exec-path>/git-http-backend`, looked up once. */
export function httpBackendPath(): Promise<string> {
  backendPath ??= execFileAsync('git', ['--exec-path'], { env: gitEnv() }).then(({ stdout }) => path.join(stdout.trim(), 'git-http-backend'));
  backendPath.catch(() => {
    backendPath = undefined;
  });
  return backendPath;
}

/** The http-backends running now, to end with the server. */
const running = new Set<ChildProcess>();

/** Ends every running http-backend's process group (server shutdown). */
export function stopAllBackends(): void {
  for (const child of running) killGroup(child, 'SIGTERM');
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

/** A plain-text answer before anything was sent (git prints the first line of it). */
function answer(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(`${message}\n`) });
  res.end(`${message}\n`);
}

/** A header safe to hand to git as an environment variable (a protocol tag, a media type). */
function safeHeader(value: string | string[] | undefined): string | undefined {
  const one = Array.isArray(value) ? value[0] : value;
  return one !== undefined && /^[\x20-\x7e]{1,256}$/.test(one) ? one : undefined;
}

/**
 * Serves `req` with http-backend and resolves when the answer is complete (or the client gone).
 * Never rejects: failures become a 4xx/5xx answer or a destroyed response.
 */
export async function serveWithHttpBackend(req: IncomingMessage, res: ServerResponse, options: BackendRequest): Promise<void> {
  let backend: string;
  try {
    backend = await httpBackendPath();
  } catch (err) {
    options.log(`git: cannot find git http-backend: ${(err as Error).message}`);
    answer(res, 500, 'git is not installed on the server');
    return;
  }
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > options.bodyLimit) {
    discardRest(req, req);
    answer(res, 413, `the push is larger than the server's limit of ${options.bodyLimit} bytes (--build-context-limit)`);
    return;
  }
  const env = gitEnv({
    ...options.hookEnv,
    GIT_PROJECT_ROOT: options.projectRoot,
    GIT_HTTP_EXPORT_ALL: '1',
    GATEWAY_INTERFACE: 'CGI/1.1',
    PATH_INFO: options.pathInfo,
    REQUEST_METHOD: req.method ?? 'GET',
    QUERY_STRING: options.query,
    REMOTE_USER: options.remoteUser,
    REMOTE_ADDR: req.socket.remoteAddress ?? '',
  });
  const contentType = safeHeader(req.headers['content-type']);
  if (contentType) env.CONTENT_TYPE = contentType;
  // http-backend inflates a gzip body itself (`Content-Encoding: gzip`, which git sends for large requests).
  const encoding = safeHeader(req.headers['content-encoding']);
  if (encoding) env.HTTP_CONTENT_ENCODING = encoding;
  if (Number.isFinite(declared)) env.CONTENT_LENGTH = String(declared);
  // Protocol v2 (`Git-Protocol: version=2`); http-backend passes it on as GIT_PROTOCOL.
  const protocol = safeHeader(req.headers['git-protocol']);
  if (protocol && /^[A-Za-z0-9=:._-]+$/.test(protocol)) env.HTTP_GIT_PROTOCOL = protocol;

  const child = spawn(backend, [], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once('close', () => {
    running.delete(child);
    resolve();
  }));
  child.once('error', (err) => {
    options.log(`git: http-backend did not start: ${err.message}`);
    answer(res, 500, 'git http-backend did not start');
  });

  let stderrTail = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderrTail += chunk.toString('utf8');
    let nl: number;
    while ((nl = stderrTail.indexOf('\n')) >= 0) {
      const line = stderrTail.slice(0, nl).trimEnd();
      stderrTail = stderrTail.slice(nl + 1);
      if (line) options.log(`git: ${line}`);
    }
  });

  // The body goes in as it arrives, counted against the limit (a chunked body declares no length).
  let received = 0;
  let tooLarge = false;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length;
      if (received > options.bodyLimit) {
        tooLarge = true;
        done(new Error('body limit'));
        return;
      }
      done(null, chunk);
    },
  });
  req.pipe(counter).pipe(child.stdin);
  counter.on('error', () => {
    if (!tooLarge) return;
    killGroup(child, 'SIGTERM');
    // The rest of the body is read and dropped: a connection closed under a sending client is a
    // "connection reset" there, while a drained one lets git show the 413 and its message.
    req.unpipe(counter);
    discardRest(req, req);
    answer(res, 413, `the push is larger than the server's limit of ${options.bodyLimit} bytes (--build-context-limit)`);
  });
  // http-backend may answer before reading everything (an error); the rest of the body is dropped.
  child.stdin.on('error', () => undefined);

  // A client gone before the answer ended (Ctrl-C of git): end the whole group, hook included.
  res.once('close', () => {
    if (!res.writableFinished) killGroup(child, 'SIGTERM');
  });

  // http-backend writes its 200 head before it reads the body; the answer is held back (a few
  // bytes in practice: stateless RPC reads the whole request first) until the body is all in, so
  // a push over the limit can still be answered 413. Past HOLD_LIMIT it flows anyway.
  let held: Buffer[] = [];
  let heldBytes = 0;
  let bodyIn = false;
  let stdoutEnded = false;
  // 'hold' until the head is out; 'drop' once an error answer replaced http-backend's.
  let state: 'hold' | 'body' | 'drop' = 'hold';
  const release = (): void => {
    if (state !== 'hold' || (!bodyIn && !stdoutEnded && heldBytes <= HOLD_LIMIT)) return;
    const buffer = Buffer.concat(held);
    let parsed;
    try {
      parsed = parseCgiHead(buffer);
    } catch (err) {
      options.log(`git: ${(err as Error).message}`);
      killGroup(child, 'SIGTERM');
      answer(res, 502, 'git http-backend gave a malformed answer');
      state = 'drop';
      return;
    }
    if (!parsed) {
      if (stdoutEnded) {
        answer(res, 502, 'git http-backend ended without an answer');
        state = 'drop';
      }
      return;
    }
    held = [];
    if (res.headersSent || res.destroyed) {
      // An error answer (413) went out already.
      state = 'drop';
      return;
    }
    state = 'body';
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of parsed.headers) {
      const key = name.toLowerCase();
      const prior = headers[key];
      headers[key] = prior === undefined ? value : [...(Array.isArray(prior) ? prior : [prior]), value];
    }
    res.writeHead(parsed.status, headers);
    const rest = buffer.subarray(parsed.bodyStart);
    if (rest.length > 0) res.write(rest);
    if (stdoutEnded) res.end();
  };
  counter.once('finish', () => {
    bodyIn = true;
    release();
  });
  child.stdout.on('data', (chunk: Buffer) => {
    if (state === 'drop' || res.destroyed) return;
    if (state === 'body') {
      if (!res.write(chunk)) {
        child.stdout.pause();
        res.once('drain', () => child.stdout.resume());
      }
      return;
    }
    held.push(chunk);
    heldBytes += chunk.length;
    release();
  });
  child.stdout.once('end', () => {
    stdoutEnded = true;
    if (state === 'hold') release();
    else if (state === 'body' && !res.destroyed) res.end();
  });

  await exited;
  if (stderrTail.trim()) options.log(`git: ${stderrTail.trim()}`);
}
