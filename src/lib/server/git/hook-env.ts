/**
 * What the server hands the pre-receive hook, through the environment http-backend and
 * receive-pack pass down (never a file: the token is the pusher's own secret). Both the route
 * (routes/git.ts, which sets them) and the hook (src/server-hooks/pre-receive.ts) use these names.
 */

/** The variables, by name. */
export const HOOK_ENV = {
  /** The server's API as this machine reaches it (the address the push came in on), e.g. `http://127.0.0.1:48080`. */
  api: 'SKIFF_HOOK_API',
  /** The pusher's session token or API key, to start and follow the build as them. */
  token: 'SKIFF_HOOK_TOKEN',
  /** The fleet's name (the build route's `:fleet`). */
  fleet: 'SKIFF_HOOK_FLEET',
  /** This server process's git-hook secret (builds/upload.ts gitHookSecret): only its own hook may upload with `source=git`. */
  secret: 'SKIFF_HOOK_SECRET',
} as const;

/** The header that carries {@link HookSettings.secret} on the build upload. */
export const HOOK_SECRET_HEADER = 'x-skiff-git-hook';

export interface HookSettings {
  api: string;
  token: string;
  fleet: string;
  secret: string;
}

/** The variables for `settings`. */
export function hookEnv(settings: HookSettings): Record<string, string> {
  return { [HOOK_ENV.api]: settings.api, [HOOK_ENV.token]: settings.token, [HOOK_ENV.fleet]: settings.fleet, [HOOK_ENV.secret]: settings.secret };
}

/** The settings from an environment, or the name of the first variable missing. */
export function readHookEnv(env: NodeJS.ProcessEnv): HookSettings | { missing: string } {
  const api = env[HOOK_ENV.api];
  const token = env[HOOK_ENV.token];
  const fleet = env[HOOK_ENV.fleet];
  const secret = env[HOOK_ENV.secret];
  if (!api) return { missing: HOOK_ENV.api };
  if (!token) return { missing: HOOK_ENV.token };
  if (!fleet) return { missing: HOOK_ENV.fleet };
  if (!secret) return { missing: HOOK_ENV.secret };
  return { api, token, fleet, secret };
}

/**
 * The loopback URL of the server as seen from the socket a request came in on: its local address
 * and port (an IPv4-mapped address unwrapped, IPv6 in brackets). The public URL may not be
 * reachable from the server itself (a proxy, NAT), the socket's own address always is.
 */
export function socketUrl(socket: { localAddress?: string | undefined; localPort?: number | undefined; encrypted?: boolean }): string {
  let host = socket.localAddress ?? '127.0.0.1';
  if (host.startsWith('::ffff:')) host = host.slice('::ffff:'.length);
  if (host.includes(':')) host = `[${host}]`;
  return `${socket.encrypted === true ? 'https' : 'http'}://${host}:${socket.localPort ?? 0}`;
}
