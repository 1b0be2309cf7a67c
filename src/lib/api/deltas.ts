/**
 * Delta updates (issue 12): a device on an older release downloads only what changed in a
 * service's image, byte-exact, and assembles the new image on its own stock engine.
 *
 * - **Asking**: `GET /api/v3/delta?src=&dest=` (balena's delta endpoint path, device key auth).
 *   `src` is the image the device runs, `dest` the release's image, both `<host>/<repository>@sha256:…`
 *   as the target state names them. 504 with `Retry-After` and a {@link DeltaPending} body while
 *   the server makes it (balena: 502/504 mean "still being made, retry"); 200 with a
 *   {@link DeltaAnswer}: `ready` with a {@link DeltaDescriptor}, or `none` with the reason (pull
 *   instead). 404 for an image outside the device's own fleet (not found, never "forbidden").
 * - **Per layer**: each layer of `dest` is `present` (a layer of `src` with the same diffID: the
 *   device copies it from its engine, nothing downloaded), `delta` (a VCDIFF patch, RFC 3284 as
 *   xdelta3 writes it, Brotli-compressed, against the concatenation of `bases`, layers of `src`
 *   by diffID) or `pull` (the layer's own blob from the registry: its delta was not smaller).
 * - **Downloading**: `GET /api/v3/delta/:id/layers/:index` streams a `delta` layer's file
 *   (`Range` honoured, so a broken download resumes); the server counts the bytes it sends. 503
 *   with `Retry-After` while the file is made again (the replica that made it is gone): retry then.
 * - **Checking**: the device verifies every assembled layer's sha256 against its diffID and the
 *   loaded image's ID against the release's config digest; anything else falls back to a pull.
 */
import { Type, type Static } from '@sinclair/typebox';

const Digest = Type.String({ pattern: '^sha256:[0-9a-f]{64}$' });
/** `<host>/<repository>@sha256:<hex>`: an image as a target state names it. */
const ImageRef = Type.String({ minLength: 1, maxLength: 1000, pattern: '^[^\\s@]+@sha256:[0-9a-f]{64}$' });

/** `GET /api/v3/delta` query. */
export const DeltaQuery = Type.Object({
  src: ImageRef,
  dest: ImageRef,
}, { additionalProperties: false });
export type DeltaQuery = Static<typeof DeltaQuery>;

/** One layer of the target image and where the device gets it. `size`: the layer tar's bytes, uncompressed. */
export const DeltaLayer = Type.Union([
  Type.Object({ source: Type.Literal('present'), diffId: Digest, size: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
  Type.Object({
    source: Type.Literal('delta'),
    diffId: Digest,
    size: Type.Integer({ minimum: 0 }),
    /** diffIDs of `src` layers whose tars, concatenated in this order, are the patch's source. */
    bases: Type.Array(Digest, { minItems: 1, maxItems: 16 }),
    /**
     * Uncompressed bytes of each base, in the order of `bases`: the device picks them out of its
     * engine's export by size (Docker's legacy save names layers by a v1 id, not the diffID), so
     * no other layer of the source image is written to its disk.
     */
    baseSizes: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 16 })),
    /** Bytes of the file to download (Brotli-compressed VCDIFF). */
    bytes: Type.Integer({ minimum: 0 }),
    /** sha256 of that file: a corrupt download is found before the patch is applied. */
    sha256: Digest,
  }, { additionalProperties: false }),
  Type.Object({
    source: Type.Literal('pull'),
    diffId: Digest,
    size: Type.Integer({ minimum: 0 }),
    /** The registry blob (compressed layer) of the target image's manifest. */
    digest: Digest,
    /** Bytes of that blob. */
    bytes: Type.Integer({ minimum: 0 }),
    mediaType: Type.String(),
  }, { additionalProperties: false }),
]);
export type DeltaLayer = Static<typeof DeltaLayer>;

