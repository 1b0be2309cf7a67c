/**
 * Device public URLs (issue 11; api/tunnel.ts): the settings (`/devices/:uuid/public-url`,
 * `/fleets/:fleet/public-url`) and the proxy itself: `/d/<uuid>/…` (or `<uuid>.<--public-url-domain>`)
 * to port 80 of a device that enabled it, HTTP and WebSocket, through the device's tunnel
 * (public-url-proxy.ts, which sits in front of Fastify on the server's request and upgrade events).
 */
import { Type } from '@sinclair/typebox';
import { ENDPOINTS } from '../../../api/endpoints.js';
import * as R from '../../../api/resources.js';
import { DevicePublicUrl, FleetPublicUrl, SetDevicePublicUrl, SetFleetPublicUrl } from '../../../api/tunnel.js';
import type { ServiceContext } from '../../services/context.js';
import * as publicUrls from '../../services/public-url.js';
import type { DeviceChannels } from '../../events/channel.js';
import { PublicUrlProxy } from '../public-url-proxy.js';
import type { RouteKit, SkiffApp } from '../app.js';

const UuidParams = Type.Object({ uuid: Type.String({ minLength: 1, maxLength: 64 }) });
const FleetParams = Type.Object({ fleet: R.FleetName });

export async function registerPublicUrlRoutes(app: SkiffApp, ctx: ServiceContext, kit: RouteKit, channels: DeviceChannels): Promise<void> {
  app.get(ENDPOINTS.devicePublicUrl.path, { schema: kit.schema({ security: kit.auth, params: UuidParams, response: { 200: DevicePublicUrl } }) },
    async (req) => publicUrls.getDevicePublicUrl(ctx, await kit.userOf(req), req.params.uuid));
  app.put(ENDPOINTS.setDevicePublicUrl.path, { schema: kit.schema({ security: kit.auth, params: UuidParams, body: SetDevicePublicUrl, response: { 200: DevicePublicUrl } }) },
    async (req) => publicUrls.setDevicePublicUrl(ctx, await kit.userOf(req), req.params.uuid, req.body.enabled));
  app.get(ENDPOINTS.fleetPublicUrl.path, { schema: kit.schema({ security: kit.auth, params: FleetParams, response: { 200: FleetPublicUrl } }) },
    async (req) => publicUrls.getFleetPublicUrl(ctx, await kit.userOf(req), req.params.fleet));
  app.put(ENDPOINTS.setFleetPublicUrl.path, { schema: kit.schema({ security: kit.auth, params: FleetParams, body: SetFleetPublicUrl, response: { 200: FleetPublicUrl } }) },
    async (req) => publicUrls.setFleetPublicUrl(ctx, await kit.userOf(req), req.params.fleet, req.body.enabled));

  // The proxy takes its requests before Fastify routes them (no body parsing, no body limit) and
  // its upgrades before @fastify/websocket, whose listener is on the server by the time it is ready.
  const proxy = new PublicUrlProxy(ctx, channels);
  app.addHook('onReady', async () => proxy.attach(app.server));
  // Other replicas' locates are answered once per replica, by routes/tunnels.ts.
  // Before the server closes: it waits for open connections, and a proxied one may never end.
  app.addHook('preClose', async () => proxy.close());
}
