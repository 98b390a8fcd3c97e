/** A settings problem, always naming the file and, when known, the key. */
export class SettingsError extends Error {
  readonly file: string;
  readonly key: string | undefined;
  readonly code: string | undefined;

  constructor(file: string, key: string | undefined, problem: string, code?: string) {
    super(key === undefined ? `${file}: ${problem}` : `${file}: setting '${key}' ${problem}`);
    this.name = 'SettingsError';
    this.file = file;
    this.key = key;
    this.code = code;
  }
}