/** What a device needs to make `dest` from `src`. Layers in the order of the target image's rootfs. */
export const DeltaDescriptor = Type.Object({
  /** The delta's id: the `:id` of its download URLs. */
  id: Type.String({ pattern: '^[0-9a-f]{16,64}$' }),
  src: ImageRef,
  dest: ImageRef,
  /** The target image's config digest: its image ID on the engine. */
  imageId: Digest,
  layers: Type.Array(DeltaLayer),
  /** Bytes to download with this delta (`delta` files and `pull` blobs). */
  downloadBytes: Type.Integer({ minimum: 0 }),
  /** Bytes a normal pull would download: the compressed blobs of the layers `src` lacks. */
  pullBytes: Type.Integer({ minimum: 0 }),
}, { additionalProperties: false });
export type DeltaDescriptor = Static<typeof DeltaDescriptor>;

/** 200 answer of `GET /api/v3/delta`. */
export const DeltaAnswer = Type.Union([
  Type.Object({ status: Type.Literal('ready'), delta: DeltaDescriptor }, { additionalProperties: false }),
  /** No delta helps (nothing in common, or not smaller than the pull; or making it failed): pull instead. */
  Type.Object({ status: Type.Literal('none'), reason: Type.String() }, { additionalProperties: false }),
]);
export type DeltaAnswer = Static<typeof DeltaAnswer>;

/** 504 body of `GET /api/v3/delta` while the delta is made; the `Retry-After` header says the same. */
export const DeltaPending = Type.Object({
  status: Type.Literal('pending'),
  /** Seconds to wait before asking again. */
  retryAfter: Type.Integer({ minimum: 1 }),
}, { additionalProperties: false });
export type DeltaPending = Static<typeof DeltaPending>;

/** `GET /api/v3/delta/:id/layers/:index` path parameters. */
export const DeltaFileParams = Type.Object({
  id: Type.String({ pattern: '^[0-9a-f]{16,64}$' }),
  index: Type.String({ pattern: '^(0|[1-9][0-9]{0,3})$' }),
}, { additionalProperties: false });
export type DeltaFileParams = Static<typeof DeltaFileParams>;

/**
 * How one service's image reached the device in its last update (Skiff's report field
 * `update_download`, shown by `skiff device info`).
 */
export const ServiceDownload = Type.Object({
  /** `delta`: assembled from a delta; `pull`: a normal pull (no delta, or a fallback); `present`: the engine had it. */
  method: Type.Union([Type.Literal('delta'), Type.Literal('pull'), Type.Literal('present')]),
  /** Bytes downloaded for it. */
  downloadedBytes: Type.Integer({ minimum: 0 }),
  /** Bytes a normal pull downloads (compressed layers the device lacked); equals downloadedBytes for a pull. */
  pullBytes: Type.Integer({ minimum: 0 }),
  /** Why a delta was not used (no delta, or the one-line reason it failed and fell back), null when used or not tried. */
  fallback: Type.Union([Type.String({ maxLength: 2000 }), Type.Null()]),
}, { additionalProperties: false });
export type ServiceDownload = Static<typeof ServiceDownload>;

/** The last update's downloads: the release it was for and each service of it. */
export const UpdateDownload = Type.Object({
  commit: Type.String({ maxLength: 100 }),
  services: Type.Record(Type.String({ maxLength: 100 }), ServiceDownload, { maxProperties: 100 }),
}, { additionalProperties: false });
export type UpdateDownload = Static<typeof UpdateDownload>;

/**
 * A release service's delta from the fleet's previous release (`skiff release info`). `status`
 * as the server's delta job: `queued`/`running` while it is made, `done` (bytes known), `none`
 * (no delta helps), `failed`.
 */
export const ReleaseServiceDelta = Type.Object({
  /** Commit of the release it is from. */
  from: Type.String(),
  status: Type.Union([Type.Literal('queued'), Type.Literal('running'), Type.Literal('done'), Type.Literal('none'), Type.Literal('failed')]),
  /** Bytes a device downloads with the delta; null until done. */
  downloadBytes: Type.Union([Type.Integer(), Type.Null()]),
  /** Bytes a pull would download; null until done. */
  pullBytes: Type.Union([Type.Integer(), Type.Null()]),
  /** Why it is `none` or `failed`, else null. */
  reason: Type.Union([Type.String(), Type.Null()]),
}, { additionalProperties: false });
export type ReleaseServiceDelta = Static<typeof ReleaseServiceDelta>;
