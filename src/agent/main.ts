/**
 * The agent's direct start: `skiff agent` with only its own flags runs without loading oclif
 * (about 6 MB less resident memory on the device, for as long as the agent runs). bin/run.js calls
 * this first; when it returns false (help, --json, --debug, engine flags, a bad value) the run
 * goes through oclif as every other command does, with the same flags and messages.
 */
import { exitCodeOf, renderError } from '../cli/report.js';
import { createOutput } from '../ui/output.js';
import { terminalInfo } from '../ui/terminal.js';
import { parseAgentArgv } from '../lib/agent/options.js';
import { serveAgent } from './serve.js';

export async function startAgentDirectly(argv: string[]): Promise<boolean> {
  if (process.env.SKIFF_DEBUG && process.env.SKIFF_DEBUG !== '0') return false;
  const flags = parseAgentArgv(argv);
  if (!flags) return false;
  const out = await createOutput(false, terminalInfo());
  try {
    await serveAgent(flags, {}, out);
  } catch (err) {
    process.stderr.write(`${renderError(err as Error, out.chalk, { debug: false, commandId: 'agent' })}\n`);
    process.exitCode = exitCodeOf(err);
  }
  return true;
}
