/**
 * Writing server-sent events ("text/event-stream") on a Fastify reply: build output and device log
 * follows. The reply is hijacked (Fastify no longer writes to it); writes respect backpressure so a
 * slow reader holds the writer, not the server's memory; a comment line every 15 s keeps proxies
 * from closing an idle stream.
 */
import type { FastifyReply } from 'fastify';

export interface EventStream {
  /** Sends one event; resolves when the socket took it (waits for 'drain' when its buffer is full). */
  send(id: number | string, data: unknown): Promise<void>;
  /** Ends the response. */
  end(): void;
  /** Aborted when the client goes away (or `end` was called). */
  readonly signal: AbortSignal;
}

/** Starts an event stream on `reply` (status 200). */
export function openEventStream(reply: FastifyReply, keepAliveMs = 15_000): EventStream {
  reply.hijack();
  const res = reply.raw;
  const controller = new AbortController();
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(': stream\n\n');
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), keepAliveMs);
  keepAlive.unref();
  const close = (): void => {
    clearInterval(keepAlive);
    controller.abort();
  };
  res.on('close', close);
  return {
    signal: controller.signal,
    async send(id, data) {
      if (controller.signal.aborted) return;
      const ok = res.write(`id: ${id}\ndata: ${JSON.stringify(data)}\n\n`);
      if (!ok && !controller.signal.aborted) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            res.off('drain', done);
            controller.signal.removeEventListener('abort', done);
            resolve();
          };
          res.once('drain', done);
          controller.signal.addEventListener('abort', done, { once: true });
        });
      }
    },
    end() {
      close();
      res.end();
    },
  };
}
