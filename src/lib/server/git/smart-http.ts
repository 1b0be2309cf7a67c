/**
 * The pure parts of serving a fleet's repository over git's smart HTTP protocol
 * (gitprotocol-http(5)): which fleet and which git service a request path names, the caller's
 * HTTP basic credentials, the head of a CGI answer (RFC 3875 §6) from `git http-backend`, and a
 * per-address limit on failed authentications. No I/O here: backend.ts and routes/git.ts do it.
 */

/** What a request to `/git/<fleet>.git/<rest>` asks for. */
export interface GitRequestTarget {
  /** The fleet's name as the path gives it (percent-decoded). */
  fleet: string;
  /** The path inside the repository as http-backend expects it after the project: `/info/refs`, `/git-upload-pack`, `/git-receive-pack`. */
  rest: string;
  /** `write` for a push (receive-pack), `read` for clone and fetch (upload-pack). */
  access: 'read' | 'write';
}

/** Why a path is not a smart-HTTP request for a fleet's repository (answered 404 or 403). */
export type GitPathProblem = { status: 404 | 403; message: string };

const SERVICES = new Set(['git-upload-pack', 'git-receive-pack']);

/**
 * Reads `/git/<fleet>[.git]/<rest>` and its query. Only the smart protocol's three routes are
 * served: `info/refs?service=…` (the ref advertisement) and the two service POSTs; the dumb
 * protocol (plain `info/refs`, `objects/…`, `HEAD`) would need `update-server-info` after every
 * push and hands out objects without a pack negotiation, so it is refused.
 *
 * @param path the request path without the query, as sent (percent-encoded)
 * @param service the `service` query parameter, if any
 */
export function parseGitPath(path: string, service: string | undefined): GitRequestTarget | GitPathProblem {
  const match = /^\/git\/([^/]+)(\/.*)?$/.exec(path);
  if (!match?.[1]) return { status: 404, message: 'a repository URL is /git/<fleet>.git' };
  let fleet: string;
  try {
    fleet = decodeURIComponent(match[1]);
  } catch {
    return { status: 404, message: 'repository not found' };
  }
  // A fleet named "x.git" is reached as /git/x.git.git: one suffix is always the URL's.
  if (fleet.endsWith('.git')) fleet = fleet.slice(0, -'.git'.length);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/.test(fleet)) return { status: 404, message: 'repository not found' };
  const rest = match[2] ?? '/';
  if (rest === '/info/refs') {
    if (service === undefined) return { status: 403, message: 'only the smart HTTP protocol is served: use git 1.6.6 or later' };
    if (!SERVICES.has(service)) return { status: 403, message: `unknown git service '${service}'` };
    return { fleet, rest, access: service === 'git-receive-pack' ? 'write' : 'read' };
  }
  if (rest === '/git-upload-pack') return { fleet, rest, access: 'read' };
  if (rest === '/git-receive-pack') return { fleet, rest, access: 'write' };
  return { status: 404, message: 'not a smart HTTP path of the repository (info/refs, git-upload-pack, git-receive-pack)' };
}

/** The username and password of `Authorization: Basic …`, or undefined when there is none or it is malformed. */
export function basicCredentials(authorization: string | undefined): { user: string; password: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization ?? '');
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** The head of a CGI answer: the status and headers, and where the body starts in the bytes read so far. */
export interface CgiHead {
  status: number;
  /** Header names as the script wrote them, in order (`Status` removed). */
  headers: Array<[string, string]>;
  /** Offset of the body's first byte in the buffer given. */
  bodyStart: number;
}

/** A CGI head longer than this is a broken script, not an answer. */
export const MAX_CGI_HEAD = 64 * 1024;

/**
 * Parses the header block at the start of `buffer` (RFC 3875 §6.3: lines ended by LF or CRLF, a
 * blank line, then the body). Answers undefined while the blank line has not arrived, and throws
 * for a head that is malformed or longer than {@link MAX_CGI_HEAD}. `Status: 404 Not Found` sets the
 * status; without it the status is 200 (or 302 with a Location, as §6.2.3 says).
 */
export function parseCgiHead(buffer: Buffer): CgiHead | undefined {
  let end = -1;
  let bodyStart = -1;
  for (let i = 0; i < buffer.length; i++) {
    if (buffer[i] !== 0x0a) continue;
    if (buffer[i + 1] === 0x0a) {
      end = i;
      bodyStart = i + 2;
      break;
    }
    if (buffer[i + 1] === 0x0d && buffer[i + 2] === 0x0a) {
      end = i;
      bodyStart = i + 3;
      break;
    }
  }
  if (end < 0) {
    if (buffer.length > MAX_CGI_HEAD) throw new Error(`the CGI answer has no end of headers in its first ${MAX_CGI_HEAD} bytes`);
    return undefined;
  }
  let status: number | undefined;
  let location = false;
  const headers: Array<[string, string]> = [];
  for (const raw of buffer.subarray(0, end).toString('latin1').split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`the CGI answer has a header line without a name: '${line.slice(0, 80)}'`);
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === 'status') {
      const code = /^(\d{3})\b/.exec(value);
      if (!code?.[1]) throw new Error(`the CGI answer has a bad Status line: '${value}'`);
      status = Number(code[1]);
      continue;
    }
    if (name.toLowerCase() === 'location') location = true;
    headers.push([name, value]);
  }
  return { status: status ?? (location ? 302 : 200), headers, bodyStart };
}

/**
 * Failed authentications per client address in a sliding minute, as login's rate limit: past
 * `max`, the address is refused (429) until its oldest failure is a minute old. Only wrong
 * credentials count, never a request without any: git always asks without them first.
 */
export class FailedAuthLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly max: number, private readonly windowMs = 60_000, private readonly now: () => number = Date.now) {}

  /** Milliseconds until `address` may try again, or 0 when it may now. */
  blockedFor(address: string): number {
    const recent = this.recent(address);
    if (recent.length < this.max) return 0;
    return Math.max(1, (recent[0] ?? 0) + this.windowMs - this.now());
  }

  /** Counts one failure of `address`. */
  fail(address: string): void {
    const recent = this.recent(address);
    recent.push(this.now());
    this.failures.set(address, recent);
    // Bound the map: addresses whose failures all expired are dropped as others fail.
    if (this.failures.size > 10_000) {
      for (const key of this.failures.keys()) if (this.recent(key).length === 0) this.failures.delete(key);
    }
  }

  private recent(address: string): number[] {
    const since = this.now() - this.windowMs;
    const list = (this.failures.get(address) ?? []).filter((t) => t > since);
    if (list.length === 0) this.failures.delete(address);
    else this.failures.set(address, list);
    return list;
  }
}
