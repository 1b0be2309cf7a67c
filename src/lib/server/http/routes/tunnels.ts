/**
 * Tunnel routes (issue 11; api/tunnel.ts): the CLI's sessions to a device (`/devices/:uuid/tunnel`,
 * `/devices/:uuid/exec`, WebSockets relayed to the device's multiplexer, on this replica or the one
 * holding the device's socket), the session log, and public URLs.
 */
import type { ServiceContext } from '../../services/context.js';
import type { DeviceChannels } from '../../events/channel.js';
import type { RouteKit, SkiffApp } from '../app.js';

export async function registerTunnelRoutes(_app: SkiffApp, _ctx: ServiceContext, _kit: RouteKit, _channels: DeviceChannels): Promise<void> {
  // Filled in by the tunnel routes' work.
}
