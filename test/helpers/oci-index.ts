// A two-platform OCI image index in an OCI layout, for tests that move
// multi-platform images: umoci builds one image per platform (amd64 with
// `layers` layers, arm64 with one), and the index is written by hand (umoci
// makes no indexes), tagged `tag` in the layout's index.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildImage, layoutBlobPath, layoutManifest, sha256, type LayoutImage } from './images.ts';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface BuiltIndex {
  layout: string;
  /** `oci:<layout>:<tag>`: copy it with skopeo `--all` to keep both platforms. */
  ref: string;
  digest: string;
  raw: Buffer;
  amd64: LayoutImage;
  arm64: LayoutImage;
  /** The index, both manifests, their configs and layers: every digest a full copy holds, sorted. */
  reachable: string[];
}

export async function buildTwoPlatformIndex(dir: string, name: string, opts: { tag?: string; layers?: number; randomBytes?: number } = {}): Promise<BuiltIndex> {
  const tag = opts.tag ?? 'multi';
  const amd = await buildImage(dir, { name, tag: 'amd64', files: { '/etc/arch.txt': `${name} amd64\n` }, layers: opts.layers ?? 2, randomBytes: opts.randomBytes });
  await buildImage(dir, { name, tag: 'arm64', files: { '/etc/arch.txt': `${name} arm64\n` }, randomBytes: opts.randomBytes });
  const layout = amd.layout;
  const amd64 = layoutManifest(layout, 'amd64');
  const arm64 = layoutManifest(layout, 'arm64');
  const raw = Buffer.from(`${JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { mediaType: OCI_MANIFEST, digest: amd64.digest, size: amd64.raw.length, platform: { architecture: 'amd64', os: 'linux' } },
      { mediaType: OCI_MANIFEST, digest: arm64.digest, size: arm64.raw.length, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
    ],
  }, null, 2)}\n`);
  const digest = sha256(raw);
  writeFileSync(layoutBlobPath(layout, digest), raw);
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: unknown[] };
  index.manifests.push({ mediaType: OCI_INDEX, digest, size: raw.length, annotations: { 'org.opencontainers.image.ref.name': tag } });
  writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
  const reachable = new Set<string>([digest]);
  for (const m of [amd64, arm64]) {
    reachable.add(m.digest);
    reachable.add(m.manifest.config.digest);
    for (const l of m.manifest.layers) reachable.add(l.digest);
  }
  return { layout, ref: `oci:${layout}:${tag}`, digest, raw, amd64, arm64, reachable: [...reachable].sort() };
}
