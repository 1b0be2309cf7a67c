/**
 * Scopes of distribution's token protocol (`docs/spec/auth/scope.md`):
 * `resourcetype[(resourceclass)]:resourcename:action[,action…]`, e.g.
 * `repository:3f2a…/web:pull,push`. A resource name may itself hold a colon (a registry host with a
 * port), so the type ends at the first colon and the actions start after the last one.
 */
import type { RegistryAction } from './contract.js';

/** One parsed scope: only `repository` resources are ever granted, other types are kept for the caller to leave out. */
export interface RegistryScope {
  type: string;
  name: string;
  /** As asked, deduplicated, in the order asked (may hold actions we never grant, such as `delete` or `*`). */
  actions: string[];
}

/** Distribution's repository name grammar (`reference/regexp.go`): lower-case path components joined by `/`. */
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const REPOSITORY_NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TYPE = /^[a-z0-9]+(?:\([a-z0-9]+\))?$/;
const ACTION = /^(?:[a-z]+|\*)$/;

/** Distribution refuses longer repository names (`NAME_INVALID`). */
const MAX_NAME = 255;

/** True for a name distribution accepts as a repository (`a/b`, lower case, at most 255 characters). */
export function isRepositoryName(name: string): boolean {
  return name.length <= MAX_NAME && REPOSITORY_NAME.test(name);
}

/**
 * Parses one scope string. Returns a string naming what is wrong for a malformed one (missing
 * parts, an upper-case or empty repository name, an empty action list), so the token endpoint can
 * answer 400 naming it.
 */
export function parseScope(scope: string): RegistryScope | string {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return `scope '${scope}' is not type:name:actions`;
  const type = scope.slice(0, first);
  const name = scope.slice(first + 1, last);
  const actionList = scope.slice(last + 1);
  if (!TYPE.test(type)) return `scope '${scope}' has a bad resource type '${type}'`;
  if (name === '') return `scope '${scope}' names no resource`;
  if (type === 'repository' && !isRepositoryName(name)) return `scope '${scope}': '${name}' is not a repository name (lower-case letters, digits, separators, at most ${MAX_NAME} characters)`;
  const actions = actionList.split(',').filter((a) => a !== '');
  if (actions.length === 0) return `scope '${scope}' asks for no action`;
  const bad = actions.find((a) => !ACTION.test(a));
  if (bad !== undefined) return `scope '${scope}' has a bad action '${bad}'`;
  return { type, name, actions: [...new Set(actions)] };
}

/**
 * Every scope of a token request: the `scope` parameter may be repeated, and one value may hold
 * several scopes separated by spaces (OAuth2's form, which some clients use in a GET too).
 */
export function parseScopes(values: readonly string[]): RegistryScope[] | string {
  const out: RegistryScope[] = [];
  for (const value of values) {
    for (const one of value.split(' ').filter((s) => s !== '')) {
      const parsed = parseScope(one);
      if (typeof parsed === 'string') return parsed;
      out.push(parsed);
    }
  }
  return out;
}

/** The repository actions of a scope we may grant (`pull`, `push`); others (`delete`, `*`) are never granted. */
export function grantableActions(scope: RegistryScope): RegistryAction[] {
  if (scope.type !== 'repository') return [];
  return scope.actions.filter((a): a is RegistryAction => a === 'pull' || a === 'push');
}

/**
 * Merges grants for the same repository (a client may ask `pull` and `push` in two scopes), keeping
 * the order repositories were first asked in and leaving out repositories with no action.
 */
export function mergeGrants(grants: ReadonlyArray<{ repository: string; actions: readonly RegistryAction[] }>): Array<{ repository: string; actions: RegistryAction[] }> {
  const merged = new Map<string, Set<RegistryAction>>();
  for (const g of grants) {
    const set = merged.get(g.repository) ?? new Set<RegistryAction>();
    for (const a of g.actions) set.add(a);
    merged.set(g.repository, set);
  }
  return [...merged].filter(([, set]) => set.size > 0).map(([repository, set]) => ({ repository, actions: (['pull', 'push'] as const).filter((a) => set.has(a)) }));
}
