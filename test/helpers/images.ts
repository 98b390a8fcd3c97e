// Container images for tests, with no network: OCI layouts built by umoci,
// moved by skopeo, pulled/pushed by podman with private storage. Every command
// runs with a timeout (120 s by default) and failures carry the tool's stderr.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes as cryptoRandomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, resolve } from 'node:path';

export const COMMAND_TIMEOUT_MS = 120_000;

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface CommandOptions {
  cwd?: string;
  /** Extra environment variables (added to process.env). */
  env?: Record<string, string>;
  /** Kill (SIGKILL) after this many ms; default 120 000. */
  timeoutMs?: number;
  /** Written to the command's stdin (stdin is closed either way). */
  input?: string | Buffer;
}

/** Run a command to completion. Never rejects for a non-zero exit (see `runChecked`). */
export function runCommand(cmd: string, args: string[], opts: CommandOptions = {}): Promise<CommandResult> {
  return new Promise((res, rej) => {
    const proc = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, timeoutMs);
    proc.on('error', (e) => {
      clearTimeout(timer);
      rej(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) stderr += `\n[killed after ${timeoutMs} ms]`;
      res({ code, signal, stdout, stderr, timedOut });
    });
    proc.stdin!.on('error', () => {});
    proc.stdin!.end(opts.input);
  });
}

/** Run a command; throw with its stderr unless it exits 0. */
export async function runChecked(cmd: string, args: string[], opts: CommandOptions = {}): Promise<CommandResult> {
  const r = await runCommand(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.timedOut ? 'timed out' : `code ${r.code}, signal ${r.signal}`}):\n${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r;
}

// ---------------------------------------------------------------------------
// Isolation of the containers/image blob-info cache.
//
// As root, skopeo and podman share /var/lib/containers/cache/blob-info-cache-v1.boltdb
// (neither has a flag to move it). It remembers in which repository of which
// registry a blob was seen, so a later push to another repository of the same
// registry (or of a new registry that reuses the port) tries a cross-repository
// mount (`POST .../blobs/uploads/?mount=...&from=...`) instead of an upload: the
// requests a test sees would depend on earlier tests. Each call therefore runs in
// a private mount namespace (`unshare -m`) with a private directory bind-mounted
// over the cache directory. Non-root: XDG_DATA_HOME points the cache elsewhere.
// ---------------------------------------------------------------------------

const SYSTEM_CACHE_DIR = '/var/lib/containers/cache';
let unshareOk: boolean | undefined;

function canUnshare(): boolean {
  if (unshareOk === undefined) {
    unshareOk = false;
    if (process.getuid?.() === 0) {
      try {
        mkdirSync(SYSTEM_CACHE_DIR, { recursive: true, mode: 0o700 });
        const r = spawnSync('unshare', ['-m', '--', 'sh', '-c', `mount --bind "$0" ${SYSTEM_CACHE_DIR}`, tmpdir()], { timeout: 10_000 });
        unshareOk = r.status === 0;
      } catch {
        unshareOk = false;
      }
    }
  }
  return unshareOk;
}

/** Command and args running `cmd args` with `cacheDir` as its blob-info cache. */
function withCache(cmd: string, args: string[], cacheDir: string): { cmd: string; args: string[]; env: Record<string, string> } {
  mkdirSync(cacheDir, { recursive: true });
  if (canUnshare()) {
    return {
      cmd: 'unshare',
      args: ['-m', '--', 'sh', '-c', `mount --bind "$0" ${SYSTEM_CACHE_DIR} && exec "$@"`, cacheDir, cmd, ...args],
      env: {},
    };
  }
  // containers/image uses $XDG_DATA_HOME/containers/cache for non-root users.
  return { cmd, args, env: { XDG_DATA_HOME: cacheDir } };
}

// ---------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------

export interface SkopeoOptions extends CommandOptions {
  /**
   * Blob-info cache directory. Default: a fresh empty one per call, so no call
   * is influenced by an earlier one. Pass the same directory to several calls to
   * let them share knowledge (as one real user's machine would).
   */
  cacheDir?: string;
}

