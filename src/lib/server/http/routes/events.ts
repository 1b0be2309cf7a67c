/** Routes of the device event channel (WebSocket) and device actions. */
import type { ServiceContext } from '../../services/context.js';
import type { RouteKit, SkiffApp } from '../app.js';

export async function registerEventRoutes(_app: SkiffApp, _ctx: ServiceContext, _kit: RouteKit): Promise<void> {
  // Filled in by its feature's work.
}
