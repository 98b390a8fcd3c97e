// Plugins may ship TypeScript. The compiled daemon loads tsx only when one
// does, so a daemon of compiled plugins never pays for the loader thread.
const MARK = Symbol.for('proxyd.typescript');

export async function ensureTypeScript(): Promise<void> {
  const g = globalThis as { [MARK]?: boolean };
  if (g[MARK]) return;
  const { register } = await import('tsx/esm/api');
  register();
  g[MARK] = true;
}
