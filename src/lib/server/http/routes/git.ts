/**
 * The fleets' git repositories over smart HTTP: `/git/<fleet>.git/…` served by the real
 * `git http-backend` (../../git/backend.ts). HTTP basic auth: the password is one of the user's API
 * keys or session tokens, the username is not checked (git needs one; any will do). The fleet is
 * looked up in the caller's scope, so another user's fleet is "repository not found"; a fetch
 * needs read access, a push write access.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
// For the OpenAPI fields (summary, description) of the route's schema.
import type {} from '@fastify/swagger';
import { ENDPOINTS } from '../../../api/endpoints.js';
import { SkiffError } from '../../../errors/errors.js';
import { bearerToken } from '../../crypto.js';
import type { ServiceContext } from '../../services/context.js';
import * as users from '../../services/users.js';
import * as fleets from '../../services/fleets.js';
import { basicCredentials, FailedAuthLimiter, parseGitPath } from '../../git/smart-http.js';
import { ensureRepository, repositoriesRoot, repositoryName } from '../../git/repositories.js';
import { serveWithHttpBackend, stopAllBackends } from '../../git/backend.js';
import { hookEnv, socketUrl } from '../../git/hook-env.js';
import { gitHookSecret } from '../../builds/upload.js';
import type { RouteKit, SkiffApp } from '../app.js';

/** Wrong credentials per client address and minute before git requests are refused (429), as login's default. */
export const GIT_AUTH_FAILURES_PER_MINUTE = 30;

const REALM = 'Basic realm="skiff", charset="UTF-8"';

function plain(reply: FastifyReply, status: number, message: string): FastifyReply {
  return reply.code(status).type('text/plain; charset=utf-8').send(`${message}\n`);
}

export async function registerGitRoutes(app: SkiffApp, ctx: ServiceContext, _kit: RouteKit): Promise<void> {
  const limiter = new FailedAuthLimiter(GIT_AUTH_FAILURES_PER_MINUTE);
  app.addHook('onClose', async () => stopAllBackends());

  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const [pathPart = '', queryPart = ''] = request.url.split(/\?(.*)/s);
    const target = parseGitPath(pathPart, new URLSearchParams(queryPart).get('service') ?? undefined);
    if ('status' in target) return plain(reply, target.status, target.message);

    // No credentials: a 401 git answers by asking for them (credential helper, prompt, URL).
    const token = basicCredentials(request.headers.authorization)?.password ?? bearerToken(request.headers.authorization);
    if (!token) return plain(reply.header('www-authenticate', REALM), 401, 'authentication needed: the password is a skiff API key or session token');
    const address = request.socket.remoteAddress ?? '';
    const wait = limiter.blockedFor(address);
    if (wait > 0) return plain(reply.header('retry-after', String(Math.ceil(wait / 1000))), 429, 'too many failed logins from this address: wait a minute');
    const found = await users.authenticateUser(ctx, token);
    if (!found) {
      limiter.fail(address);
      return plain(reply.header('www-authenticate', REALM), 401, 'unknown, expired or revoked token');
    }

    let fleet;
    try {
      fleet = await fleets.fleetOf(ctx, found.principal, target.fleet, target.access);
    } catch (err) {
      if (err instanceof SkiffError && (err.code === 'notFound' || err.code === 'deviceRefused')) return plain(reply, 404, 'repository not found');
      throw err;
    }
    const root = repositoriesRoot(ctx.options.dataDir);
    await ensureRepository(ctx.options.dataDir, fleet.uuid);
    const socket = request.socket as typeof request.socket & { encrypted?: boolean };
    reply.hijack();
    await serveWithHttpBackend(request.raw, reply.raw, {
      projectRoot: root,
      pathInfo: `/${repositoryName(fleet.uuid)}${target.rest}`,
      query: queryPart,
      remoteUser: found.user.email,
      bodyLimit: ctx.options.buildContextLimit,
      hookEnv: {
        ...hookEnv({ api: socketUrl(socket), token, fleet: fleet.name, secret: gitHookSecret(ctx) }),
        // Over TLS the hook calls this very server on the address the push came in on, where the
        // certificate's name may not match (and may be self-signed): it trusts its own server.
        ...(socket.encrypted === true ? { NODE_TLS_REJECT_UNAUTHORIZED: '0', NODE_NO_WARNINGS: '1' } : {}),
      },
      log: ctx.log,
    });
    return reply;
  };

  // In a scope of its own with no body parser: pushes stay unread streams for http-backend, free of
  // the JSON body limit (they are capped at --build-context-limit instead).
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
    // Smart HTTP uses GET (the ref advertisement) and POST (the services); other methods are 404s.
    scope.route({
      method: ['GET', 'POST'],
      url: ENDPOINTS.git.path,
      handler,
      schema: {
        summary: "A fleet's git repository over smart HTTP (git http-backend): /git/<fleet>.git/info/refs, git-upload-pack, git-receive-pack",
        description: 'HTTP basic auth: the password is an API key or session token, the username is not checked. A push to main builds the commit and is refused when the build fails.',
      },
    });
  });
}
