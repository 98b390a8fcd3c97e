// What a plugin's optional `cli.ts` implements to add commands to proxyctl.
// It lives beside the plugin contract, not with the entry points: a plugin
// depends on this shape, proxyctl provides it. Commands reach the daemon
// through the same target as proxyctl's own (settings, --url, client
// certificate) and end as proxyctl's own do: a thrown CliExit prints its
// message and exits with its code; any other error exits 2 (failed).
import type { AxiosInstance } from 'axios';
import type { Command } from 'commander';

/** The daemon one proxyctl invocation talks to. */
export interface DaemonTarget {
  url: string;
  /** On the daemon's base URL; every status resolves (none throws). */
  http: AxiosInstance;
}

export interface PasswordOptions {
  /** Read one line of stdin even on a terminal (a terminal is otherwise asked without echo). */
  fromStdin: boolean;
  /** On a terminal, ask a second time and refuse a mismatch. */
  confirm: boolean;
}

export interface PluginCliContext {
  target(cmd: Command): DaemonTarget;
  /** Print `json` when --json was given, else `text` (a newline is added). */
  print(cmd: Command, json: unknown, text: string): void;
  /** Was --json given (before or after the command name)? */
  json(cmd: Command): boolean;
  /** A password typed without echo on a terminal, else one line of stdin; never empty (else a CliExit). */
  readPassword(prompt: string, options: PasswordOptions): Promise<string>;
}

/**
 * The default export of a plugin's cli file. Add commands with
 * `program.command(...)` so they inherit proxyctl's usage errors (exit 64).
 */
export type PluginCli = (program: Command, ctx: PluginCliContext) => void | Promise<void>;

/** What a plugin adds to `proxyctl status`: lines under its row, and `data` merged into its --json entry. */
export interface PluginStatusDetail {
  lines: string[];
  data?: Record<string, unknown>;
}

/** The optional `status` export of a plugin's cli file; undefined adds nothing, a failure is ignored. */
export type PluginStatusHook = (target: DaemonTarget) => Promise<PluginStatusDetail | undefined>;

/** Ends a command: proxyctl prints `proxyctl: <message>` on stderr and exits with `code`. */
export class CliExit extends Error {
  constructor(
    readonly code: number,
    message: string,
    /** The command already printed its JSON answer (e.g. a failed run's last state): no error object follows it on stdout. */
    readonly answered = false,
  ) {
    super(message);
    this.name = 'CliExit';
  }
}
