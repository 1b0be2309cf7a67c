/**
 * Device actions sent by the server through the event channel, run with the agent's own
 * executors (the same ones the LAN device API's v1/restart, v1/purge and v2 service actions use),
 * one typed executor per action name. Each answers `{ok, message}` for the person who asked;
 * a refusal (an update lock, no such service, no reboot command) is `ok: false` with the reason.
 */
import { spawn } from 'node:child_process';
import type { DeviceActionName, DeviceActionResult, ServerToDevice } from '../../api/events.js';
import type { Agent } from '../agent.js';

type ActionMessage = Extract<ServerToDevice, { type: 'action' }>;

/** How the device's host is rebooted or powered off: shell commands the operator chose (none: refused). */
export interface HostCommands {
  /** e.g. `systemctl reboot`; `--reboot-command` / SKIFF_AGENT_REBOOT_COMMAND. */
  reboot?: string;
  /** e.g. `systemctl poweroff`; `--shutdown-command` / SKIFF_AGENT_SHUTDOWN_COMMAND. */
  shutdown?: string;
}

export interface ActionHost {
  agent: Agent;
  commands: HostCommands;
  /** The device's uuid and name, for identify's log line. */
  uuid: string;
}

/** A host command that has not ended after this long is taken as working (a reboot takes the agent down with it). */
const HOST_COMMAND_WAIT_MS = 10_000;

type Executor = (host: ActionHost, action: ActionMessage) => Promise<DeviceActionResult>;

/** The apps the agent runs now, by id. */
function appIds(agent: Agent): number[] {
  return Object.keys(agent.targetState.local.apps ?? {}).map(Number).filter((n) => Number.isInteger(n));
}

/** Apps holding an update lock (a service wrote updates.lock): reboot and shutdown wait for them unless forced. */
async function lockedApps(agent: Agent): Promise<number[]> {
  return (await agent.freshState()).locked;
}

/**
 * Runs `command` with /bin/sh; ok when it exits 0, or is still running after
 * {@link HOST_COMMAND_WAIT_MS} (the host is going down).
 */
function runHostCommand(command: string, what: string): Promise<DeviceActionResult> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 1000) stderr += d.toString();
    });
    const timer = setTimeout(() => resolve({ ok: true, message: `${what}: the command is running` }), HOST_COMMAND_WAIT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, message: `${what} failed: ${err.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const reason = stderr.trim().split('\n')[0] ?? '';
      if (code === 0) resolve({ ok: true, message: `${what}: done` });
      else resolve({ ok: false, message: `${what} failed (${signal ?? `exit ${code ?? '?'}`})${reason ? `: ${reason}` : ''}` });
    });
  });
}

function hostAction(kind: 'reboot' | 'shutdown'): Executor {
  return async (host, action) => {
    const command = host.commands[kind];
    if (!command) return { ok: false, message: `this agent has no ${kind} command: start it with --${kind}-command (e.g. '${kind === 'reboot' ? 'systemctl reboot' : 'systemctl poweroff'}')` };
    if (!action.force) {
      const locked = await lockedApps(host.agent);
      if (locked.length > 0) return { ok: false, message: `a service holds an update lock (app ${locked.join(', ')}); use --force to ${kind} anyway` };
    }
    host.agent.logs.system(`${kind === 'reboot' ? 'Rebooting' : 'Shutting down'} (asked through the cloud)`);
    return runHostCommand(command, kind === 'reboot' ? 'Reboot' : 'Shutdown');
  };
}

const EXECUTORS = {
  restart: async ({ agent }, action) => {
    const apps = appIds(agent);
    if (apps.length === 0) return { ok: false, message: 'the device runs no release' };
    if (action.service !== undefined) {
      for (const appId of apps) if (await agent.serviceAction(appId, action.service, 'restart-service')) return { ok: true, message: `restarted service '${action.service}'` };
      return { ok: false, message: `the device's release has no service '${action.service}'` };
    }
    for (const appId of apps) await agent.restartApp(appId);
    return { ok: true, message: 'restarted every service' };
  },
  purge: async ({ agent }, action) => {
    // Volumes belong to the app, not to one service: a purge is all of them.
    if (action.service !== undefined) return { ok: false, message: "purge deletes the app's volumes, which all its services share: leave out --service" };
    const apps = appIds(agent);
    if (apps.length === 0) return { ok: false, message: 'the device runs no release' };
    for (const appId of apps) await agent.purgeApp(appId);
    return { ok: true, message: 'purged the data of every service; they start again with empty volumes' };
  },
  reboot: hostAction('reboot'),
  shutdown: hostAction('shutdown'),
  identify: async ({ agent, uuid }) => {
    agent.logs.system(`Identify: this is device ${uuid.slice(0, 7)} (${agent.ctx.deviceName})`);
    return { ok: true, message: 'the device wrote an identify line to its log (it has no LED to blink)' };
  },
} satisfies { [K in DeviceActionName]: Executor };

/** Runs one action; an executor that throws is `ok: false` with the reason. */
export async function runAction(host: ActionHost, action: ActionMessage): Promise<DeviceActionResult> {
  const executor: Executor | undefined = (EXECUTORS as Record<string, Executor>)[action.action];
  if (!executor) return { ok: false, message: `this agent does not know the action '${action.action}'` };
  try {
    return await executor(host, action);
  } catch (err) {
    return { ok: false, message: `${action.action} failed: ${(err as Error).message}` };
  }
}
