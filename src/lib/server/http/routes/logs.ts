/** Routes of device logs: batches from agents, history and follow for the CLI, and the retention sweep. */
import { Type } from '@sinclair/typebox';
import { ENDPOINTS } from '../../../api/endpoints.js';
import { DeviceLogBatch, DeviceLogLine, DeviceLogsQuery } from '../../../api/logs.js';
import type { ServiceContext } from '../../services/context.js';
import { badInput } from '../../services/context.js';
import { DEFAULT_HISTORY_LINES, followLogs, logDevice, LogRetention, readLogs, storeLogBatch } from '../../services/logs.js';
import { openEventStream } from '../sse.js';
import type { RouteKit, SkiffApp } from '../app.js';

const UuidParams = Type.Object({ uuid: Type.String({ minLength: 1, maxLength: 64 }) });

/** A follower's resume point: `after=`, else the `Last-Event-ID` header an EventSource sends back. */
function resumeAfter(after: string | undefined, lastEventId: string | string[] | undefined): number | undefined {
  if (after !== undefined) return Number(after);
  const header = Array.isArray(lastEventId) ? lastEventId[0] : lastEventId;
  if (header === undefined || header === '') return undefined;
  if (!/^[0-9]{1,15}$/.test(header)) throw badInput('Last-Event-ID', `Last-Event-ID '${header.slice(0, 40)}' is not a line id`);
  return Number(header);
}

export async function registerLogRoutes(app: SkiffApp, ctx: ServiceContext, kit: RouteKit): Promise<void> {
  const retention = new LogRetention(ctx);
  retention.start();
  app.addHook('onClose', async () => retention.stop());
  // A follow never ends by itself: a stopping server ends them, or close() would wait on them forever.
  const follows = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of follows) end();
  });

  app.post(ENDPOINTS.logBatch.path, { schema: kit.schema({ security: kit.auth, params: UuidParams, body: DeviceLogBatch, response: { 204: kit.NoContent } }) }, async (req, reply) => {
    const identity = await kit.deviceOf(req);
    await storeLogBatch(ctx, identity.principal, req.params.uuid, req.body);
    return reply.code(204).send();
  });

  app.get(ENDPOINTS.deviceLogs.path, { schema: kit.schema({ security: kit.auth, params: UuidParams, querystring: DeviceLogsQuery, response: { 200: Type.Array(DeviceLogLine) } }) }, async (req, reply) => {
    const caller = await kit.userOf(req);
    const deviceId = await logDevice(ctx, caller, req.params.uuid);
    const q = req.query;
    const services = q.service === undefined ? undefined : Array.isArray(q.service) ? q.service : [q.service];
    const filter = { services, system: q.system === 'true', count: q.count === undefined ? DEFAULT_HISTORY_LINES : Number(q.count) };
    const after = resumeAfter(q.after, req.headers['last-event-id']);
    if (q.follow !== 'true') return readLogs(ctx, deviceId, { ...filter, ...(after !== undefined ? { after } : {}) });
    const stream = openEventStream(reply);
    const end = (): void => stream.end();
    follows.add(end);
    try {
      // The device removed or the key revoked while following: the stream ends, and the reader's
      // reconnect gets the 404 or 401 (it followed a removed device in silence for ever).
      const stillAllowed = async (): Promise<boolean> => {
        try {
          return (await logDevice(ctx, await kit.userOf(req), req.params.uuid)) === deviceId;
        } catch {
          return false;
        }
      };
      await followLogs(ctx, deviceId, { ...filter, ...(after !== undefined ? { after } : {}), signal: stream.signal, send: (line) => stream.send(line.id, line), stillAllowed });
    } catch (err) {
      // The headers are gone: the reader sees the stream end and resumes from its last id.
      ctx.log(`log follow of device ${deviceId} ended: ${(err as Error).message}`);
    } finally {
      follows.delete(end);
      stream.end();
    }
    return reply;
  });
}
