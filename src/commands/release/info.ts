import { Args } from '@oclif/core';
import { CloudCommand, when } from '../../cli/cloud.js';
import type { Release } from '../../lib/api/resources.js';
import type { ReleaseServiceDelta } from '../../lib/api/deltas.js';

/** What the DELTA column says: `from 1a2b3c4: 1.2 MB vs 39 MB pull (32×)`, or the job's state. */
export function deltaText(delta: ReleaseServiceDelta | null | undefined, formatBytes: (n: number) => string): string {
  if (!delta) return '-';
  const from = `from ${delta.from.slice(0, 7)}`;
  if (delta.status === 'done' && delta.downloadBytes !== null && delta.pullBytes !== null) {
    const ratio = delta.pullBytes / Math.max(1, delta.downloadBytes);
    return `${from}: ${formatBytes(delta.downloadBytes)} vs ${formatBytes(delta.pullBytes)} pull (${ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(1)}×)`;
  }
  if (delta.status === 'queued' || delta.status === 'running') return `${from}: being made`;
  if (delta.status === 'none') return `${from}: none (${delta.reason ?? 'no delta helps'})`;
  return `${from}: failed (${delta.reason ?? 'unknown error'})`;
}

export default class ReleaseInfo extends CloudCommand<Release> {
  static override summary = 'Show a release: status, services and their images, tags, and each service\'s delta from the previous release.';
  static override examples = ['<%= config.bin %> release info 3f2a9c1', '<%= config.bin %> release info 3f2a9c1 --json'];
  static override args = { commit: Args.string({ description: 'Release commit (a unique prefix of 7+ characters is enough).', required: true }) };

  async run(): Promise<Release> {
    const { args } = await this.parse(ReleaseInfo);
    const r = await (await this.cloud()).release(args.commit);
    await this.fields([
      ['COMMIT', r.commit], ['FLEET', r.fleet], ['STATUS', `${r.status}${r.isInvalidated ? ' (invalidated)' : ''}`], ['FINAL', r.isFinal ? 'yes' : 'no (draft)'],
      ['SEMVER', r.semver], ['CREATED', when(r.createdAt)], ['NOTES', r.notes],
      ['GIT COMMIT', r.gitCommit], ['BUILD', r.build],
      ['TAGS', Object.entries(r.tags).map(([k, v]) => `${k}=${v}`).join(', ')],
    ]);
    const { formatBytes } = await import('../../ui/format.js');
    await this.table(['SERVICE', 'IMAGE', 'SIZE', 'DELTA'], r.services.map((s) => [s.name, s.image ?? '-', s.size === null ? '-' : formatBytes(s.size), deltaText(s.delta, formatBytes)]));
    return r;
  }
}