/**
 * Run skopeo. Pass `--tls-verify=false` / `--src-tls-verify=false` /
 * `--dest-tls-verify=false`, `--creds`, `--authfile` yourself. Unless
 * `--authfile` is given, REGISTRY_AUTH_FILE points at an empty auth file in
 * the cache dir, so stray credentials of the machine are never used.
 */
export async function skopeo(args: string[], opts: SkopeoOptions = {}): Promise<CommandResult> {
  const fresh = opts.cacheDir ? undefined : mkdtempSync(join(tmpdir(), 'proxyd-skopeo-'));
  const cacheDir = opts.cacheDir ?? fresh!;
  try {
    const authFile = join(cacheDir, 'auth.json');
    if (!existsSync(authFile)) writeFileSync(authFile, '{"auths":{}}\n', { mode: 0o600 });
    const w = withCache('skopeo', args, cacheDir);
    return await runCommand(w.cmd, w.args, {
      ...opts,
      env: { REGISTRY_AUTH_FILE: authFile, ...w.env, ...opts.env },
    });
  } finally {
    if (fresh) rmSync(fresh, { recursive: true, force: true });
  }
}

async function skopeoChecked(args: string[], opts: SkopeoOptions = {}): Promise<CommandResult> {
  const r = await skopeo(args, opts);
  if (r.code !== 0) {
    throw new Error(`skopeo ${args.join(' ')} failed (${r.timedOut ? 'timed out' : `code ${r.code}`}):\n${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r;
}

const dockerRef = (ref: string) => (ref.startsWith('docker://') ? ref : `docker://${ref}`);

export interface CopyOptions {
  /** Manifest format to write: `oci` (default: keep the source's) or Docker `v2s2`. */
  format?: 'oci' | 'v2s2';
  /** `user:password` for the registry side. */
  creds?: string;
  /** An auth file (podman login) for the registry side. */
  authfile?: string;
  /** Extra skopeo copy arguments (e.g. `--dest-compress-format`, `--retry-times`). */
  args?: string[];
  cacheDir?: string;
  timeoutMs?: number;
}

/**
 * `skopeo copy --dest-tls-verify=false [--format v2s2] oci:<layout>:<tag> docker://<ref>`.
 * `dockerRef` may be given with or without `docker://`. Throws with skopeo's stderr.
 */
export async function pushImage(ociRef: string, dockerRefArg: string, opts: CopyOptions = {}): Promise<CommandResult> {
  const args = ['copy', '--dest-tls-verify=false'];
  if (opts.format) args.push('--format', opts.format);
  if (opts.creds) args.push('--dest-creds', opts.creds);
  if (opts.authfile) args.push('--dest-authfile', opts.authfile);
  args.push(...(opts.args ?? []), ociRef, dockerRef(dockerRefArg));
  return skopeoChecked(args, { cacheDir: opts.cacheDir, timeoutMs: opts.timeoutMs });
}

/**
 * The reverse: `skopeo copy --src-tls-verify=false docker://<ref> oci:<layout>:<tag>`.
 * Blobs are copied as stored (no recompression), so digests can be compared
 * with the source layout. Throws with skopeo's stderr.
 */
export async function pullImage(dockerRefArg: string, ociRef: string, opts: CopyOptions = {}): Promise<CommandResult> {
  const args = ['copy', '--src-tls-verify=false'];
  if (opts.format) args.push('--format', opts.format);
  if (opts.creds) args.push('--src-creds', opts.creds);
  if (opts.authfile) args.push('--src-authfile', opts.authfile);
  args.push(...(opts.args ?? []), dockerRef(dockerRefArg), ociRef);
  return skopeoChecked(args, { cacheDir: opts.cacheDir, timeoutMs: opts.timeoutMs });
}

/** `skopeo inspect --tls-verify=false [--raw] docker://<ref>`, parsed. Throws with skopeo's stderr. */
export async function inspectImage(dockerRefArg: string, opts: { creds?: string; raw?: boolean; cacheDir?: string } = {}): Promise<any> {
  const args = ['inspect', '--tls-verify=false'];
  if (opts.raw) args.push('--raw');
  if (opts.creds) args.push('--creds', opts.creds);
  args.push(dockerRef(dockerRefArg));
  const r = await skopeoChecked(args, { cacheDir: opts.cacheDir });
  return JSON.parse(r.stdout);
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

export interface PodmanOptions extends CommandOptions {
  /** Storage driver (default vfs: no mounts at all, the store is removable with rm -rf). */
  driver?: 'vfs' | 'overlay';
}

/**
 * Run podman with private storage under `store`:
 * `--root <store>/root --runroot <store>/run --tmpdir <store>/tmp --storage-driver vfs`,
 * `--events-backend file` (events under the store too), blob-info cache in
 * `<store>/cache`, and REGISTRY_AUTH_FILE=`<store>/auth.json` (so a `podman
 * login` without `--authfile` stays in the store). Pass `--tls-verify=false` and
 * `--authfile` yourself. Works as root for pull, push, login, logout, tag,
 * images, inspect, rmi; `podman run` does not work here (crun cannot set
 * RLIMIT_NOFILE).
 */
export async function podman(store: string, args: string[], opts: PodmanOptions = {}): Promise<CommandResult> {
  const root = resolve(store);
  mkdirSync(root, { recursive: true });
  const global = [
    '--root', join(root, 'root'),
    '--runroot', join(root, 'run'),
    '--tmpdir', join(root, 'tmp'),
    '--storage-driver', opts.driver ?? 'vfs',
    '--events-backend', 'file',
  ];
  // podman refuses a REGISTRY_AUTH_FILE that does not exist: start with an empty one.
  const authFile = join(root, 'auth.json');
  if (!existsSync(authFile)) writeFileSync(authFile, '{"auths":{}}\n', { mode: 0o600 });
  const w = withCache('podman', [...global, ...args], join(root, 'cache'));
  return runCommand(w.cmd, w.args, { ...opts, env: { REGISTRY_AUTH_FILE: authFile, ...w.env, ...opts.env } });
}

/** `podman(...)` that throws with podman's stderr unless it exits 0. */
export async function podmanChecked(store: string, args: string[], opts: PodmanOptions = {}): Promise<CommandResult> {
  const r = await podman(store, args, opts);
  if (r.code !== 0) {
    throw new Error(`podman ${args.join(' ')} failed (${r.timedOut ? 'timed out' : `code ${r.code}`}):\n${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r;
}

// ---------------------------------------------------------------------------
// umoci image building
// ---------------------------------------------------------------------------

export interface BuildOptions {
  /** Image name: the layout is `<dir>/<name>` (characters other than [A-Za-z0-9._-] become `_`). */
  name: string;
  /** Tag inside the layout (default `latest`). */
  tag?: string;
  /** Files of the first layer, by path inside the image. Content starting with `#!` is made executable. */
  files: Record<string, string | Buffer>;
  /** Number of layers (default 1). Layers 2..N each add `/layer-<i>.txt`. */
  layers?: number;
  /** Adds `/random.bin` with this many random bytes to the first layer (incompressible: a big blob). */
  randomBytes?: number;
  /** Config cmd (default `["/bin/sh"]`). */
  cmd?: string[];
  /** Config labels (e.g. a flatpak image's org.flatpak.ref). */
  labels?: Record<string, string>;
  timeoutMs?: number;
}

export interface BuiltImage {
  /** The OCI layout directory. */
  layout: string;
  /** `oci:<layout>:<tag>`, for skopeo. */
  ref: string;
  tag: string;
}

function rootfsPath(rootfs: string, file: string): string {
  const rel = normalize(file.replace(/^\/+/, ''));
  if (rel === '.' || rel.startsWith('..')) throw new Error(`bad image path: ${file}`);
  return join(rootfs, rel);
}

function writeRootfsFile(rootfs: string, file: string, content: string | Buffer, mode?: number): void {
  const p = rootfsPath(rootfs, file);
  mkdirSync(dirname(p), { recursive: true });
  const buf = typeof content === 'string' ? Buffer.from(content) : content;
  const exec = buf.subarray(0, 2).toString() === '#!';
  writeFileSync(p, buf, { mode: mode ?? (exec ? 0o755 : 0o644) });
}

/**
 * Build an OCI image layout with umoci: init (if the layout does not exist
 * yet), new, unpack, write files, repack (once per layer, with
 * `--refresh-bundle` so each repack adds exactly one new layer), config cmd,
 * gc. Several tags may be built into one layout by calling again with the same
 * name and another tag.
 */
export async function buildImage(dir: string, opts: BuildOptions): Promise<BuiltImage> {
  const layers = opts.layers ?? 1;
  if (!Number.isInteger(layers) || layers < 1) throw new Error(`layers must be a positive integer: ${layers}`);
  const tag = opts.tag ?? 'latest';
  const layout = resolve(dir, opts.name.replace(/[^A-Za-z0-9._-]/g, '_'));
  const image = `${layout}:${tag}`;
  const o = { timeoutMs: opts.timeoutMs };
  const rootless = process.getuid?.() === 0 ? [] : ['--rootless'];
  mkdirSync(dir, { recursive: true });
  if (!existsSync(join(layout, 'index.json'))) await runChecked('umoci', ['init', '--layout', layout], o);
  await runChecked('umoci', ['new', '--image', image], o);
  const bundle = mkdtempSync(join(resolve(dir), '.bundle-'));
  rmSync(bundle, { recursive: true, force: true });
  try {
    await runChecked('umoci', ['unpack', ...rootless, '--image', image, bundle], o);
    const rootfs = join(bundle, 'rootfs');
    for (const [file, content] of Object.entries(opts.files)) writeRootfsFile(rootfs, file, content);
    if (opts.randomBytes) writeRootfsFile(rootfs, 'random.bin', cryptoRandomBytes(opts.randomBytes));
    for (let i = 1; i <= layers; i++) {
      if (i > 1) writeRootfsFile(rootfs, `layer-${i}.txt`, `layer ${i} of ${opts.name}:${tag}\n`);
      await runChecked('umoci', ['repack', '--refresh-bundle', '--image', image, bundle], o);
    }
  } finally {
    rmSync(bundle, { recursive: true, force: true });
  }
  const cmd = opts.cmd ?? ['/bin/sh'];
  const labels = Object.entries(opts.labels ?? {}).flatMap(([k, v]) => ['--config.label', `${k}=${v}`]);
  await runChecked('umoci', ['config', '--image', image, ...cmd.flatMap((c) => ['--config.cmd', c]), ...labels], o);
  await runChecked('umoci', ['gc', '--layout', layout], o);
  return { layout, ref: `oci:${layout}:${tag}`, tag };
}

// ---------------------------------------------------------------------------
// Digests and layout contents
// ---------------------------------------------------------------------------

/** `sha256:<hex>` of a file's bytes (streamed). */
export function fileDigest(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('error', rej)
      .on('data', (d) => h.update(d))
      .on('end', () => res(`sha256:${h.digest('hex')}`));
  });
}

/** `sha256:<hex>` of bytes in memory. */
export function sha256(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Every blob digest in an OCI layout (`blobs/<alg>/<hex>`), as `<alg>:<hex>`, sorted. */
export function layoutBlobs(layout: string): string[] {
  const blobs = join(layout, 'blobs');
  const out: string[] = [];
  for (const alg of readdirSync(blobs)) {
    for (const hex of readdirSync(join(blobs, alg))) out.push(`${alg}:${hex}`);
  }
  return out.sort();
}

/** Path of a blob in an OCI layout. */
export function layoutBlobPath(layout: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return join(layout, 'blobs', alg!, hex!);
}

export interface LayoutImage {
  /** Digest of the manifest. */
  digest: string;
  mediaType: string;
  manifest: { config: { digest: string; size: number; mediaType: string }; layers: Array<{ digest: string; size: number; mediaType: string }>; [k: string]: unknown };
  /** The manifest's exact bytes. */
  raw: Buffer;
}

/** The manifest tagged `tag` (annotation `org.opencontainers.image.ref.name`) in a layout; the only one if tag is omitted. */
export function layoutManifest(layout: string, tag?: string): LayoutImage {
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as {
    manifests: Array<{ digest: string; mediaType: string; annotations?: Record<string, string> }>;
  };
  const entries = tag === undefined ? index.manifests : index.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (entries.length !== 1) throw new Error(`${layout}: ${entries.length} manifests for tag ${tag ?? '(any)'}`);
  const entry = entries[0]!;
  const raw = readFileSync(layoutBlobPath(layout, entry.digest));
  return { digest: entry.digest, mediaType: entry.mediaType, manifest: JSON.parse(raw.toString('utf8')), raw };
}
