// What the embedded store knows in SQLite: which blobs each repository links,
// manifests (exact bytes) with their children, subject and artifact type for
// the referrers API, tags, and open upload sessions. Blob bytes live in
// BlobStore; this index is what makes them visible to a repository.
import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { Statements } from '../db/statements.ts';
import type { ParsedManifest } from '../oci/manifest.ts';

export interface StoredManifest {
  digest: string;
  mediaType: string;
  content: Buffer;
}

export interface ManifestRecord extends StoredManifest {
  artifactType?: string;
  subject?: string;
  annotations?: Record<string, string>;
  /** Digests of blobs and manifests the manifest refers to. */
  children: string[];
}

/** What the content index stores for a manifest: its exact bytes and what parsing found. */
export function manifestRecord(digest: string, body: Buffer, parsed: ParsedManifest): ManifestRecord {
  return {
    digest,
    mediaType: parsed.mediaType,
    content: body,
    children: [...parsed.blobs, ...parsed.manifests],
    ...(parsed.artifactType ? { artifactType: parsed.artifactType } : {}),
    ...(parsed.subject ? { subject: parsed.subject } : {}),
    ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
  };
}

export interface Referrer {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export class ContentIndex {
  private readonly statements: Statements;

  constructor(private readonly db: Database.Database) {
    this.statements = new Statements(db);
  }

  private sql(text: string): Database.Statement {
    return this.statements.get(text);
  }

  repositoryId(name: string): number | undefined {
    return this.sql('SELECT id FROM repositories WHERE name = ?').pluck().get(name) as number | undefined;
  }

  /**
   * A repository is created by its first push: private, owned by the pusher
   * (a standalone user, by id). Made by an upload, it is `pending`: not listed
   * anywhere until its first manifest is stored.
   */
  ensureRepository(name: string, owner: string | undefined, pending = false): number {
    this.sql('INSERT INTO repositories (name, auth_required, owner_id, pending) VALUES (?, 1, (SELECT id FROM users WHERE name = ? AND password_hash IS NOT NULL), ?) ON CONFLICT(name) DO NOTHING')
      .run(name, owner ?? null, pending ? 1 : 0);
    return this.repositoryId(name)!;
  }

  blobInRepository(repositoryId: number, digest: string): { size: number } | undefined {
    return this.sql('SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = ? AND rb.digest = ?').get(repositoryId, digest) as { size: number } | undefined;
  }

  /** Any repository's link to the blob (for mounts without `from`). */
  blobAnywhere(digest: string): { size: number } | undefined {
    return this.sql('SELECT size FROM blobs WHERE digest = ?').get(digest) as { size: number } | undefined;
  }

  /** Blobs stored and their bytes (the metrics' gauges, read at scrape time). */
  totals(): { blobs: number; bytes: number } {
    return this.sql('SELECT count(*) AS blobs, coalesce(sum(size), 0) AS bytes FROM blobs').get() as { blobs: number; bytes: number };
  }

  /** Names of the repositories linking a blob (a mount without `from` needs one the client can read). */
  repositoriesLinking(digest: string): string[] {
    return this.sql('SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id WHERE rb.digest = ?').pluck().all(digest) as string[];
  }

  linkBlob(repositoryId: number, digest: string, size: number): void {
    this.db.transaction(() => {
      this.sql('INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT(digest) DO NOTHING').run(digest, size, Date.now());
      this.sql('INSERT OR IGNORE INTO repository_blobs (repository_id, digest) VALUES (?, ?)').run(repositoryId, digest);
    }).immediate();
  }

  unlinkBlob(repositoryId: number, digest: string): boolean {
    return this.sql('DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?').run(repositoryId, digest).changes > 0;
  }

  /** Is any repository linking this blob (or is it a known manifest child)? Used by GC. */
  blobReferenced(digest: string): boolean {
    return (
      this.sql('SELECT 1 FROM repository_blobs WHERE digest = ? LIMIT 1').get(digest) !== undefined ||
      this.sql('SELECT 1 FROM manifest_children WHERE digest = ? LIMIT 1').get(digest) !== undefined
    );
  }

  /** Forget blobs no repository links any more; their files become collectable. */
  forgetUnlinkedBlobs(): number {
    return this.sql('DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM repository_blobs) AND digest NOT IN (SELECT digest FROM manifest_children)').run().changes;
  }

