// Live updates: from saving a source file to the new content answering over HTTP, with a push
// streaming logs and watching the project. skiff push against balena push (livepush), both to
// the same skiff agent. See bench/README.md.
//
//   node bench/live.mjs [--runs N]
//
// The agent must listen on 127.0.0.1:48484 with the engine API on 2375, because balena-cli's
// local push cannot be told other ports; the script refuses to start if either is taken.

import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, SKIFF_BIN, ensureSkiffBuilt, ensureBalena, balenaEnv, log, median, parseBenchArgs, printComparison, fmtSec } from './lib.mjs';
import {
  startAgent, ensureBaseImage, copyExampleProject, requireBalenaPorts, BALENA_API_PORT, BALENA_ENGINE_PORT, cleanupAgentObjects, withCleanup, sleep, waitFor,
} from './agent-lib.mjs';

// --runs N: saves per CLI (default 7).
const { runs: RUNS } = parseBenchArgs({ runs: { default: 7, help: 'measured saves per CLI, after one warm-up save' } });
const API_PORT = BALENA_API_PORT;
const ENGINE_PORT = BALENA_ENGINE_PORT;

/** A push that keeps running (logs + live updates); its output is kept for diagnosis. */
function startPush(cmd, args, env) {
  const child = spawn(cmd, args, { cwd: REPO_ROOT, env: { NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const done = new Promise((resolve) => child.on('close', resolve));
  return {
    output: () => output,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGINT');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(t);
    },
    exited: () => child.exitCode !== null,
  };
}

await withCleanup(async (onCleanup) => {
  ensureSkiffBuilt();
  const balena = ensureBalena();
  ensureBaseImage();
  await requireBalenaPorts();
  const project = await copyExampleProject();
  const { hostPort } = project;
  onCleanup(() => project.remove());
  // The web service's page is written by its start script, so new content answers only once the
  // new code runs (the service restarted), not merely when the file lands in the container.
  writeFileSync(join(project.dir, 'web', 'Dockerfile'), 'FROM busybox:1.36\nCOPY server.sh /server.sh\nEXPOSE 80\nCMD ["sh", "/server.sh"]\n');
  const page = join(project.dir, 'web', 'server.sh');
  const script = (marker) => `mkdir -p /www && echo "${marker}" > /www/index.html\nexec httpd -f -p 80 -h /www\n`;
  const original = 'version 0';
  writeFileSync(page, script(original));
  const url = `http://127.0.0.1:${hostPort}/`;
  // A request sent while the service is starting can sit in a lost TCP SYN for the 1 s retransmit
  // timeout (docker-proxy accepts, the container is not listening yet); give up on it after
  // 200 ms and ask again, as a browser's reload would, so the figure is the service's, not the poll's.
  const body = () => fetch(url, { signal: AbortSignal.timeout(200) }).then((r) => r.text()).catch(() => '');

  const agent = await startAgent({ port: API_PORT, enginePort: ENGINE_PORT });
  onCleanup(() => rmSync(agent.dataDir, { recursive: true, force: true }));
  onCleanup(() => cleanupAgentObjects(agent.uuid));
  onCleanup(() => agent.kill());
  log(`agent ${agent.uuid.slice(0, 7)} on 127.0.0.1:${API_PORT}, engine on ${ENGINE_PORT}; web on ${url}`);

  const tools = {
    skiff: () => startPush(process.execPath, [SKIFF_BIN, 'push', `127.0.0.1:${API_PORT}`, '--source', project.dir, '--dockerPort', String(ENGINE_PORT)], process.env),
    balena: () => startPush(balena, ['push', '127.0.0.1', '--source', project.dir], { ...balenaEnv(balena), BALENARC_NO_ANALYTICS: '1' }),
  };
  const results = {};
  const notes = {};
  let edit = 0;
  for (const [tool, start] of Object.entries(tools)) {
    results[tool] = [];
    writeFileSync(page, script(original));
    const push = start();
    onCleanup(() => push.stop());
    try {
      // Watching: the page answers with the pushed content, and the push has settled for a moment.
      await waitFor(async () => !push.exited() && (await body()).trim() === original, { timeoutMs: 180_000, intervalMs: 250, what: `${tool} push to run the release` });
      if (tool === 'skiff') await waitFor(async () => /\[Live\] Watching/.test(push.output()), { what: 'skiff to watch' });
      await sleep(3000);
      for (let i = 0; i <= RUNS; i++) {
        const marker = `live edit ${++edit} ${Date.now()}`;
        const t0 = process.hrtime.bigint();
        writeFileSync(page, script(marker));
        await waitFor(async () => (await body()).includes(marker), { timeoutMs: 60_000, intervalMs: 20, what: `${tool}: the edit to be served` });
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        log(`${tool} ${i === 0 ? 'warm-up' : `run ${i}/${RUNS}`}: ${(ms / 1000).toFixed(3)} s`);
        if (i > 0) results[tool].push(ms);
        await sleep(1500);
      }
    } catch (err) {
      notes[tool] = `${err.message.split('\n')[0]}; its output ended with:\n${push.output().slice(-1500)}`;
      log(`${tool}: ${notes[tool]}`);
    } finally {
      await push.stop();
    }
  }

  const med = (tool) => (results[tool].length === RUNS ? median(results[tool]) / 1000 : null);
  console.log(`\nLive update of examples/multi-service, its web service changed to serve a page its start script writes: an edit to web/server.sh is synced into the running container and the service restarts. Medians of ${RUNS} saves per CLI after one warm-up save.`);
  console.log('Measured from writing the file to the new code answering on the published port (polled every 20 ms, each request given up after 200 ms).');
  printComparison('', 'balena-cli 22.5.5', [{ measure: 'save → new code answering', skiff: med('skiff'), peer: med('balena'), fmt: fmtSec }]);
  for (const [tool, note] of Object.entries(notes)) console.log(`\n${tool}: not measured: ${note}`);
  const ours = med('skiff');
  console.log(`\ntarget (under 2 s): ${ours !== null && ours < 2 ? 'met' : 'NOT met'} (${ours === null ? 'n/a' : `${ours.toFixed(3)} s`})`);
});
