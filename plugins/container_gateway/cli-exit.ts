// How a container gateway proxyctl command ends: a thrown Exit prints
// `proxyctl: <message>` on stderr and sets the exit code; anything else is
// left to proxyctl (exit 2).
/** Ends a command with this exit code and message. */
export class Exit extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** A command action whose Exit becomes its message and exit code. */
export function action<A extends unknown[]>(work: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await work(...args);
    } catch (err) {
      if (!(err instanceof Exit)) throw err;
      process.stderr.write(`proxyctl: ${err.message}\n`);
      process.exitCode = err.code;
    }
  };
}
