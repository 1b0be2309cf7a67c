/**
 * A plain HTTP server on loopback for the suite's `describe`: each test sets how it answers
 * (`handle`). Started in `before`, closed in `after`, its URL read after `before`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StubHttp {
  /** `http://127.0.0.1:<port>`, set once `before` ran. */
  readonly base: string;
  /** How the server answers now: each test sets its own. */
  handle: (req: http.IncomingMessage, res: http.ServerResponse) => void;
}

/** Registers the mocha hooks that start and stop the stub for the enclosing `describe`. */
export function stubHttpServer(): StubHttp {
  let server: http.Server | undefined;
  const stub = {
    base: '',
    handle: (_req: http.IncomingMessage, res: http.ServerResponse): void => void res.writeHead(500).end(),
  };
  before(async () => {
    server = http.createServer((req, res) => stub.handle(req, res));
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    stub.base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
  });
  return stub;
}
