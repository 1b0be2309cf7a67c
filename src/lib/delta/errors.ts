/**
 * The delta apply's one error type (re-exported by apply-image.ts, the module's interface); in its
 * own module so the decoder and the patcher can throw it without importing the apply.
 */

/** Why an apply failed; every kind means "fall back to a pull", the kind says what to tell the user. */
export type DeltaFailure =
  /** The engine lacks the source image, or its layers are not the ones the delta names. */
  | 'source'
  /** A download failed or was cut. */
  | 'download'
  /** A delta file or layer does not check out (sha256, VCDIFF checksum, Brotli stream). */
  | 'corrupt'
  /** No space left for the temporary files. */
  | 'disk'
  /** The engine refused the load, or the loaded image is not the release's. */
  | 'engine';

/** An apply that did not produce the image; `message` is one line for the device's log and report. */
export class DeltaApplyError extends Error {
  constructor(readonly failure: DeltaFailure, message: string, options?: { cause?: unknown }) {
    // one line for the device's log and report, whatever the engine or a library put in it
    super(message.replace(/\s*[\r\n]+\s*/g, ' ').trim(), options);
    this.name = 'DeltaApplyError';
  }
}
