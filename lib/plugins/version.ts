// Version requirements for `requires`: smart-proxy's Ruby forms ("~> 1.2",
// ">= 1.0, < 2") and npm's caret/tilde ("^1.2.0", "~1.2"). Pre-release
// suffixes (-develop, -RC1) are dropped before comparing, as smart-proxy does.

type Triple = [number, number, number];

export function parseVersion(v: string): Triple | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-+].*)?$/.exec(v.trim());
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

function compare(a: Triple, b: Triple): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

function segments(v: string): number {
  return v.replace(/[-+].*$/, '').split('.').length;
}

function satisfiesOne(version: Triple, clause: string): boolean {
  const m = /^(~>|\^|~|>=|<=|!=|>|<|==|=)?\s*(\S+)$/.exec(clause.trim());
  if (!m) throw new Error(`invalid version requirement '${clause}'`);
  const op = m[1] ?? '=';
  const target = parseVersion(m[2]!);
  if (!target) throw new Error(`invalid version requirement '${clause}'`);
  const c = compare(version, target);
  switch (op) {
    case '>=': return c >= 0;
    case '<=': return c <= 0;
    case '>': return c > 0;
    case '<': return c < 0;
    case '=': case '==': return c === 0;
    case '!=': return c !== 0;
    case '^': {
      // npm: the first non-zero part written is fixed; parts not written are free.
      const n = segments(m[2]!);
      const upper: Triple =
        target[0] > 0 || n === 1 ? [target[0] + 1, 0, 0] : target[1] > 0 || n === 2 ? [0, target[1] + 1, 0] : [0, 0, target[2] + 1];
      return c >= 0 && compare(version, upper) < 0;
    }
    case '~': {
      // npm: '~1' is 1.x, '~1.2' and '~1.2.3' are 1.2.x.
      const upper: Triple = segments(m[2]!) === 1 ? [target[0] + 1, 0, 0] : [target[0], target[1] + 1, 0];
      return c >= 0 && compare(version, upper) < 0;
    }
    default: {
      // Ruby '~> 1.2' allows >= 1.2, < 2.0; '~> 1.2.3' allows >= 1.2.3, < 1.3.0.
      const upper: Triple = segments(m[2]!) >= 3 ? [target[0], target[1] + 1, 0] : [target[0] + 1, 0, 0];
      return c >= 0 && compare(version, upper) < 0;
    }
  }
}

/** Does `version` meet every comma-separated clause of `requirement`? */
export function satisfies(version: string, requirement: string): boolean {
  const parsed = parseVersion(version);
  if (!parsed) throw new Error(`invalid version '${version}'`);
  return requirement.split(',').every((clause) => satisfiesOne(parsed, clause));
}
