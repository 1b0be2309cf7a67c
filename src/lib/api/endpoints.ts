/**
 * The cloud API's routes, one table shared by the server (which registers these patterns) and the
 * CLI's and agent's clients (which fill them in). Request and answer bodies are in
 * `resources.ts` (users, fleets, devices, releases, variables, tags) and `device-state.ts`
 * (registration, target state, reports, registry tokens), `builds.ts`, `logs.ts`, `events.ts`, `tunnel.ts` and `deltas.ts`.
 *
 * Auth: `Authorization: Bearer <session token | API key>` for users; `Bearer <device key>` for a
 * device; `Bearer <provisioning key>` only for `register`.
 */
export const ENDPOINTS = {
  // users
  login: { method: 'POST', path: '/auth/login' }, // LoginRequest → LoginResponse
  logout: { method: 'POST', path: '/auth/logout' }, // ends the session the token is (204)
  whoami: { method: 'GET', path: '/whoami' }, // → WhoAmI
  users: { method: 'GET', path: '/users' }, // admin → User[]
  createUser: { method: 'POST', path: '/users' }, // admin: CreateUserRequest → User
  removeUser: { method: 'DELETE', path: '/users/:email' }, // admin (204)
  apiKeys: { method: 'GET', path: '/api-keys' }, // → ApiKey[]
  createApiKey: { method: 'POST', path: '/api-keys' }, // CreateApiKeyRequest → CreatedApiKey
  revokeApiKey: { method: 'DELETE', path: '/api-keys/:id' }, // (204)
  // fleets
  fleets: { method: 'GET', path: '/fleets' }, // → Fleet[]
  createFleet: { method: 'POST', path: '/fleets' }, // CreateFleetRequest → Fleet (201)
  fleet: { method: 'GET', path: '/fleets/:fleet' }, // → Fleet
  updateFleet: { method: 'PATCH', path: '/fleets/:fleet' }, // UpdateFleetRequest → Fleet
  removeFleet: { method: 'DELETE', path: '/fleets/:fleet' }, // (204) with its devices, releases, keys
  provisioningKeys: { method: 'GET', path: '/fleets/:fleet/provisioning-keys' }, // → ProvisioningKey[]
  createProvisioningKey: { method: 'POST', path: '/fleets/:fleet/provisioning-keys' }, // → CreatedProvisioningKey
  revokeProvisioningKey: { method: 'DELETE', path: '/fleets/:fleet/provisioning-keys/:id' }, // (204)
  fleetConfig: { method: 'POST', path: '/fleets/:fleet/config' }, // FleetConfigRequest → FleetConfig (config.json)
  releases: { method: 'GET', path: '/fleets/:fleet/releases' }, // → Release[] (newest first)
  createRelease: { method: 'POST', path: '/fleets/:fleet/releases' }, // CreateReleaseRequest → CreatedRelease (201)
  // devices
  devices: { method: 'GET', path: '/devices' }, // ?fleet=NAME → Device[]
  device: { method: 'GET', path: '/devices/:uuid' }, // → Device (a unique prefix of 7+ characters is enough)
  updateDevice: { method: 'PATCH', path: '/devices/:uuid' }, // UpdateDeviceRequest → Device
  removeDevice: { method: 'DELETE', path: '/devices/:uuid' }, // (204); its key stops working at once
  // releases
  release: { method: 'GET', path: '/releases/:commit' }, // → Release (a unique prefix of 7+ characters is enough)
  updateRelease: { method: 'PATCH', path: '/releases/:commit' }, // UpdateReleaseRequest → Release
  // variables and tags
  variables: { method: 'GET', path: '/variables' }, // ?fleet=|device=[&service=] → Variable[]
  setVariable: { method: 'PUT', path: '/variables' }, // SetVariableRequest → Variable
  removeVariable: { method: 'DELETE', path: '/variables' }, // ?fleet=|device=[&service=]&name= (204)
  tags: { method: 'GET', path: '/tags' }, // ?fleet=|device=|release= → Tag[]
  setTag: { method: 'PUT', path: '/tags' }, // SetTagRequest → Tag
  removeTag: { method: 'DELETE', path: '/tags' }, // ?fleet=|device=|release=&key= (204)
  // cloud builds (builds.ts)
  createBuild: { method: 'POST', path: '/fleets/:fleet/builds' }, // ?CreateBuildQuery, tar body → Build (201)
  builds: { method: 'GET', path: '/fleets/:fleet/builds' }, // → Build[] (newest first)
  build: { method: 'GET', path: '/builds/:id' }, // → Build
  buildEvents: { method: 'GET', path: '/builds/:id/events' }, // ?BuildEventsQuery → text/event-stream of BuildEventEnvelope
  cancelBuild: { method: 'DELETE', path: '/builds/:id' }, // → Build (cancelled, or already finished: 409)
  // a fleet's git repository (smart HTTP, `git http-backend`; HTTP basic auth, password = API key or session token)
  git: { method: 'ALL', path: '/git/*' }, // GET and POST of /git/<fleet name>.git/… (smart HTTP only; other methods 404)
  // device logs and actions (logs.ts, events.ts)
  deviceLogs: { method: 'GET', path: '/devices/:uuid/logs' }, // ?DeviceLogsQuery → DeviceLogLine[] | text/event-stream
  deviceAction: { method: 'POST', path: '/devices/:uuid/actions' }, // DeviceActionRequest → DeviceActionResult
  // tunnels (tunnel.ts): WebSocket sessions to a device through the server, and its public URL
  deviceTunnel: { method: 'GET', path: '/devices/:uuid/tunnel' }, // ?TunnelQuery, WebSocket upgrade: raw TCP bytes
  deviceExec: { method: 'GET', path: '/devices/:uuid/exec' }, // ?ExecQuery, WebSocket upgrade: ExecFrames
  deviceSessions: { method: 'GET', path: '/devices/:uuid/sessions' }, // ?DeviceSessionsQuery → DeviceSession[] (newest first)
  devicePublicUrl: { method: 'GET', path: '/devices/:uuid/public-url' }, // → DevicePublicUrl
  setDevicePublicUrl: { method: 'PUT', path: '/devices/:uuid/public-url' }, // SetDevicePublicUrl → DevicePublicUrl
  fleetPublicUrl: { method: 'GET', path: '/fleets/:fleet/public-url' }, // → FleetPublicUrl
  setFleetPublicUrl: { method: 'PUT', path: '/fleets/:fleet/public-url' }, // SetFleetPublicUrl → FleetPublicUrl
  publicUrl: { method: 'ALL', path: '/d/*' }, // /d/<uuid>/… proxied to port 80 of a device that enabled it (HTTP and WebSocket)
  // devices themselves (balena's paths)
  register: { method: 'POST', path: '/device/register' }, // RegisterRequest → RegisterResponse (201)
  targetState: { method: 'GET', path: '/device/v3/:uuid/state' }, // → TargetStateV3 (ETag; 304 on If-None-Match)
  report: { method: 'PATCH', path: '/device/v3/state' }, // StateReportV3 (200)
  delta: { method: 'GET', path: '/api/v3/delta' }, // device: ?DeltaQuery → DeltaAnswer, or 504 DeltaPending (Retry-After) while it is made
  deltaLayer: { method: 'GET', path: '/api/v3/delta/:id/layers/:index' }, // device: a `delta` layer's file (Range honoured)
  registryToken: { method: 'GET', path: '/auth/v1/token' }, // ?service=&scope= → RegistryTokenResponse
  logBatch: { method: 'POST', path: '/device/v2/:uuid/logs' }, // DeviceLogBatch (204)
  deviceEvents: { method: 'GET', path: '/device/v3/:uuid/events' }, // WebSocket upgrade: ServerToDevice / DeviceToServer
  // the registry, through the server's own port
  registry: { method: 'ALL', path: '/v2/*' },
  openapi: { method: 'GET', path: '/openapi.json' },
  ping: { method: 'GET', path: '/ping' }, // "OK": the server and its database answer
} as const;

export type EndpointName = keyof typeof ENDPOINTS;

/** Fills a route's `:params` (each URI-encoded), e.g. `endpointPath('fleet', { fleet: 'a b' })` → `/fleets/a%20b`. */
export function endpointPath(name: EndpointName, params: Record<string, string | number> = {}): string {
  return ENDPOINTS[name].path.replace(/:([a-z]+)/g, (_, key: string) => {
    const value = params[key];
    if (value === undefined) throw new Error(`endpoint ${name} needs :${key}`);
    return encodeURIComponent(String(value));
  });
}
