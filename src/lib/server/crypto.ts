/**
 * Secrets the server keeps: passwords hashed with scrypt (slow on purpose: people pick guessable
 * ones), and keys it generates or devices bring (>= 128 random bits) hashed with SHA-256, fast
 * enough for every device poll. Nothing secret is stored in the clear; comparisons are constant time.
 */
import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

// scrypt cost: N=2^15, r=8, p=1 (32 MiB, ~50 ms here): OWASP's minimum for scrypt.
const N = 32768;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;

function scryptAsync(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEY_LENGTH, { N: n, r, p, maxmem: 128 * n * r * 2 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** `scrypt$N$r$p$<salt base64>$<hash base64>`: the parameters travel with the hash so they can grow. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** True when `password` matches `stored` (from {@link hashPassword}); false for a malformed `stored`. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, n, r, p, salt, hash] = stored.split('$');
  if (kind !== 'scrypt' || !n || !r || !p || salt === undefined || hash === undefined) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scryptAsync(password, Buffer.from(salt, 'base64'), Number(n), Number(r), Number(p));
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** A password check's cost for an unknown user, so timing does not tell which emails exist. */
export const DUMMY_PASSWORD_HASH = `scrypt$${N}$${R}$${P}$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=`;

/** The kinds of keys the server makes; the prefix tells a person (and a log) what a key is. */
export type KeyKind = 'session' | 'api' | 'provisioning';
const PREFIX: Record<KeyKind, string> = { session: 'sks_', api: 'ska_', provisioning: 'skp_' };

/** A new key: the prefix and 256 random bits in base64url, e.g. `ska_Vx3…`. */
export function newKey(kind: KeyKind): string {
  return PREFIX[kind] + randomBytes(32).toString('base64url');
}

/** SHA-256 hex of a key: what the tables store and look keys up by. */
export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Constant-time equality of two hex digests (from {@link hashKey}). */
export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

/** 32 lower-case hex digits: fleet uuids and release commits the server makes. */
export function newHexId(bytes = 16): string {
  return randomBytes(bytes).toString('hex');
}

/** The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), or undefined for any other header. */
export function bearerToken(authorization: string | undefined): string | undefined {
  return authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1] : undefined;
}
