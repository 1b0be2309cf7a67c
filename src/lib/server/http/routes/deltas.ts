/**
 * The device's delta routes (api/deltas.ts): `GET /api/v3/delta` (504 + Retry-After while the
 * delta is made) and `GET /api/v3/delta/:id/layers/:index` (a layer's file, `Range` honoured).
 * This module also owns the replica's delta worker: started once the server listens (the registry
 * is set by then), stopped when it closes.
 *
 * Each layer-file response logs, when it ends, `[download] device <device uuid> delta <bytes sent> <path>`.
 */
import { createReadStream } from 'node:fs';
import { pipeline, Transform } from 'node:stream';
import { Type } from '@sinclair/typebox';
import { ENDPOINTS } from '../../../api/endpoints.js';
import { DeltaAnswer, DeltaFileParams, DeltaPending, DeltaQuery } from '../../../api/deltas.js';
import type { ServiceContext } from '../../services/context.js';
import { askDelta, deltaLayerFile, DeltaWorker } from '../../services/deltas.js';
import type { RouteKit, SkiffApp } from '../app.js';

/** A byte range to send: inclusive offsets. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * The `Range` header against a file of `size` bytes (RFC 9110 §14): undefined to send it whole
 * (no header, another unit, several ranges, or one that does not parse, all of which a server may
 * ignore), `'unsatisfiable'` for a range past the end (416), else the one range, clipped to the file.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match) return undefined;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return undefined;
  if (first === '') {
    // A suffix: the last N bytes.
    const n = Number(last);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (last !== '' && Number(last) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

export async function registerDeltaRoutes(app: SkiffApp, ctx: ServiceContext, kit: RouteKit): Promise<void> {
  const worker = new DeltaWorker(ctx);
  ctx.deltas = worker;
  app.addHook('onReady', async () => worker.start());
  app.addHook('preClose', async () => worker.stop());

  app.get(ENDPOINTS.delta.path, {
    schema: kit.schema({
      summary: 'The delta from the image the device runs to a release\'s image (504 + Retry-After while it is made)',
      security: kit.auth, querystring: DeltaQuery, response: { 200: DeltaAnswer, 504: DeltaPending },
    }),
  }, async (req, reply) => {
    const identity = await kit.deviceOf(req);
    const result = await askDelta(ctx, identity.principal, req.query);
    if ('pending' in result) return reply.code(504).header('retry-after', String(result.pending.retryAfter)).header('cache-control', 'no-store').send(result.pending);
    return reply.header('cache-control', 'no-store').send(result.answer);
  });

  app.get(ENDPOINTS.deltaLayer.path, {
    schema: kit.schema({
      summary: 'A delta layer\'s file: Brotli-compressed VCDIFF (Range honoured)',
      security: kit.auth, params: DeltaFileParams, response: { 200: Type.Unknown(), 206: Type.Unknown(), 416: Type.Unknown() },
    }),
  }, async (req, reply) => {
    const identity = await kit.deviceOf(req);
    const { id } = req.params;
    const { file, bytes } = await deltaLayerFile(ctx, identity.principal, id, Number(req.params.index));
    const range = parseRange(req.headers.range, bytes);
    void reply.header('accept-ranges', 'bytes').header('content-type', 'application/octet-stream').header('cache-control', 'private, max-age=86400');
    if (range === 'unsatisfiable') return reply.code(416).header('content-range', `bytes */${bytes}`).send();
    const { start, end } = range ?? { start: 0, end: bytes - 1 };
    if (range) void reply.code(206).header('content-range', `bytes ${start}-${end}/${bytes}`);
    void reply.header('content-length', String(Math.max(0, end - start + 1)));
    const downloads = worker.downloads;
    downloads.set(id, (downloads.get(id) ?? 0) + 1);
    let sent = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        sent += chunk.length;
        done(null, chunk);
      },
    });
    const path = req.url.split('?')[0] ?? '';
    reply.raw.once('close', () => {
      const left = (downloads.get(id) ?? 1) - 1;
      if (left > 0) downloads.set(id, left);
      else downloads.delete(id);
      ctx.log(`[download] device ${identity.principal.uuid} delta ${sent} ${path}`);
    });
    if (end < start) return reply.send(Buffer.alloc(0));
    // A read error (the file evicted under us) ends the response early; the device resumes or falls back.
    return reply.send(pipeline(createReadStream(file, { start, end }), counter, () => undefined));
  });
}
