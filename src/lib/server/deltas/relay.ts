/**
 * A delta layer download relayed to the replica that made the delta (services/deltas.ts): the
 * device's request goes on to `<maker's --replica-url><same path>` with the device's own
 * Authorization and Range, marked {@link DELTA_RELAYED_HEADER} so the maker neither relays it again
 * nor counts it (the replica that talks to the device does).
 */
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';

/** Marks a request one replica relays to another: the receiver answers from its own files or 404. Same name as the tunnels' relay header. */
export const DELTA_RELAYED_HEADER = 'x-skiff-relayed';

/** How long the maker has to start answering (ms); a file on its disk answers at once. */
export const RELAY_ANSWER_TIMEOUT_MS = 10_000;
/** A relayed download with no byte for this long (ms) is cut; the device resumes with Range. */
export const RELAY_IDLE_TIMEOUT_MS = 60_000;

/** The answers passed on to the device as they are; anything else means the maker cannot serve it. */
const PASSED_ON = new Set([200, 206, 416]);

/** What the maker answered: the response to stream back, or why it did not serve (one line). */
export type MakerAnswer = { ok: true; response: IncomingMessage } | { ok: false; reason: string };

/**
 * Asks the replica at `replicaUrl` for `path` (a `/api/v3/delta/:id/layers/:index`) on the
 * device's behalf. Resolves with its response when it is 200, 206 or 416 (body not read yet: the
 * caller streams it), else with the reason (its status, or the connection's error), its body
 * discarded. Never rejects. `signal` aborts the request (the device went away).
 */
export function askMaker(replicaUrl: string, path: string, headers: { authorization?: string; range?: string }, signal: AbortSignal): Promise<MakerAnswer> {
  const url = new URL(path, replicaUrl);
  return new Promise((resolve) => {
    let answered = false;
    const req = (url.protocol === 'https:' ? https : http).request(url, {
      signal,
      agent: false,
      headers: {
        ...(headers.authorization !== undefined ? { authorization: headers.authorization } : {}),
        ...(headers.range !== undefined ? { range: headers.range } : {}),
        [DELTA_RELAYED_HEADER]: '1',
      },
      timeout: RELAY_ANSWER_TIMEOUT_MS,
    });
    req.on('timeout', () => req.destroy(new Error(answered ? `no byte for ${RELAY_IDLE_TIMEOUT_MS / 1000} s` : `no answer in ${RELAY_ANSWER_TIMEOUT_MS / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (!answered) resolve({ ok: false, reason: `cannot reach ${url.origin} (${err.code ?? err.message})` });
    });
    req.on('response', (res) => {
      answered = true;
      const status = res.statusCode ?? 0;
      if (PASSED_ON.has(status)) {
        req.setTimeout(RELAY_IDLE_TIMEOUT_MS);
        resolve({ ok: true, response: res });
        return;
      }
      res.resume();
      resolve({ ok: false, reason: `${url.origin} answered ${status}` });
    });
    req.end();
  });
}
