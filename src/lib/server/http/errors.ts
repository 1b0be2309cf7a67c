/**
 * One mapping from what a route threw to the answer's status and body (`ApiError`): validation
 * errors name the field, SkiffErrors map by code, a database that does not answer is a 503.
 */
import type { FastifyError } from 'fastify';
import type { ApiError } from '../../api/resources.js';
import { SkiffError, type ExitCodeName } from '../../errors/errors.js';
import { isDatabaseUnavailable } from '../db/database.js';

const STATUS: Partial<Record<ExitCodeName, number>> = {
  usage: 400,
  notLoggedIn: 401,
  // A device or provisioning key asking for something its kind may never do, on its own objects.
  deviceRefused: 403,
  notFound: 404,
  conflict: 409,
  serverUnreachable: 503,
};

const REASON: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large',
  415: 'Unsupported Media Type', 429: 'Too Many Requests', 500: 'Internal Server Error', 503: 'Service Unavailable',
};

interface AjvIssue { instancePath?: string; params?: Record<string, unknown>; message?: string }

/** `/composition/services/main` → `composition.services.main`; a missing property names itself. */
function fieldOf(issue: AjvIssue | undefined, context: string | undefined): string {
  const parts = (issue?.instancePath ?? '').split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const missing = issue?.params?.missingProperty ?? issue?.params?.additionalProperty;
  if (typeof missing === 'string') parts.push(missing);
  if (parts.length > 0) return parts.join('.');
  return context ?? 'body';
}

/** The status, body and whether it is a server fault (to log) for `err`. */
export function errorAnswer(err: unknown): { status: number; body: ApiError; fault: boolean } {
  const e = err as Partial<FastifyError> & { validation?: AjvIssue[]; validationContext?: string };
  if (Array.isArray(e.validation)) {
    const issue = e.validation[0];
    const field = fieldOf(issue, e.validationContext);
    const extra = issue?.params?.additionalProperty;
    const what = typeof extra === 'string' ? `is not allowed here` : (issue?.message ?? 'is not valid');
    return { status: 400, body: { statusCode: 400, error: REASON[400] ?? '', message: `${e.validationContext ?? 'body'} ${field} ${what}`, field }, fault: false };
  }
  if (err instanceof SkiffError) {
    const status = STATUS[err.code] ?? 500;
    const message = err.hint ? `${err.message}; ${err.hint}` : err.message;
    const body: ApiError = { statusCode: status, error: REASON[status] ?? 'Error', message };
    if (status === 400 && err.where) body.field = err.where;
    return { status, body, fault: status >= 500 && status !== 503 };
  }
  if (isDatabaseUnavailable(err)) {
    return { status: 503, body: { statusCode: 503, error: REASON[503] ?? '', message: 'the database does not answer; try again shortly' }, fault: false };
  }
  const status = typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 600 ? e.statusCode : 500;
  if (status === 500) return { status, body: { statusCode: 500, error: REASON[500] ?? '', message: 'internal error (see the server log)' }, fault: true };
  const body: ApiError = { statusCode: status, error: REASON[status] ?? 'Error', message: e.message ?? 'error' };
  if (status === 400 && e.code?.startsWith('FST_ERR_CTP_')) body.field = 'body';
  return { status, body, fault: false };
}
