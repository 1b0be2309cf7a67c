/**
 * A unix socket that leads to the real engine, for an agent pointed at it (`DOCKER_HOST`): not
 * there until `up()` (an engine that has not started yet), and able to lose the connection of
 * chosen calls (an engine that goes away mid-call). The engine behind it is the real one, and it is
 * never stopped: other tests share it.
 */
import { rmSync } from 'node:fs';
import net from 'node:net';

const ENGINE = '/var/run/docker.sock';

export interface EngineProxy {
  /** `unix://<file>`, for DOCKER_HOST. */
  readonly address: string;
  up(): Promise<void>;
  down(): Promise<void>;
  /** Calls whose request line matches lose their connection before reaching the engine; undefined lets every call through. */
  dropCalls(pattern: RegExp | undefined): void;
}

export function engineProxy(file: string): EngineProxy {
  let server: net.Server | undefined;
  let drop: RegExp | undefined;
  const open = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    open.add(s);
    s.on('close', () => open.delete(s));
  };
  return {
    address: `unix://${file}`,
    dropCalls: (pattern) => (drop = pattern),
    up: () => new Promise((resolve, reject) => {
      rmSync(file, { force: true });
      server = net.createServer((client) => {
        track(client);
        client.once('data', (head: Buffer) => {
          // The agent's engine client opens one connection per call: the first bytes are its request line.
          if (drop?.test(head.toString('latin1').split('\r\n')[0] ?? '')) {
            client.destroy();
            return;
          }
          const engine = net.connect(ENGINE);
          track(engine);
          const cut = () => { client.destroy(); engine.destroy(); };
          client.on('error', cut);
          engine.on('error', cut);
          engine.write(head);
          client.pipe(engine).pipe(client);
        });
        client.on('error', () => client.destroy());
      });
      server.once('error', reject);
      server.listen(file, () => resolve());
    }),
    down: () => new Promise((resolve) => {
      for (const s of open) s.destroy();
      if (!server) return resolve();
      server.close(() => {
        rmSync(file, { force: true });
        resolve();
      });
    }),
  };
}
