/**
 * The device API where balena's supervisor (docs/API.md) allows more than one form: service actions
 * by imageId as well as serviceName, /v1/healthy's "OK". Each malformed body is a 4xx naming the field.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cleanupAgent, eventually, startAgent, status, type TestAgent } from '../support/agent.js';
import { BASE_AMD64, ensureBaseImages } from '../support/engine.js';

const RUN = randomBytes(3).toString('hex');

describe('device API: balena supervisor forms', function () {
  let agent: TestAgent;
  const post = (path: string, body: unknown) => fetch(`${agent.url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const running = async (): Promise<boolean> => (await status(agent.url)).containers.some((c) => c.serviceName === 'web' && c.status === 'Running');

  before(async () => {
    await ensureBaseImages();
    agent = await startAgent();
    const web = { serviceName: 'web', serviceId: 1, imageId: 7, image: BASE_AMD64, command: ['sh', '-c', "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"] };
    const res = await post('/v2/local/target-state', { local: { name: `compat-${RUN}`, config: {}, apps: { 1: { name: `compat${RUN}`, commit: `c${RUN}`, releaseId: `c${RUN}`, services: { 1: web } } } } });
    assert.equal(res.status, 200, await res.text());
    await eventually(async () => (await status(agent.url)).appState === 'applied' && running(), 60_000, 'the release to run');
  });

  after(async () => {
    await agent?.kill();
    if (agent) await cleanupAgent(agent.uuid);
  });

  it('stops and starts a service named by its imageId', async () => {
    const stop = await post('/v2/applications/1/stop-service', { imageId: 7 });
    assert.equal(stop.status, 200, await stop.text());
    await eventually(async () => !(await running()), 30_000, 'web to stop');
    const start = await post('/v2/applications/1/start-service', { imageId: 7 });
    assert.equal(start.status, 200, await start.text());
    await eventually(running, 30_000, 'web to run again');
  });

  it('answers each malformed body with a 4xx naming the field', async () => {
    const cases: Array<[unknown, number, RegExp]> = [
      [{}, 400, /serviceName or imageId is required/],
      [{ serviceName: 5 }, 400, /serviceName must be a service name/],
      [{ imageId: 'seven' }, 400, /imageId must be a whole number/],
      [{ imageId: 99 }, 404, /no service with imageId 99/],
      [{ serviceName: 'nope' }, 404, /service 'nope' not found/],
    ];
    for (const [body, code, message] of cases) {
      const res = await post('/v2/applications/1/restart-service', body);
      assert.equal(res.status, code, JSON.stringify(body));
      assert.match(((await res.json()) as { message: string }).message, message);
    }
  });

  it('/v1/healthy answers "OK", as the supervisor does', async () => {
    const res = await fetch(`${agent.url}/v1/healthy`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'OK');
  });
});
