// The one interface every content backend implements: the embedded store,
// Pulp (reads), and the wrappers that forward writes to the main server or
// fetch what is missing from it. Chosen once in setup(); the registry routes
// call it without knowing which one serves them. A backend answers the
// exchange itself (status, headers, body), because backends differ in how
// (a stored file, a stream relayed, a redirect), and throws RegistryError for
// the OCI errors the routes render. Access was decided before any call.
import type { Request, Response } from 'express';
import type { Access } from '../access/access.ts';
import type { RegistryClient } from '../auth/client.ts';

/** One registry request, as the backend sees it. */
export interface Exchange {
  req: Request;
  res: Response;
  access: Access;
}

export interface ManifestReference {
  reference: string;
  isDigest: boolean;
}

/** Writes: present only on backends that can take them; routes for them are registered only then. */
export interface ContentWrites {
  putManifest(x: Exchange, ref: ManifestReference): Promise<void>;
  deleteManifest(x: Exchange, ref: ManifestReference): Promise<void>;
  deleteBlob(x: Exchange, digest: string): Promise<void>;
  /** POST .../blobs/uploads/ : a session, a monolithic upload (?digest) or a mount (?mount[&from]). */
  startUpload(x: Exchange): Promise<void>;
  patchUpload(x: Exchange, uuid: string): Promise<void>;
  finishUpload(x: Exchange, uuid: string): Promise<void>;
  uploadStatus(x: Exchange, uuid: string): Promise<void>;
  cancelUpload(x: Exchange, uuid: string): Promise<void>;
}

export interface ContentBackend {
  /** GET/HEAD a manifest by tag or digest (Accept honoured). */
  getManifest(x: Exchange, ref: ManifestReference): Promise<void>;
  /** GET/HEAD a blob (Range honoured). */
  getBlob(x: Exchange, digest: string): Promise<void>;
  /** Up to `limit` tags after `last`, in order; the route pages them. */
  tags(x: Exchange, last: string | undefined, limit: number): Promise<string[]>;
  /** The referrers API: present only where the backend knows subjects. */
  referrers?(x: Exchange, digest: string): Promise<void>;
  writes?: ContentWrites;
  /** The status of the backend's own registry root, where it has one (what /v1/_ping reports). */
  ping?(req: Request): Promise<number>;
  /**
   * The flatpak index (GET /index/static), every repository the backend has
   * that `x.names` holds; the route filters `Results` to the caller again.
   */
  flatpakIndex?(x: FlatpakExchange, query: FlatpakQuery): Promise<FlatpakAnswer>;
  /** Release what the backend holds (pools, timers); the parts that made it call this in stop(). */
  close?(): void | Promise<void>;
}

/** The flatpak index query, as the client sent it: repeated keys kept, in order. */
export type FlatpakQuery = Array<[string, string]>;

export interface FlatpakExchange {
  req: Request;
  /** Who asks (its identity goes upstream, as for every read). */
  client: RegistryClient;
  /** The repositories the caller may read (by name). */
  names: readonly string[];
  /** This gateway's origin as the client reaches it: the index's `Registry`. */
  origin: string;
}

export interface FlatpakImage {
  Tags: string[];
  Digest: string;
  MediaType: string;
  OS: string;
  Architecture: string;
  Labels: Record<string, string>;
}

export interface FlatpakIndex {
  Registry: string;
  Results: Array<{ Name: string; Images: FlatpakImage[] }>;
}

/** The index, or the backend's own refusal passed on as it came (Pulp's 400 for a query without the label filter). */
export type FlatpakAnswer = { kind: 'index'; index: FlatpakIndex } | { kind: 'failure'; status: number; contentType: string; body: string };
