/**
 * Users, sessions and API keys: who a token belongs to, logging in and out, the admin's user
 * management. Passwords are checked with scrypt; tokens and keys are looked up by their SHA-256.
 */
import type { ApiKey, CreateApiKeyRequest, CreatedApiKey, CreateUserRequest, LoginResponse, User } from '../../api/resources.js';
import type { UserRow } from '../db/schema.js';
import { DUMMY_PASSWORD_HASH, hashKey, hashPassword, newKey, sameHash, verifyPassword } from '../crypto.js';
import { isUniqueViolation } from '../db/database.js';
import { authorize, conflict, isoNow, notFound, unauthorized, type ServiceContext } from './context.js';
import type { Principal } from '../permissions.js';

/** Sessions last 30 days from login. */
const SESSION_DAYS = 30;

export function userJson(row: Pick<UserRow, 'id' | 'email' | 'is_admin' | 'created_at'>): User {
  return { id: row.id, email: row.email, isAdmin: row.is_admin === 1, createdAt: row.created_at };
}

/** The user a session token or API key belongs to, or undefined (unknown, expired, revoked). */
export async function authenticateUser(ctx: ServiceContext, token: string): Promise<{ principal: Extract<Principal, { kind: 'user' }>; auth: 'session' | 'api-key'; user: User } | undefined> {
  const hash = hashKey(token);
  const now = isoNow(ctx);
  if (token.startsWith('sks_')) {
    const row = await ctx.db.selectFrom('sessions').innerJoin('users', 'users.id', 'sessions.user_id')
      .select(['users.id', 'users.email', 'users.is_admin', 'users.created_at', 'sessions.token_hash', 'sessions.expires_at'])
      .where('sessions.token_hash', '=', hash).executeTakeFirst();
    if (!row || !sameHash(row.token_hash, hash) || row.expires_at <= now) return undefined;
    return { principal: { kind: 'user', userId: row.id, email: row.email, isAdmin: row.is_admin === 1 }, auth: 'session', user: userJson(row) };
  }
  const row = await ctx.db.selectFrom('api_keys').innerJoin('users', 'users.id', 'api_keys.user_id')
    .select(['users.id', 'users.email', 'users.is_admin', 'users.created_at', 'api_keys.id as keyId', 'api_keys.key_hash', 'api_keys.expires_at', 'api_keys.revoked_at'])
    .where('api_keys.key_hash', '=', hash).executeTakeFirst();
  if (!row || !sameHash(row.key_hash, hash) || row.revoked_at !== null || (row.expires_at !== null && row.expires_at <= now)) return undefined;
  await ctx.db.updateTable('api_keys').set({ last_used_at: now }).where('id', '=', row.keyId).execute();
  return { principal: { kind: 'user', userId: row.id, email: row.email, isAdmin: row.is_admin === 1 }, auth: 'api-key', user: userJson(row) };
}

/** Checks an email and password; undefined when either is wrong (the same time either way). */
export async function checkPassword(ctx: ServiceContext, email: string, password: string): Promise<UserRow | undefined> {
  const row = await ctx.db.selectFrom('users').selectAll().where('email', '=', email.toLowerCase()).executeTakeFirst();
  const ok = await verifyPassword(password, row?.password_hash ?? DUMMY_PASSWORD_HASH);
  return ok && row ? row : undefined;
}

/** Starts a session. Throws notLoggedIn (401) for a wrong email or password, without saying which. */
export async function login(ctx: ServiceContext, email: string, password: string): Promise<LoginResponse> {
  const row = await checkPassword(ctx, email, password);
  if (!row) throw unauthorized('wrong email or password');
  const token = newKey('session');
  const now = ctx.clock();
  await ctx.db.insertInto('sessions').values({
    user_id: row.id, token_hash: hashKey(token), created_at: now.toISOString(),
    expires_at: new Date(now.getTime() + SESSION_DAYS * 86_400_000).toISOString(),
  }).execute();
  return { token, user: userJson(row) };
}

