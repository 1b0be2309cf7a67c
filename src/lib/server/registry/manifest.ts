/**
 * Reading a manifest back from the registry, so the core can check every image of a release is
 * really stored before the release becomes visible.
 */
import { createHash } from 'node:crypto';
import { SkiffError } from '../../errors/errors.js';
import { isRepositoryName } from './scope.js';

/** Every manifest type distribution 2.8 stores; asking for all stops it from converting one. */
const ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.index.v1+json',
].join(', ');

/** Manifests are small; distribution itself refuses ones over 4 MiB. */
const MAX_MANIFEST = 4 * 1024 * 1024;

const DIGEST = /^sha256:[a-f0-9]{64}$/;

/** What RunningRegistry.manifest() answers (contract.ts). */
export interface ManifestSummary {
  digest: string;
  /** Bytes: config + layers for an image; the sum of the listed manifests for an index (which has no layers of its own). */
  size: number;
  layers: string[];
}

interface Descriptor {
  digest: string;
  size: number;
}

function isDescriptor(v: unknown): v is Descriptor {
  if (typeof v !== 'object' || v === null) return false;
  const d = v as Record<string, unknown>;
  return typeof d['digest'] === 'string' && typeof d['size'] === 'number';
}

/**
 * Sums up a manifest's JSON. Throws SkiffError when it is neither an image manifest nor an index
 * (schema 1, which distribution 2.8 still serves, has no sizes to sum).
 */
export function summariseManifest(digest: string, body: unknown): ManifestSummary {
  const m = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const layers = m['layers'];
  const config = m['config'];
  if (Array.isArray(layers) && isDescriptor(config) && layers.every(isDescriptor)) {
    return { digest, size: config.size + layers.reduce((n, l) => n + l.size, 0), layers: layers.map((l) => l.digest) };
  }
  const manifests = m['manifests'];
  if (Array.isArray(manifests) && manifests.every(isDescriptor)) {
    return { digest, size: manifests.reduce((n, l) => n + l.size, 0), layers: [] };
  }
  throw new SkiffError('error', `the manifest ${digest} is neither an image manifest nor an index (schema ${String(m['schemaVersion'])})`);
}

/**
 * `GET /v2/<repository>/manifests/<digest>` from the registry with `token`, parsed. Undefined when
 * the registry has no such manifest (or repository). Throws SkiffError on a malformed repository or
 * digest, on a body whose hash is not the digest, or when the registry answers anything else.
 */
export async function fetchManifestJson(registryUrl: string, token: string, repository: string, digest: string): Promise<unknown> {
  if (!isRepositoryName(repository)) throw new SkiffError('usage', `'${repository}' is not a repository name`);
  if (!DIGEST.test(digest)) throw new SkiffError('usage', `'${digest}' is not a sha256 digest (sha256:<64 hex>)`);
  let res: Response;
  try {
    res = await fetch(`${registryUrl}/v2/${repository}/manifests/${digest}`, { headers: { accept: ACCEPT, authorization: `Bearer ${token}` } });
  } catch (err) {
    throw new SkiffError('error', `cannot reach the registry at ${registryUrl}`, { cause: err });
  }
  if (res.status === 404) {
    await res.body?.cancel();
    return undefined;
  }
  if (res.status !== 200) {
    const text = (await res.text()).slice(0, 300);
    throw new SkiffError('error', `the registry answered ${res.status} for ${repository}@${digest}: ${text}`);
  }
  const length = Number(res.headers.get('content-length') ?? '0');
  if (length > MAX_MANIFEST) {
    await res.body?.cancel();
    throw new SkiffError('error', `the manifest ${repository}@${digest} is ${length} bytes, over ${MAX_MANIFEST}`);
  }
  const bytes = Buffer.from(await res.arrayBuffer());
  const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  if (actual !== digest) throw new SkiffError('error', `the registry's manifest for ${repository}@${digest} hashes to ${actual}`);
  try {
    return JSON.parse(bytes.toString('utf8')) as unknown;
  } catch (err) {
    throw new SkiffError('error', `the manifest ${repository}@${digest} is not JSON`, { cause: err });
  }
}

/** {@link fetchManifestJson}, summed up ({@link summariseManifest}). */
export async function fetchManifest(registryUrl: string, token: string, repository: string, digest: string): Promise<ManifestSummary | undefined> {
  const json = await fetchManifestJson(registryUrl, token, repository, digest);
  return json === undefined ? undefined : summariseManifest(digest, json);
}

/**
 * `GET /v2/<repository>/blobs/<digest>` as a stream (the caller checks its hash as it reads).
 * Undefined when the registry has no such blob. Throws SkiffError on a malformed name or digest,
 * or any other answer.
 */
export async function fetchBlob(registryUrl: string, token: string, repository: string, digest: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array> | undefined> {
  if (!isRepositoryName(repository)) throw new SkiffError('usage', `'${repository}' is not a repository name`);
  if (!DIGEST.test(digest)) throw new SkiffError('usage', `'${digest}' is not a sha256 digest (sha256:<64 hex>)`);
  let res: Response;
  try {
    res = await fetch(`${registryUrl}/v2/${repository}/blobs/${digest}`, { headers: { authorization: `Bearer ${token}` }, ...(signal ? { signal } : {}) });
  } catch (err) {
    throw new SkiffError('error', `cannot reach the registry at ${registryUrl}`, { cause: err });
  }
  if (res.status === 404) {
    await res.body?.cancel();
    return undefined;
  }
  if (res.status !== 200 || !res.body) {
    const text = (await res.text()).slice(0, 300);
    throw new SkiffError('error', `the registry answered ${res.status} for the blob ${repository}@${digest}: ${text}`);
  }
  return res.body;
}
