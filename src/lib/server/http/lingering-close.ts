/**
 * Early answers to a request whose body is still coming (a too-large build upload or git push):
 * the rest is read and dropped, and the connection closes in stages, so the client reads the answer.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

/**
 * How long (ms) the rest of a refused body is still read, and dropped, after the answer, at most:
 * see {@link discardRest}. Past this the connection is cut.
 */
export const REFUSED_BODY_LINGER_MS = 10_000;

/**
 * Reads and drops what is left of `body` (the request's own stream, or `raw` itself) once it will
 * not be used, so an early answer (a 413) reaches a client still sending. A server that closes
 * with the client's bytes unread makes its kernel send a reset, which can overtake the answer (the
 * client sees EPIPE or ECONNRESET, never the 413). Node closes a `Connection: close` exchange that
 * way as soon as the answer is written (`socket.destroySoon`): this socket closes in stages
 * instead (RFC 9112 §9.6): our side ends once the answer is out, and reading goes on until the
 * client closes, or for {@link REFUSED_BODY_LINGER_MS} at most. Call it before answering.
 */
export function discardRest(raw: IncomingMessage, body: NodeJS.ReadableStream): void {
  // A client leaving now is no news: the answer is given.
  body.on('error', () => undefined);
  body.resume();
  const socket = raw.socket as Socket | null;
  if (raw.complete || !socket) return;
  socket.destroySoon = function halfClose(this: Socket): void {
    this.end();
  };
  const cut = setTimeout(() => socket.destroy(), REFUSED_BODY_LINGER_MS);
  cut.unref();
  // The whole body came after all: nothing unread is left to turn into a reset. The socket's own
  // destroySoon is back for a kept connection's next exchange, and one whose answer was the last
  // (our side already ended) closes now rather than waiting half-open on the client.
  raw.once('end', () => {
    clearTimeout(cut);
    Reflect.deleteProperty(socket, 'destroySoon');
    if (socket.writableEnded && !socket.destroyed) socket.destroy();
  });
  socket.once('close', () => clearTimeout(cut));
}