  startUpload(repositoryId: number): string {
    const uuid = randomUUID();
    this.sql('INSERT INTO uploads (uuid, repository_id, created_at) VALUES (?, ?, ?)').run(uuid, repositoryId, Date.now());
    return uuid;
  }

  uploadRepository(uuid: string): number | undefined {
    return this.sql('SELECT repository_id FROM uploads WHERE uuid = ?').pluck().get(uuid) as number | undefined;
  }

  endUpload(uuid: string): void {
    this.sql('DELETE FROM uploads WHERE uuid = ?').run(uuid);
  }

  openUploads(): string[] {
    return this.sql('SELECT uuid FROM uploads').pluck().all() as string[];
  }

  /** Missing children of a manifest about to be stored (blobs or manifests of this repository). */
  missingChildren(repositoryId: number, blobs: string[], manifests: string[]): string[] {
    const missing = blobs.filter((d) => !this.blobInRepository(repositoryId, d));
    for (const d of manifests) if (!this.manifest(repositoryId, d)) missing.push(d);
    return missing;
  }

  /** Store a manifest (a digest already stored keeps its media type) and point `tag` at it. */
  putManifest(repositoryId: number, m: ManifestRecord, tag?: string): void {
    this.db.transaction(() => {
      this.sql(
        `INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject, annotations, content, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(repository_id, digest) DO NOTHING`,
      ).run(repositoryId, m.digest, m.mediaType, m.artifactType ?? null, m.subject ?? null, m.annotations ? JSON.stringify(m.annotations) : null, m.content, Date.now());
      const child = this.sql('INSERT OR IGNORE INTO manifest_children (repository_id, manifest_digest, digest) VALUES (?, ?, ?)');
      for (const d of m.children) child.run(repositoryId, m.digest, d);
      // Its first manifest makes a repository started by an upload a listed one.
      this.sql('UPDATE repositories SET pending = 0 WHERE id = ? AND pending = 1').run(repositoryId);
      if (tag) this.sql('INSERT INTO tags (repository_id, name, digest) VALUES (?, ?, ?) ON CONFLICT(repository_id, name) DO UPDATE SET digest = excluded.digest').run(repositoryId, tag, m.digest);
    }).immediate();
  }

  manifest(repositoryId: number, digest: string): StoredManifest | undefined {
    const row = this.sql('SELECT digest, media_type, content FROM manifests WHERE repository_id = ? AND digest = ?').get(repositoryId, digest) as { digest: string; media_type: string; content: Buffer } | undefined;
    return row && { digest: row.digest, mediaType: row.media_type, content: row.content };
  }

  tagged(repositoryId: number, tag: string): StoredManifest | undefined {
    const digest = this.sql('SELECT digest FROM tags WHERE repository_id = ? AND name = ?').pluck().get(repositoryId, tag) as string | undefined;
    return digest === undefined ? undefined : this.manifest(repositoryId, digest);
  }

  /** Delete a manifest and every tag pointing at it. */
  deleteManifest(repositoryId: number, digest: string): boolean {
    return this.db.transaction(() => {
      this.sql('DELETE FROM tags WHERE repository_id = ? AND digest = ?').run(repositoryId, digest);
      return this.sql('DELETE FROM manifests WHERE repository_id = ? AND digest = ?').run(repositoryId, digest).changes > 0;
    }).immediate();
  }

  deleteTag(repositoryId: number, tag: string): boolean {
    return this.sql('DELETE FROM tags WHERE repository_id = ? AND name = ?').run(repositoryId, tag).changes > 0;
  }

  tags(repositoryId: number, last: string | undefined, limit: number): string[] {
    return this.sql('SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?').pluck().all(repositoryId, last ?? '', limit) as string[];
  }

  referrers(repositoryId: number, subject: string, artifactType?: string): Referrer[] {
    const rows = this.sql('SELECT digest, media_type, artifact_type, annotations, length(content) AS size FROM manifests WHERE repository_id = ? AND subject = ? ORDER BY digest').all(repositoryId, subject) as Array<{ digest: string; media_type: string; artifact_type: string | null; annotations: string | null; size: number }>;
    return rows
      .filter((r) => artifactType === undefined || r.artifact_type === artifactType)
      .map((r) => ({
        mediaType: r.media_type,
        digest: r.digest,
        size: r.size,
        ...(r.artifact_type ? { artifactType: r.artifact_type } : {}),
        ...(r.annotations ? { annotations: JSON.parse(r.annotations) as Record<string, string> } : {}),
      }));
  }
}