/** Ends the session `token` is (an API key is not a session: nothing happens). */
export async function logout(ctx: ServiceContext, token: string): Promise<void> {
  await ctx.db.deleteFrom('sessions').where('token_hash', '=', hashKey(token)).execute();
}

/** Creates a user (the caller must be an admin, or undefined for the server's own first admin). 409 when the email exists. */
export async function createUser(ctx: ServiceContext, caller: Principal | undefined, request: CreateUserRequest): Promise<User> {
  if (caller) authorize(caller, 'write', { kind: 'users' }, 'users');
  const created_at = isoNow(ctx);
  const email = request.email.toLowerCase();
  try {
    const row = await ctx.db.insertInto('users').values({ email, password_hash: await hashPassword(request.password), is_admin: request.isAdmin ? 1 : 0, created_at })
      .returning(['id', 'email', 'is_admin', 'created_at']).executeTakeFirstOrThrow();
    return userJson(row);
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a user with email ${email} exists`);
    throw err;
  }
}

export async function listUsers(ctx: ServiceContext, caller: Principal): Promise<User[]> {
  authorize(caller, 'read', { kind: 'users' }, 'users');
  const rows = await ctx.db.selectFrom('users').select(['id', 'email', 'is_admin', 'created_at']).orderBy('id').execute();
  return rows.map(userJson);
}

/** Removes a user with their fleets, devices, releases and keys. An admin cannot remove themselves. */
export async function removeUser(ctx: ServiceContext, caller: Principal, email: string): Promise<void> {
  authorize(caller, 'write', { kind: 'users' }, 'users');
  const row = await ctx.db.selectFrom('users').select(['id']).where('email', '=', email.toLowerCase()).executeTakeFirst();
  if (!row) throw notFound(`user ${email}`);
  if (caller.kind === 'user' && caller.userId === row.id) throw conflict('you cannot remove your own user');
  await ctx.db.deleteFrom('users').where('id', '=', row.id).execute();
}

export async function countUsers(ctx: ServiceContext): Promise<number> {
  const row = await ctx.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

function apiKeyJson(row: { id: number; name: string; description: string | null; created_at: string; expires_at: string | null; last_used_at: string | null }): ApiKey {
  return { id: row.id, name: row.name, description: row.description, createdAt: row.created_at, expiresAt: row.expires_at, lastUsedAt: row.last_used_at };
}

export async function createApiKey(ctx: ServiceContext, caller: Extract<Principal, { kind: 'user' }>, request: CreateApiKeyRequest): Promise<CreatedApiKey> {
  const key = newKey('api');
  const row = await ctx.db.insertInto('api_keys').values({
    user_id: caller.userId, name: request.name, description: request.description ?? null, key_hash: hashKey(key),
    created_at: isoNow(ctx), expires_at: request.expiresAt ? new Date(request.expiresAt).toISOString() : null, last_used_at: null, revoked_at: null,
  }).returningAll().executeTakeFirstOrThrow();
  return { ...apiKeyJson(row), key };
}

/** The caller's API keys that still work (not revoked). */
export async function listApiKeys(ctx: ServiceContext, caller: Extract<Principal, { kind: 'user' }>): Promise<ApiKey[]> {
  const rows = await ctx.db.selectFrom('api_keys').selectAll().where('user_id', '=', caller.userId).where('revoked_at', 'is', null).orderBy('id').execute();
  return rows.map(apiKeyJson);
}

/** Revokes one of the caller's keys at once; another user's key id is not found. */
export async function revokeApiKey(ctx: ServiceContext, caller: Extract<Principal, { kind: 'user' }>, id: number): Promise<void> {
  const row = await ctx.db.selectFrom('api_keys').select(['id', 'user_id', 'revoked_at']).where('id', '=', id).executeTakeFirst();
  if (!row || row.revoked_at !== null) throw notFound(`API key ${id}`);
  authorize(caller, 'write', { kind: 'apiKey', userId: row.user_id }, `API key ${id}`);
  await ctx.db.updateTable('api_keys').set({ revoked_at: isoNow(ctx) }).where('id', '=', id).execute();
}
