/** Routes of the fleets' git repositories over smart HTTP (git/*.ts). */
import type { ServiceContext } from '../../services/context.js';
import type { RouteKit, SkiffApp } from '../app.js';

export async function registerGitRoutes(_app: SkiffApp, _ctx: ServiceContext, _kit: RouteKit): Promise<void> {
  // Filled in by its feature's work.
}
