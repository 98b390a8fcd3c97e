// /v2/<name>/manifests/<reference>: by tag or digest.
import type { ManifestPath, ResourceHandler } from './paths.ts';
import { writesOf } from './paths.ts';

export const getManifest: ResourceHandler<ManifestPath> = (gw, x, p) => gw.content.getManifest(x, p.ref);
export const putManifest: ResourceHandler<ManifestPath> = (gw, x, p) => writesOf(gw).putManifest(x, p.ref);
export const deleteManifest: ResourceHandler<ManifestPath> = (gw, x, p) => writesOf(gw).deleteManifest(x, p.ref);
