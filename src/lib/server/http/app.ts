/**
 * The HTTP layer: Fastify with the TypeBox schemas of src/lib/api on every route (validation,
 * serialisation and /openapi.json from the same schemas). Routes are thin: authenticate, call one
 * service function, shape the answer. Rules live in ../services and ../permissions.ts.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type TSchema } from '@sinclair/typebox';
import { ENDPOINTS } from '../../api/endpoints.js';
import * as R from '../../api/resources.js';
import * as D from '../../api/device-state.js';
import { bearerToken } from '../crypto.js';
import type { ServiceContext } from '../services/context.js';
import { unauthorized } from '../services/context.js';
import * as users from '../services/users.js';
import * as fleets from '../services/fleets.js';
import * as devices from '../services/devices.js';
import * as releases from '../services/releases.js';
import * as variables from '../services/variables.js';
import type { Principal } from '../permissions.js';
import { errorAnswer } from './errors.js';
import { withoutNulDeep } from '../nul.js';

export interface AppOptions {
  /** Largest request body, bytes (the registry's routes stream and set their own). */
  bodyLimit: number;
  /** Per client address and minute. */
  rateLimits: { login: number; register: number };
  https?: { cert: string; key: string };
}

type User = Extract<Principal, { kind: 'user' }>;

/** The app as route modules see it (TypeBox-typed routes). */
export type SkiffApp = Awaited<ReturnType<typeof createFastify>>;

/**
 * What every route module gets besides the app and the context: the one way to authenticate a
 * caller and to declare a route's schema, so feature routes (routes/*.ts) answer like the core ones.
 */
export interface RouteKit {
  /** The user behind `Authorization: Bearer`; 401 otherwise. */
  userOf(request: FastifyRequest): Promise<User>;
  /** The device behind `Authorization: Bearer <device key>`; 401 otherwise. */
  deviceOf(request: FastifyRequest): Promise<devices.PollIdentity>;
  /** Adds the shared error answers (4xx, 503) to a route's response schemas. */
  schema<T extends Record<string, unknown>>(s: T & { response: Record<number, TSchema> }): T & { response: Record<number, TSchema> };
  /** The OpenAPI security entry for bearer routes. */
  auth: Array<{ bearer: string[] }>;
  NoContent: TSchema;
  /** Route config for a per-address rate limit (requests a minute). */
  limit(max: number): { rateLimit: { max: number; timeWindow: string } };
}

const NoContent = Type.Null({ description: 'No content' });
// One serializer per route for all client errors (one per status made start-up 1 s slower).
const errors = { '4xx': R.ApiError, 503: R.ApiError };
const FleetParams = Type.Object({ fleet: R.FleetName });
const UuidParams = Type.Object({ uuid: Type.String({ minLength: 1, maxLength: 64 }) });
const CommitParams = Type.Object({ commit: Type.String({ minLength: 1, maxLength: 64 }) });
const IdParams = Type.Object({ id: Type.String({ pattern: '^[1-9][0-9]{0,9}$' }) });
const auth = [{ bearer: [] as string[] }];

function bearer(request: FastifyRequest): string | undefined {
  return bearerToken(request.headers.authorization);
}

