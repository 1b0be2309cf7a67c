/**
 * Device public URLs (issue 11; api/tunnel.ts): the settings (`/devices/:uuid/public-url`,
 * `/fleets/:fleet/public-url`) and the proxy itself: `/d/<uuid>/…` (or `<uuid>.<--public-url-domain>`)
 * to port 80 of a device that enabled it, HTTP and WebSocket, through the device's tunnel.
 */
import type { ServiceContext } from '../../services/context.js';
import type { DeviceChannels } from '../../events/channel.js';
import type { RouteKit, SkiffApp } from '../app.js';

export async function registerPublicUrlRoutes(_app: SkiffApp, _ctx: ServiceContext, _kit: RouteKit, _channels: DeviceChannels): Promise<void> {
  // Filled in by the public URL work.
}
