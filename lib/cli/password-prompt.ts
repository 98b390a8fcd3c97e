// Passwords for proxyctl commands: typed without echo on a terminal (raw
// mode, so the characters never reach the screen; arrow keys and other escape
// sequences are dropped, not taken as part of the password), else one line of
// stdin, so scripts can pipe it in.
import { CliExit, type PasswordOptions } from '../plugins/cli.ts';

/** One line of a stream (without its line end); the whole stream if it has no newline. */
function readLine(stream: NodeJS.ReadStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const cleanup = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.pause();
    };
    const onData = (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        cleanup();
        resolve(buf.slice(0, nl).replace(/\r$/, ''));
      }
    };
    const onEnd = () => {
      cleanup();
      resolve(buf.replace(/\r$/, ''));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new CliExit(64, `cannot read the password from stdin: ${err.message}`));
    };
    stream.setEncoding('utf8');
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.resume();
  });
}

/** Read a line from the terminal without echoing it. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let value = '';
    /** Inside an escape sequence (arrow keys...): ESC, then '[' and parameters up to a final byte. */
    let escape: '' | 'esc' | 'csi' = '';
    const finish = (err?: CliExit) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (escape === 'esc') {
          escape = ch === '[' || ch === 'O' ? 'csi' : '';
          continue;
        }
        if (escape === 'csi') {
          if (ch >= '@' && ch <= '~') escape = '';
          continue;
        }
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003') return finish(new CliExit(130, 'interrupted'));
        if (ch === '\u0004') return value === '' ? finish(new CliExit(64, 'no password given')) : finish();
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch === '\u0015') value = '';
        else if (ch === '\u001b') escape = 'esc';
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.setEncoding('utf8');
    stdin.setRawMode(true);
    stdin.on('data', onData);
    stdin.resume();
  });
}

export async function readPassword(prompt: string, options: PasswordOptions): Promise<string> {
  let password: string;
  if (options.fromStdin || !process.stdin.isTTY) {
    password = await readLine(process.stdin);
  } else {
    password = await promptHidden(prompt);
    if (options.confirm && password !== '' && (await promptHidden('Retype the password: ')) !== password) throw new CliExit(64, 'the passwords do not match');
  }
  if (password === '') throw new CliExit(64, 'the password must not be empty');
  return password;
}
