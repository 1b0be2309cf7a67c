/**
 * Variable substitution over a parsed compose document, before anything validates it: every string
 * value (not keys, as compose) goes through {@link interpolate}; a value that held a variable and
 * sits where compose expects a boolean or a number becomes one, so `privileged: ${PRIV:-true}`
 * validates like `privileged: true`.
 */
// eslint-disable-next-line no-restricted-imports -- loaded with compose.ts, itself loaded lazily
import { isAlias, isMap, isScalar, isSeq } from 'yaml';
import type { Document, Scalar } from 'yaml';
import { describeProblem, hasExpression, interpolate, type Lookup } from './interpolate.js';

type Path = ReadonlyArray<string | number>;

/** How substitution reports, by path in the document (compose.ts's Locator turns it into `file:line`). */
export interface SubstitutionReporter {
  error(path: Path, message: string, hint?: string): Error;
  warn(path: Path, message: string): void;
}

type Cast = 'boolean' | 'integer' | 'number';

// Where compose-go casts interpolated text (its loader's type-cast table), for the keys devices
// honour. `*` is any key, `[]` any list index. Only values that held a variable are cast: a
// literal string stays a string, so the validators keep refusing `privileged: "yes"`.
const CASTS: ReadonlyArray<[string[], Cast]> = [
  ...['cpu_shares', 'cpu_quota', 'pids_limit', 'oom_score_adj'].map((k): [string[], Cast] => [['services', '*', k], 'integer']),
  ...['init', 'oom_kill_disable', 'privileged', 'read_only', 'stdin_open', 'tty'].map((k): [string[], Cast] => [['services', '*', k], 'boolean']),
  [['services', '*', 'cpus'], 'number'],
  [['services', '*', 'healthcheck', 'retries'], 'integer'],
  [['services', '*', 'healthcheck', 'disable'], 'boolean'],
  [['services', '*', 'ports', '[]', 'target'], 'integer'],
  [['services', '*', 'ulimits', '*'], 'integer'],
  [['services', '*', 'ulimits', '*', 'soft'], 'integer'],
  [['services', '*', 'ulimits', '*', 'hard'], 'integer'],
  [['services', '*', 'depends_on', '*', 'required'], 'boolean'],
  [['services', '*', 'depends_on', '*', 'restart'], 'boolean'],
  [['services', '*', 'volumes', '[]', 'read_only'], 'boolean'],
  [['services', '*', 'volumes', '[]', 'volume', 'nocopy'], 'boolean'],
  ...['external', 'internal', 'attachable', 'enable_ipv4', 'enable_ipv6'].map((k): [string[], Cast] => [['networks', '*', k], 'boolean']),
  [['volumes', '*', 'external'], 'boolean'],
];

/**
 * Substitutes variables in every string value of `doc`, in place.
 *
 * @param env - the variables: process environment over the project's `.env`
 * @throws what `report.error` returns, for a required variable that is unset, bad `${…}` syntax,
 *   or a variable in a key (compose leaves keys as written, so the text could never be resolved)
 */
export function substituteDocument(doc: Document, env: Lookup, report: SubstitutionReporter): void {
  const warned = new Set<string>();
  const walk = (node: unknown, path: Path, inExtension: boolean): void => {
    if (isAlias(node)) return; // substituted where its anchor is written
    if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, [...path, i], inExtension));
      return;
    }
    if (isMap(node)) {
      for (const pair of node.items) {
        const key: unknown = isScalar(pair.key) ? pair.key.value : pair.key;
        if (typeof key === 'symbol' || key === '<<') {
          walk(pair.value, path, inExtension); // a merged-in mapping written in place
          continue;
        }
        const name = String(key);
        const extension = inExtension || name.startsWith('x-');
        if (!extension && typeof key === 'string' && hasExpression(key)) {
          throw report.error([...path, name], `'${name}' is a key, and compose substitutes variables in values only`, 'write the key itself; only values can use ${VAR}');
        }
        walk(pair.value, [...path, name], extension);
      }
      return;
    }
    if (isScalar(node) && typeof node.value === 'string') substituteScalar(node as Scalar<unknown>, path);
  };

  const substituteScalar = (node: Scalar<unknown>, path: Path): void => {
    const text = node.value as string;
    if (!text.includes('$')) return;
    const result = interpolate(text, env);
    if (!result.ok) {
      const { problem } = result;
      throw problem.kind === 'required'
        ? report.error(path, describeProblem(problem), `set ${problem.variable} in the environment or in the project's .env file`)
        : report.error(path, describeProblem(problem, text), 'write a literal $ as $$');
    }
    for (const name of result.unset) {
      if (warned.has(name)) continue;
      warned.add(name);
      report.warn(path, `variable ${name} is not set; using an empty string`);
    }
    const cast = hasExpression(text) ? castFor(path) : undefined;
    node.value = cast ? castValue(result.value, cast) : result.value;
  };

  walk(doc.contents, [], false);
}

function castFor(path: Path): Cast | undefined {
  const found = CASTS.find(([pattern]) => pattern.length === path.length
    && pattern.every((seg, i) => (seg === '*' ? typeof path[i] === 'string' : seg === '[]' ? typeof path[i] === 'number' : seg === path[i])));
  return found?.[1];
}

/** The typed value, or the text itself when it does not read as one (the validator then names the key). */
function castValue(text: string, cast: Cast): unknown {
  const t = text.trim();
  if (cast === 'boolean') return /^true$/i.test(t) ? true : /^false$/i.test(t) ? false : text;
  if (cast === 'integer') return /^[+-]?\d+$/.test(t) ? Number(t) : text;
  return t !== '' && Number.isFinite(Number(t)) ? Number(t) : text;
}
