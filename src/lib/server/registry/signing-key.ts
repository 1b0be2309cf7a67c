/**
 * The key the server signs registry tokens with, made once and kept in the registry's data dir,
 * with the self-signed certificate distribution trusts it by (`auth.token.rootcertbundle`).
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../../errors/errors.js';

/** File names in the registry data dir. The key is 0600: whoever reads it can sign any token. */
export const SIGNING_KEY_FILE = 'token-signing.key';
export const SIGNING_CERT_FILE = 'token-signing.crt';

export interface SigningKey {
  privateKey: KeyObject;
  /** libtrust's fingerprint of the public key: the JWT header's `kid`, which distribution looks up. */
  keyId: string;
  /** Absolute path of the certificate for `rootcertbundle`. */
  certFile: string;
}

/**
 * libtrust's key id (`docker/libtrust` `util.go` keyIDFromCryptoKey), which distribution's token
 * auth computes for every key in its root bundle and matches against the JWT's `kid`: SHA-256 of
 * the public key's DER (PKIX SubjectPublicKeyInfo), first 240 bits, base32 without padding, in
 * twelve groups of four joined by `:`.
 */
export function libtrustKeyId(spkiDer: Uint8Array): string {
  const digest = createHash('sha256').update(spkiDer).digest().subarray(0, 30);
  return base32(digest).match(/.{4}/g)?.join(':') ?? '';
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 without padding (30 bytes make exactly 48 characters, so none is ever needed). */
function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/**
 * Creates `file` whole (a crash mid-write must not leave half a key that the next start trusts)
 * unless it exists: replicas sharing a data dir may race to make it, and the first one wins.
 * Returns false when the file was already there.
 */
export function createOnce(file: string, data: string, mode: number): boolean {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  try {
    linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Loads the signing key from `dataDir`, making it (EC P-256, for ES256) and its certificate on
 * first use; a lost certificate is made again from the kept key, so issued tokens stay valid.
 * Throws SkiffError when the key file cannot be read as a private key.
 */
export async function loadOrCreateSigningKey(dataDir: string): Promise<SigningKey> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const keyFile = path.join(dataDir, SIGNING_KEY_FILE);
  const certFile = path.join(dataDir, SIGNING_CERT_FILE);
  if (!existsSync(keyFile)) createOnce(keyFile, (await generateKey()).export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
  // Read back even when we made it: another replica may have made it first.
  const privatePem = readFileSync(keyFile, 'utf8');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(privatePem);
  } catch (err) {
    throw new SkiffError('error', `the registry token key ${keyFile} is not a private key`, { hint: 'restore it from a backup, or remove it (and its certificate) to make a new one', cause: err });
  }
  const publicKey = createPublicKey(privateKey);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  if (!existsSync(certFile)) {
    const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    createOnce(certFile, await selfSignedCertificate(privatePem, publicPem), 0o644);
  }
  return { privateKey, keyId: libtrustKeyId(spki), certFile };
}

async function generateKey(): Promise<KeyObject> {
  const { generateKeyPairSync } = await import('node:crypto');
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
}

/**
 * A self-signed certificate for the key: distribution only reads the public key out of it (the
 * `kid` path does not check dates), but a long validity keeps an external registry that verifies
 * chains happy too.
 */
async function selfSignedCertificate(privatePem: string, publicPem: string): Promise<string> {
  const { generate } = await import('selfsigned');
  const now = new Date();
  const notAfter = new Date(now.getTime() + 20 * 365 * 24 * 3600 * 1000);
  const pems = await generate([{ name: 'commonName', value: 'skiff registry token signer' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: now,
    notAfterDate: notAfter,
    keyPair: { privateKey: privatePem, publicKey: publicPem },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
    ],
  });
  return pems.cert;
}
