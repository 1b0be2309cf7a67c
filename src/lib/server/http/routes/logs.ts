/** Routes of device logs: batches from agents, history and follow for the CLI. */
import type { ServiceContext } from '../../services/context.js';
import type { RouteKit, SkiffApp } from '../app.js';

export async function registerLogRoutes(_app: SkiffApp, _ctx: ServiceContext, _kit: RouteKit): Promise<void> {
  // Filled in by its feature's work.
}
