/**
 * A BuildKit session: the channel over which the engine, during a build, asks the client for
 * what only the client has (secret values, registry credentials).
 *
 * The client opens `POST /session` (Docker API), the engine upgrades it to HTTP/2 and becomes the
 * gRPC *client*; we serve on that one socket. We use `@grpc/grpc-js` for the serving side: it is
 * the well-kept gRPC implementation for Node, the one dockerode itself uses for its BuildKit
 * session, and it can adopt an existing socket (`createConnectionInjector`). dockerode's own
 * session serves Auth only and overwrites the build's `session` parameter, so it cannot carry
 * secrets: hence this one.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type Dockerode from 'dockerode';
import type * as Grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

/**
 * The session services' messages, from moby/buildkit `session/secrets/secrets.proto`,
 * `session/auth/auth.proto` and grpc's `grpc/health/v1/health.proto`.
 */
const root = protobuf.Root.fromJSON({
  nested: {
    GetSecretRequest: { fields: { ID: { type: 'string', id: 1 } } },
    GetSecretResponse: { fields: { data: { type: 'bytes', id: 1 } } },
    CredentialsRequest: { fields: { Host: { type: 'string', id: 1 } } },
    CredentialsResponse: { fields: { Username: { type: 'string', id: 1 }, Secret: { type: 'string', id: 2 } } },
    HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
    HealthCheckResponse: { fields: { status: { type: 'int32', id: 1 } } },
  },
});

/** grpc.health.v1 ServingStatus.SERVING. */
const SERVING = 1;

export const SECRETS_METHOD = '/moby.buildkit.secrets.v1.Secrets/GetSecret';
export const AUTH_METHOD = '/moby.filesync.v1.Auth/Credentials';
export const HEALTH_METHOD = '/grpc.health.v1.Health/Check';

export interface BuildSessionOptions {
  /** Secret values by id, for `RUN --mount=type=secret,id=<id>`. */
  secrets?: Record<string, Buffer>;
  /** Registry credentials by host (`registry.example.com:5000`, `docker.io`), for pulls during the build. */
  registryConfig?: Record<string, { username: string; password: string }>;
}

export interface BuildSession {
  /** Passed to `POST /build` as `session`. */
  id: string;
  /** Ends the session: the socket, the gRPC server and every handle they hold. Idempotent. */
  close(): void;
}

function unary(type: string, method: string): [protobuf.Type, protobuf.Type, string] {
  return [root.lookupType(`${type}Request`), root.lookupType(`${type}Response`), method];
}

/**
 * Serves the session's gRPC methods on `socket`, an HTTP/2 connection whose other end (the
 * engine) is the gRPC client: secrets (NotFound for an id not given), registry credentials by
 * host (empty when none), and the health check.
 * @returns a function that closes the socket and the server, leaving no handle open
 */
export async function serveBuildSession(socket: Duplex, options: BuildSessionOptions = {}): Promise<() => void> {
  const grpc = await import('@grpc/grpc-js');
  const secrets = options.secrets ?? {};
  const registries = options.registryConfig ?? {};

  const server = new grpc.Server();
  const handlers: Array<[protobuf.Type, protobuf.Type, string, (req: Record<string, unknown>) => Record<string, unknown> | Grpc.ServiceError]> = [
    [
      ...unary('GetSecret', SECRETS_METHOD),
      (req) => {
        const value = secrets[String(req.ID ?? '')];
        if (value === undefined) return Object.assign(new Error(`secret ${String(req.ID)} not found`), { code: grpc.status.NOT_FOUND, details: `secret ${String(req.ID)} not found`, metadata: new grpc.Metadata() });
        return { data: value };
      },
    ],
    [
      ...unary('Credentials', AUTH_METHOD),
      (req) => {
        const host = String(req.Host ?? '');
        const found = registries[host] ?? (host === 'registry-1.docker.io' ? registries['docker.io'] ?? registries['https://index.docker.io/v1/'] : undefined);
        return found ? { Username: found.username, Secret: found.password } : {};
      },
    ],
    [...unary('HealthCheck', HEALTH_METHOD), () => ({ status: SERVING })],
  ];
  for (const [reqType, resType, method, handle] of handlers) {
    server.register(
      method,
      (call: Grpc.ServerUnaryCall<Record<string, unknown>, Uint8Array>, callback: Grpc.sendUnaryData<Uint8Array>) => {
        const result = handle(call.request);
        if (result instanceof Error) callback(result);
        else callback(null, resType.encode(resType.fromObject(result)).finish());
      },
      (res: Uint8Array) => Buffer.from(res),
      (bytes: Buffer) => reqType.toObject(reqType.decode(bytes), { defaults: true }) as Record<string, unknown>,
      'unary',
    );
  }

  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  injector.injectConnection(socket);
  // The engine hanging up ends the session; an error on a closed socket is not ours to report.
  socket.on('error', () => {});
  let closed = false;
  return () => {
    if (closed) return;
    closed = true;
    injector.destroy();
    server.forceShutdown();
    socket.destroy();
  };
}

/**
 * Opens a session on the engine (`POST /session`, hijacked and upgraded to h2c) serving secrets,
 * registry credentials and the health check BuildKit's session manager runs on every session
 * (it drops one that fails its checks, and a secret asked later in the build would then be lost).
 * @throws Error when the engine refuses the session (e.g. an engine without BuildKit)
 */
export async function openBuildSession(docker: Dockerode, options: BuildSessionOptions = {}): Promise<BuildSession> {
  const id = randomBytes(16).toString('hex');
  const socket = await new Promise<Duplex>((resolve, reject) => {
    docker.modem.dial(
      {
        method: 'POST',
        path: '/session',
        hijack: true,
        headers: {
          Upgrade: 'h2c',
          'X-Docker-Expose-Session-Uuid': id,
          'X-Docker-Expose-Session-Name': 'skiff',
          // Keys BuildKit's local caches for this client; nothing here is shared, so any key does.
          'X-Docker-Expose-Session-Sharedkey': id,
          'X-Docker-Expose-Session-Grpc-Method': [SECRETS_METHOD, AUTH_METHOD, HEALTH_METHOD],
        },
        statusCodes: { 101: true, 200: true, 500: 'server error' },
      },
      (err: unknown, sock: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(sock as Duplex)),
    );
  });
  const close = await serveBuildSession(socket, options);
  return { id, close };
}