/** Builds the app (not listening). The caller adds the registry's routes, then listens. */
function createFastify(options: AppOptions) {
  return Fastify({
    logger: false,
    bodyLimit: options.bodyLimit,
    ...(options.https ? { https: { cert: options.https.cert, key: options.https.key } } : {}),
    // Unknown fields are refused, not silently dropped (a setting nobody honours is an error).
    // and nothing is coerced: a null would become 0 in an integer-or-null field. Path and query
    // parameters are strings in the schemas.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    // The router's own refusals (bad percent-encoding, a path parameter over 100 characters) answer
    // like every other 400, naming the path, instead of Fastify's shape echoing the whole input.
    frameworkErrors: (err, _request, untyped) => {
      const reply = untyped as FastifyReply;
      const message = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'a path parameter is longer than 100 characters' : 'the path is not a valid URL (bad percent-encoding)';
      void reply.code(400).send({ statusCode: 400, error: 'Bad Request', message, field: 'path' });
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
}

export async function buildApp(ctx: ServiceContext, options: AppOptions): Promise<FastifyInstance> {
  const app = createFastify(options);

  // Responses are written with JSON.stringify: the services build exactly the schema's shapes, and
  // compiling a fast-json-stringify serializer per route and status cost most of a cold start.
  // The response schemas still document every answer in /openapi.json.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  app.setErrorHandler((err, request, reply) => {
    const { status, body, fault } = errorAnswer(err);
    if (fault) ctx.log(`${request.method} ${request.url}: ${(err as Error).stack ?? String(err)}`);
    if (status === 503) void reply.header('retry-after', '5');
    void reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no route ${request.method} ${request.url.split('?')[0]}` });
  });

  const { default: swagger } = await import('@fastify/swagger');
  await app.register(swagger, {
    openapi: {
      info: { title: 'Skiff server API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  const { default: rateLimit } = await import('@fastify/rate-limit');
  await app.register(rateLimit, { global: false });

  const userOf = async (request: FastifyRequest): Promise<User> => {
    const token = bearer(request);
    if (!token) throw unauthorized('this route needs Authorization: Bearer <session token or API key>');
    const found = await users.authenticateUser(ctx, token);
    if (!found) throw unauthorized('unknown, expired or revoked token');
    return found.principal;
  };
  const deviceOf = async (request: FastifyRequest): Promise<devices.PollIdentity> => {
    const token = bearer(request);
    const identity = token ? await devices.authenticateDevice(ctx, token) : undefined;
    if (!identity) throw unauthorized('unknown device key (the device may have been removed)', null);
    return identity;
  };
  const noContent = (reply: FastifyReply) => reply.code(204).send();
  // For routes whose every body field is optional: no body at all means {} (validated as such).
  const emptyBody = async (request: FastifyRequest) => {
    if (request.body === undefined || request.body === null) request.body = {};
  };
  const limit = (max: number) => ({ rateLimit: { max, timeWindow: '1 minute' } });
  const schema = <T extends Record<string, unknown>>(s: T & { response: Record<number, TSchema> }) => ({ ...s, response: { ...errors, ...s.response } });

  // --- users ---
  app.post(ENDPOINTS.login.path, { config: limit(options.rateLimits.login), schema: schema({ body: R.LoginRequest, response: { 200: R.LoginResponse } }) },
    async (req) => users.login(ctx, req.body.email, req.body.password));
  app.post(ENDPOINTS.logout.path, { schema: schema({ security: auth, response: { 204: NoContent } }) }, async (req, reply) => {
    await userOf(req);
    await users.logout(ctx, bearer(req) ?? '');
    return noContent(reply);
  });
  app.get(ENDPOINTS.whoami.path, { schema: schema({ security: auth, response: { 200: R.WhoAmI } }) }, async (req) => {
    const found = await users.authenticateUser(ctx, bearer(req) ?? '');
    if (!found) throw unauthorized('unknown, expired or revoked token');
    return { user: found.user, auth: found.auth };
  });
  app.get(ENDPOINTS.users.path, { schema: schema({ security: auth, response: { 200: Type.Array(R.User) } }) }, async (req) => users.listUsers(ctx, await userOf(req)));
  app.post(ENDPOINTS.createUser.path, { schema: schema({ security: auth, body: R.CreateUserRequest, response: { 201: R.User } }) }, async (req, reply) => {
    const user = await users.createUser(ctx, await userOf(req), req.body);
    return reply.code(201).send(user);
  });
  app.delete(ENDPOINTS.removeUser.path, { schema: schema({ security: auth, params: Type.Object({ email: Type.String({ minLength: 1, maxLength: 254 }) }), response: { 204: NoContent } }) }, async (req, reply) => {
    await users.removeUser(ctx, await userOf(req), req.params.email);
    return noContent(reply);
  });
  app.get(ENDPOINTS.apiKeys.path, { schema: schema({ security: auth, response: { 200: Type.Array(R.ApiKey) } }) }, async (req) => users.listApiKeys(ctx, await userOf(req)));
  app.post(ENDPOINTS.createApiKey.path, { schema: schema({ security: auth, body: R.CreateApiKeyRequest, response: { 201: R.CreatedApiKey } }) }, async (req, reply) => {
    return reply.code(201).send(await users.createApiKey(ctx, await userOf(req), req.body));
  });
  app.delete(ENDPOINTS.revokeApiKey.path, { schema: schema({ security: auth, params: IdParams, response: { 204: NoContent } }) }, async (req, reply) => {
    await users.revokeApiKey(ctx, await userOf(req), Number(req.params.id));
    return noContent(reply);
  });

  // --- fleets ---
  app.get(ENDPOINTS.fleets.path, { schema: schema({ security: auth, response: { 200: Type.Array(R.Fleet) } }) }, async (req) => fleets.listFleets(ctx, await userOf(req)));
  app.post(ENDPOINTS.createFleet.path, { schema: schema({ security: auth, body: R.CreateFleetRequest, response: { 201: R.Fleet } }) }, async (req, reply) => {
    return reply.code(201).send(await fleets.createFleet(ctx, await userOf(req), req.body));
  });
  app.get(ENDPOINTS.fleet.path, { schema: schema({ security: auth, params: FleetParams, response: { 200: R.Fleet } }) }, async (req) => fleets.getFleet(ctx, await userOf(req), req.params.fleet));
  app.patch(ENDPOINTS.updateFleet.path, { schema: schema({ security: auth, params: FleetParams, body: R.UpdateFleetRequest, response: { 200: R.Fleet } }) },
    async (req) => fleets.updateFleet(ctx, await userOf(req), req.params.fleet, req.body));
  app.delete(ENDPOINTS.removeFleet.path, { schema: schema({ security: auth, params: FleetParams, response: { 204: NoContent } }) }, async (req, reply) => {
    await fleets.removeFleet(ctx, await userOf(req), req.params.fleet);
    return noContent(reply);
  });
  app.get(ENDPOINTS.provisioningKeys.path, { schema: schema({ security: auth, params: FleetParams, response: { 200: Type.Array(R.ProvisioningKey) } }) },
    async (req) => fleets.listProvisioningKeys(ctx, await userOf(req), req.params.fleet));
  app.post(ENDPOINTS.createProvisioningKey.path, { preValidation: emptyBody, schema: schema({ security: auth, params: FleetParams, body: R.CreateProvisioningKeyRequest, response: { 201: R.CreatedProvisioningKey } }) }, async (req, reply) => {
    return reply.code(201).send(await fleets.createProvisioningKey(ctx, await userOf(req), req.params.fleet, req.body));
  });
  app.delete(ENDPOINTS.revokeProvisioningKey.path, { schema: schema({ security: auth, params: Type.Composite([FleetParams, IdParams]), response: { 204: NoContent } }) }, async (req, reply) => {
    await fleets.revokeProvisioningKey(ctx, await userOf(req), req.params.fleet, Number(req.params.id));
    return noContent(reply);
  });
  app.post(ENDPOINTS.fleetConfig.path, { preValidation: emptyBody, schema: schema({ security: auth, params: FleetParams, body: R.FleetConfigRequest, response: { 200: R.FleetConfig } }) },
    async (req) => fleets.fleetConfig(ctx, await userOf(req), req.params.fleet, req.body));
  app.get(ENDPOINTS.releases.path, { schema: schema({ security: auth, params: FleetParams, response: { 200: Type.Array(R.Release) } }) },
    async (req) => releases.listReleases(ctx, await userOf(req), req.params.fleet));
  app.post(ENDPOINTS.createRelease.path, { schema: schema({ security: auth, params: FleetParams, body: R.CreateReleaseRequest, response: { 201: R.CreatedRelease } }) }, async (req, reply) => {
    return reply.code(201).send(await releases.createRelease(ctx, await userOf(req), req.params.fleet, req.body));
  });

  // --- devices ---
  app.get(ENDPOINTS.devices.path, { schema: schema({ security: auth, querystring: Type.Object({ fleet: Type.Optional(R.FleetName) }, { additionalProperties: false }), response: { 200: Type.Array(R.Device) } }) },
    async (req) => devices.listDevices(ctx, await userOf(req), req.query.fleet));
  app.get(ENDPOINTS.device.path, { schema: schema({ security: auth, params: UuidParams, response: { 200: R.Device } }) }, async (req) => devices.getDevice(ctx, await userOf(req), req.params.uuid));
  app.patch(ENDPOINTS.updateDevice.path, { schema: schema({ security: auth, params: UuidParams, body: R.UpdateDeviceRequest, response: { 200: R.Device } }) },
    async (req) => devices.updateDevice(ctx, await userOf(req), req.params.uuid, req.body));
  app.delete(ENDPOINTS.removeDevice.path, { schema: schema({ security: auth, params: UuidParams, response: { 204: NoContent } }) }, async (req, reply) => {
    await devices.removeDevice(ctx, await userOf(req), req.params.uuid);
    return noContent(reply);
  });

  // --- releases ---
  app.get(ENDPOINTS.release.path, { schema: schema({ security: auth, params: CommitParams, response: { 200: R.Release } }) }, async (req) => releases.getRelease(ctx, await userOf(req), req.params.commit));
  app.patch(ENDPOINTS.updateRelease.path, { schema: schema({ security: auth, params: CommitParams, body: R.UpdateReleaseRequest, response: { 200: R.Release } }) },
    async (req) => releases.updateRelease(ctx, await userOf(req), req.params.commit, req.body));

  // --- variables and tags ---
  app.get(ENDPOINTS.variables.path, { schema: schema({ security: auth, querystring: R.VariableScope, response: { 200: Type.Array(R.Variable) } }) },
    async (req) => variables.listVariables(ctx, await userOf(req), req.query));
  app.put(ENDPOINTS.setVariable.path, { schema: schema({ security: auth, body: R.SetVariableRequest, response: { 200: R.Variable } }) },
    async (req) => variables.setVariable(ctx, await userOf(req), req.body));
  app.delete(ENDPOINTS.removeVariable.path, { schema: schema({ security: auth, querystring: Type.Composite([R.VariableScope, Type.Object({ name: R.VariableName })], { additionalProperties: false }), response: { 204: NoContent } }) }, async (req, reply) => {
    await variables.removeVariable(ctx, await userOf(req), req.query);
    return noContent(reply);
  });
  app.get(ENDPOINTS.tags.path, { schema: schema({ security: auth, querystring: R.TagScope, response: { 200: Type.Array(R.Tag) } }) },
    async (req) => variables.listTags(ctx, await userOf(req), req.query));
  app.put(ENDPOINTS.setTag.path, { schema: schema({ security: auth, body: R.SetTagRequest, response: { 200: R.Tag } }) },
    async (req) => variables.setTag(ctx, await userOf(req), req.body));
  app.delete(ENDPOINTS.removeTag.path, { schema: schema({ security: auth, querystring: Type.Composite([R.TagScope, Type.Object({ key: Type.String({ minLength: 1, maxLength: 100 }) })], { additionalProperties: false }), response: { 204: NoContent } }) }, async (req, reply) => {
    await variables.removeTag(ctx, await userOf(req), req.query);
    return noContent(reply);
  });

  // --- devices themselves (balena's paths and shapes) ---
  app.post(ENDPOINTS.register.path, { config: limit(options.rateLimits.register), schema: schema({ security: auth, body: D.RegisterRequest, response: { 201: D.RegisterResponse } }) }, async (req, reply) => {
    const token = bearer(req);
    if (!token) throw unauthorized('registration needs Authorization: Bearer <provisioning key>', null);
    const caller = await devices.authenticateProvisioning(ctx, token);
    return reply.code(201).send(await devices.registerDevice(ctx, caller, req.body));
  });
  app.get(ENDPOINTS.targetState.path, { schema: schema({ security: auth, params: UuidParams, response: { 200: D.TargetStateV3, 304: NoContent } }) }, async (req, reply) => {
    const identity = await deviceOf(req);
    const answer = await devices.pollTarget(ctx, identity, req.params.uuid, req.headers['if-none-match']);
    void reply.header('etag', answer.etag).header('cache-control', 'no-cache');
    if (answer.notModified) return reply.code(304).send(null);
    return answer.body;
  });
  app.patch(ENDPOINTS.report.path, { schema: schema({ security: auth, body: D.StateReportV3, response: { 200: Type.Object({}) } }) }, async (req) => {
    // One NUL in what a device reports (PostgreSQL refuses it) failed every report it sent after.
    await devices.storeReport(ctx, await deviceOf(req), withoutNulDeep(req.body));
    return {};
  });

  // --- features with routes of their own (each module owns its routes and its background work) ---
  const kit: RouteKit = { userOf, deviceOf, schema, auth, NoContent, limit };
  const [{ registerBuildRoutes }, { registerGitRoutes }, { registerLogRoutes }, { registerEventRoutes }, { registerTunnelRoutes }, { registerPublicUrlRoutes }, { registerDeltaRoutes }] = await Promise.all([
    import('./routes/builds.js'), import('./routes/git.js'), import('./routes/logs.js'), import('./routes/events.js'), import('./routes/tunnels.js'), import('./routes/public-url.js'),
    import('./routes/deltas.js'),
  ]);
  const channels = await registerEventRoutes(app, ctx, kit);
  await registerTunnelRoutes(app, ctx, kit, channels);
  await registerPublicUrlRoutes(app, ctx, kit, channels);
  await registerBuildRoutes(app, ctx, kit);
  await registerGitRoutes(app, ctx, kit);
  await registerLogRoutes(app, ctx, kit);
  await registerDeltaRoutes(app, ctx, kit);

  app.get(ENDPOINTS.openapi.path, { schema: { hide: true } }, async () => app.swagger());
  app.get(ENDPOINTS.ping.path, { schema: { response: { 200: Type.String(), 503: R.ApiError } } }, async (_req, reply) => {
    await ctx.db.selectFrom('users').select('id').limit(1).execute();
    return reply.type('text/plain').send('OK');
  });
  return app;
}
