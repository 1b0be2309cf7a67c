/**
 * Registry tokens as distribution 2.8 verifies them (`registry/auth/token/token.go`,
 * `docs/spec/auth/jwt.md`): a compact JWS, ES256, whose header `kid` is the libtrust id of a key in
 * `rootcertbundle`, with `iss` = the configured issuer, `aud` = the service (a single string: 2.8
 * reads `aud` as one string), `exp`/`nbf` checked with 60 s of leeway, and the grants in `access`.
 */
import { randomUUID } from 'node:crypto';
import type { RegistryAction, RegistryPrincipal } from './contract.js';
import type { SigningKey } from './signing-key.js';

/** What distribution reads from `access`: one entry per repository, only what was granted. */
export interface TokenAccess {
  type: 'repository';
  name: string;
  actions: RegistryAction[];
}

export interface TokenClaims {
  iss: string;
  sub: string;
  aud: string;
  /** Seconds since the epoch. */
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: TokenAccess[];
}

/**
 * Default token lifetime in seconds. The registry checks a token when a request starts, so a layer
 * of gigabytes that outlasts it still completes, and docker's client fetches a new token when one
 * expires; short, so a removed device or revoked key loses registry access within minutes.
 */
export const DEFAULT_TOKEN_LIFETIME = 600;

/** The `sub` of a principal: `user:<id>`, `device:<uuid>`, or `skiff-server` for the server itself. */
export function subjectOf(principal: RegistryPrincipal | 'server'): string {
  if (principal === 'server') return 'skiff-server';
  return principal.kind === 'user' ? `user:${principal.userId}` : `device:${principal.uuid}`;
}

/** The claim set of a token (pure: the clock and the id are passed in). `nowMs` in milliseconds. */
export function tokenClaims(options: {
  service: string;
  subject: string;
  grants: ReadonlyArray<{ repository: string; actions: readonly RegistryAction[] }>;
  lifetimeSeconds: number;
  nowMs: number;
  jti: string;
}): TokenClaims {
  const now = Math.floor(options.nowMs / 1000);
  return {
    iss: options.service,
    sub: options.subject,
    aud: options.service,
    exp: now + options.lifetimeSeconds,
    nbf: now,
    iat: now,
    jti: options.jti,
    access: options.grants.filter((g) => g.actions.length > 0).map((g) => ({ type: 'repository', name: g.repository, actions: [...g.actions] })),
  };
}

/** Signs claims with the registry key (ES256, `typ: JWT`, libtrust `kid`). */
export async function signToken(key: SigningKey, claims: TokenClaims): Promise<string> {
  const { SignJWT } = await import('jose');
  // jose takes the registered claims as a payload too; passing the whole set keeps exactly our values.
  return new SignJWT({ ...claims, access: claims.access.map((a) => ({ ...a })) }).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: key.keyId }).sign(key.privateKey);
}

/** A fresh token id. */
export function newTokenId(): string {
  return randomUUID();
}
