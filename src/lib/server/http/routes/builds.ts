/** Routes of cloud builds: upload, queue, run, events, cancel (builds/*.ts). */
import type { ServiceContext } from '../../services/context.js';
import type { RouteKit, SkiffApp } from '../app.js';

export async function registerBuildRoutes(_app: SkiffApp, _ctx: ServiceContext, _kit: RouteKit): Promise<void> {
  // Filled in by its feature's work.
}
