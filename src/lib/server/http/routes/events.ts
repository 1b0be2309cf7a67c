/**
 * Routes of the device event channel and device actions:
 * - `GET /device/v3/:uuid/events`, a WebSocket (device key as `Authorization: Bearer`): checked
 *   before the upgrade (an unknown key is a 401, another device's uuid a 404, both as HTTP
 *   answers), then handed to this replica's {@link DeviceChannels};
 * - `POST /devices/:uuid/actions`: a user's action on their device, answered with the device's
 *   result (409 offline, 504 no answer; see services/device-actions.ts).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { ENDPOINTS } from '../../../api/endpoints.js';
import { DeviceActionRequest, DeviceActionResult } from '../../../api/events.js';
import * as R from '../../../api/resources.js';
import type { PollIdentity } from '../../services/devices.js';
import { authorize, type ServiceContext } from '../../services/context.js';
import { DeviceChannels } from '../../events/channel.js';
import { DeviceDidNotAnswer, runDeviceAction } from '../../services/device-actions.js';
import type { RouteKit, SkiffApp } from '../app.js';
import { MAX_TUNNEL_MESSAGE_BYTES } from '../../../tunnel/ws-duplex.js';

const UuidParams = Type.Object({ uuid: Type.String({ minLength: 1, maxLength: 64 }) });


/** Registers the routes; returns this replica's device sockets (tunnel routes open sessions on them). */
export async function registerEventRoutes(app: SkiffApp, ctx: ServiceContext, kit: RouteKit): Promise<DeviceChannels> {
  const { default: websocket } = await import('@fastify/websocket');
  // Binary messages carry tunnel sessions (tunnel/mux.ts); JSON ones are bounded by the channel.
  // No permessage-deflate (ws's server default, said here): tunnel bytes are often compressed
  // already and the CPU is better spent relaying. A stopping server closes every socket with
  // 1001 (going away), which tunnel sessions report as TUNNEL_CLOSE.serverStopping.
  await app.register(websocket, {
    options: { maxPayload: MAX_TUNNEL_MESSAGE_BYTES, perMessageDeflate: false },
    preClose: function (this: FastifyInstance, done: () => void) {
      // The devices' sockets first, so tunnel sessions on them know why they end.
      channels.close();
      for (const client of this.websocketServer.clients) client.close(1001, 'the server is stopping');
      this.websocketServer.close();
      done();
    },
  });
  const channels = new DeviceChannels(ctx.events, ctx.db, ctx.log);
  app.addHook('onClose', async () => channels.close());

  const identities = new WeakMap<FastifyRequest, PollIdentity>();
  app.route({
    method: 'GET',
    url: ENDPOINTS.deviceEvents.path,
    schema: kit.schema({ security: kit.auth, params: UuidParams, description: 'WebSocket upgrade: ServerToDevice / DeviceToServer messages (src/lib/api/events.ts).', response: { 101: kit.NoContent } }),
    // Before the upgrade: a refused device gets an HTTP answer, not a socket that closes.
    preValidation: async (request) => {
      const identity = await kit.deviceOf(request);
      const { uuid } = request.params as { uuid: string };
      const own = identity.principal.uuid === uuid;
      authorize(identity.principal, 'deviceState', { kind: 'device', ownerId: -1, fleetId: identity.principal.fleetId, deviceId: own ? identity.principal.deviceId : -1 }, `device ${uuid}`);
      identities.set(request, identity);
    },
    handler: async (_request, reply) => reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: 'this route takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)', field: 'headers' }),
    wsHandler: (socket, request) => {
      const identity = identities.get(request);
      if (!identity) {
        socket.close(4001, 'not authenticated');
        return;
      }
      channels.attach(socket, identity.principal.deviceId, identity.principal.fleetId);
      // A connected device is a seen one, as a poll would say.
      ctx.lastSeen.note(identity.principal.deviceId);
    },
  });

  app.post(ENDPOINTS.deviceAction.path, { schema: kit.schema({ security: kit.auth, params: UuidParams, body: DeviceActionRequest, response: { 200: DeviceActionResult, 504: R.ApiError } }) }, async (req, reply) => {
    const user = await kit.userOf(req);
    try {
      return await runDeviceAction(ctx, user, req.params.uuid, req.body);
    } catch (err) {
      if (!(err instanceof DeviceDidNotAnswer)) throw err;
      return reply.code(504).send({ statusCode: 504, error: 'Gateway Timeout', message: `${err.message}; ${err.hint ?? ''}`.replace(/; $/, '') });
    }
  });
  return channels;
}
