// What the embedded store knows in the database: which blobs each repository links,
// manifests (exact bytes) with their children, subject and artifact type for
// the referrers API, tags, and open upload sessions. Blob bytes live in
// BlobStore; this index is what makes them visible to a repository.
import { randomUUID } from 'node:crypto';
import type { Reads } from '../db/read-cache.ts';
import type { Sql, SqlQueries } from '../db/sql.ts';
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
  /** `reads` serves what every pull reads (repository ids, tags, manifests, blob links): see GatewayDb. */
  constructor(
    private readonly sql: Sql,
    private readonly reads: Reads = sql,
  ) {}

  repositoryId(name: string): Promise<number | undefined> {
    return this.reads.value<number>('SELECT id FROM repositories WHERE name = ?', [name]);
  }

  /**
   * A repository is created by its first push: private, owned by the pusher
   * (a standalone user, by id). Made by an upload, it is `pending`: not listed
   * anywhere until its first manifest is stored.
   */
  async ensureRepository(name: string, owner: string | undefined, pending = false): Promise<number> {
    await this.sql.run(
      'INSERT INTO repositories (name, auth_required, owner_id, pending) VALUES (?, 1, (SELECT id FROM users WHERE name = ? AND password_hash IS NOT NULL), ?) ON CONFLICT(name) DO NOTHING',
      [name, owner ?? null, pending ? 1 : 0],
    );
    return (await this.repositoryId(name))!;
  }

  blobInRepository(repositoryId: number, digest: string): Promise<{ size: number } | undefined> {
    return blobIn(this.reads, repositoryId, digest);
  }

  /** Any repository's link to the blob (for mounts without `from`). */
  blobAnywhere(digest: string): Promise<{ size: number } | undefined> {
    return this.sql.get<{ size: number }>('SELECT size FROM blobs WHERE digest = ?', [digest]);
  }

  /** Blobs stored and their bytes (the metrics' gauges, read at scrape time). */
  async totals(): Promise<{ blobs: number; bytes: number }> {
    const row = await this.sql.get<{ blobs: number | bigint | string; bytes: number | bigint | string }>('SELECT count(*) AS blobs, coalesce(sum(size), 0) AS bytes FROM blobs');
    return { blobs: Number(row!.blobs), bytes: Number(row!.bytes) };
  }

  /** Names of the repositories linking a blob (a mount without `from` needs one the client can read). */
  repositoriesLinking(digest: string): Promise<string[]> {
    return this.sql.column<string>('SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id WHERE rb.digest = ?', [digest]);
  }

  linkBlob(repositoryId: number, digest: string, size: number): Promise<void> {
    return this.sql.transaction(async (tx) => {
      await tx.run('INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT(digest) DO NOTHING', [digest, size, Date.now()]);
      await tx.run('INSERT INTO repository_blobs (repository_id, digest) VALUES (?, ?) ON CONFLICT DO NOTHING', [repositoryId, digest]);
    });
  }

  async unlinkBlob(repositoryId: number, digest: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?', [repositoryId, digest])).changes > 0;
  }

  /** Is any repository linking this blob (or is it a known manifest child)? Used by GC. */
  async blobReferenced(digest: string): Promise<boolean> {
    return (
      (await this.sql.get('SELECT 1 FROM repository_blobs WHERE digest = ? LIMIT 1', [digest])) !== undefined ||
      (await this.sql.get('SELECT 1 FROM manifest_children WHERE digest = ? LIMIT 1', [digest])) !== undefined
    );
  }

  /** Forget blobs no repository links any more; their files become collectable. */
  async forgetUnlinkedBlobs(): Promise<number> {
    return (await this.sql.run('DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM repository_blobs) AND digest NOT IN (SELECT digest FROM manifest_children)')).changes;
  }

  async startUpload(repositoryId: number): Promise<string> {
    const uuid = randomUUID();
    await this.sql.run('INSERT INTO uploads (uuid, repository_id, created_at) VALUES (?, ?, ?)', [uuid, repositoryId, Date.now()]);
    return uuid;
  }

  uploadRepository(uuid: string): Promise<number | undefined> {
    return this.sql.value<number>('SELECT repository_id FROM uploads WHERE uuid = ?', [uuid]);
  }

  async endUpload(uuid: string): Promise<void> {
    await this.sql.run('DELETE FROM uploads WHERE uuid = ?', [uuid]);
  }

  openUploads(): Promise<string[]> {
    return this.sql.column<string>('SELECT uuid FROM uploads');
  }

  /** Missing children of a manifest about to be stored (blobs or manifests of this repository). */
  missingChildren(repositoryId: number, blobs: string[], manifests: string[]): Promise<string[]> {
    return missingIn(this.sql, repositoryId, blobs, manifests);
  }

  /** Store a manifest (a digest already stored keeps its media type) and point `tag` at it. */
  putManifest(repositoryId: number, m: ManifestRecord, tag?: string): Promise<void> {
    return this.sql.transaction((tx) => insertManifest(tx, repositoryId, m, tag));
  }

  /**
   * A client's manifest PUT, checked and stored in one transaction: refused
   * when the digest is stored under another media type, or when children are
   * missing from the repository (`blobs` and `manifests`: what it refers to).
   */
  putCheckedManifest(repositoryId: number, m: ManifestRecord, refs: { blobs: string[]; manifests: string[] }, tag?: string): Promise<{ storedAs: string } | { missing: string[] } | undefined> {
    return this.sql.transaction(async (tx) => {
      const stored = await manifestIn(tx, repositoryId, m.digest);
      if (stored && stored.mediaType !== m.mediaType) return { storedAs: stored.mediaType };
      const missing = await missingIn(tx, repositoryId, refs.blobs, refs.manifests);
      if (missing.length > 0) return { missing };
      await insertManifest(tx, repositoryId, m, tag);
      return undefined;
    });
  }

  manifest(repositoryId: number, digest: string): Promise<StoredManifest | undefined> {
    return manifestIn(this.reads, repositoryId, digest);
  }

  /** The manifest a tag points at, in one query (a pull by tag reads it on every request). */
  async tagged(repositoryId: number, tag: string): Promise<StoredManifest | undefined> {
    const row = await this.reads.get<{ digest: string; media_type: string; content: Buffer }>(
      'SELECT m.digest, m.media_type, m.content FROM tags t JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest WHERE t.repository_id = ? AND t.name = ?',
      [repositoryId, tag],
    );
    return row && { digest: row.digest, mediaType: row.media_type, content: row.content };
  }

  /** Delete a manifest and every tag pointing at it. */
  deleteManifest(repositoryId: number, digest: string): Promise<boolean> {
    return this.sql.transaction(async (tx) => {
      await tx.run('DELETE FROM tags WHERE repository_id = ? AND digest = ?', [repositoryId, digest]);
      return (await tx.run('DELETE FROM manifests WHERE repository_id = ? AND digest = ?', [repositoryId, digest])).changes > 0;
    });
  }

  deleteTag(repositoryId: number, tag: string): Promise<boolean> {
    return deleteTag(this.sql, repositoryId, tag);
  }

  tags(repositoryId: number, last: string | undefined, limit: number): Promise<string[]> {
    return this.sql.column<string>('SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?', [repositoryId, last ?? '', limit]);
  }

  async referrers(repositoryId: number, subject: string, artifactType?: string): Promise<Referrer[]> {
    const rows = await this.sql.all<{ digest: string; media_type: string; artifact_type: string | null; annotations: string | null; size: number }>(
      'SELECT digest, media_type, artifact_type, annotations, length(content) AS size FROM manifests WHERE repository_id = ? AND subject = ? ORDER BY digest',
      [repositoryId, subject],
    );
    return rows
      .filter((r) => artifactType === undefined || r.artifact_type === artifactType)
      .map((r) => ({
        mediaType: r.media_type,
        digest: r.digest,
        size: Number(r.size),
        ...(r.artifact_type ? { artifactType: r.artifact_type } : {}),
        ...(r.annotations ? { annotations: JSON.parse(r.annotations) as Record<string, string> } : {}),
      }));
  }
}

// Queries run on the connection or inside a transaction (store/tag-order.ts runs some in its own).

async function missingIn(q: SqlQueries, repositoryId: number, blobs: string[], manifests: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const d of blobs) if (!(await blobIn(q, repositoryId, d))) missing.push(d);
  for (const d of manifests) if (!(await manifestIn(q, repositoryId, d))) missing.push(d);
  return missing;
}

async function insertManifest(tx: SqlQueries, repositoryId: number, m: ManifestRecord, tag?: string): Promise<void> {
  await tx.run(
    `INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject, annotations, content, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT(repository_id, digest) DO NOTHING`,
    [repositoryId, m.digest, m.mediaType, m.artifactType ?? null, m.subject ?? null, m.annotations ? JSON.stringify(m.annotations) : null, m.content, Date.now()],
  );
  for (const d of m.children) await tx.run('INSERT INTO manifest_children (repository_id, manifest_digest, digest) VALUES (?, ?, ?) ON CONFLICT DO NOTHING', [repositoryId, m.digest, d]);
  // Its first manifest makes a repository started by an upload a listed one.
  await tx.run('UPDATE repositories SET pending = 0 WHERE id = ? AND pending = 1', [repositoryId]);
  if (tag) await setTag(tx, repositoryId, tag, m.digest);
}

async function blobIn(q: Reads, repositoryId: number, digest: string): Promise<{ size: number } | undefined> {
  return q.get<{ size: number }>('SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = ? AND rb.digest = ?', [repositoryId, digest]);
}

export async function manifestIn(q: Reads, repositoryId: number, digest: string): Promise<StoredManifest | undefined> {
  const row = await q.get<{ digest: string; media_type: string; content: Buffer }>('SELECT digest, media_type, content FROM manifests WHERE repository_id = ? AND digest = ?', [repositoryId, digest]);
  return row && { digest: row.digest, mediaType: row.media_type, content: row.content };
}

export async function setTag(q: SqlQueries, repositoryId: number, tag: string, digest: string): Promise<void> {
  await q.run('INSERT INTO tags (repository_id, name, digest) VALUES (?, ?, ?) ON CONFLICT(repository_id, name) DO UPDATE SET digest = excluded.digest', [repositoryId, tag, digest]);
}

export async function deleteTag(q: SqlQueries, repositoryId: number, tag: string): Promise<boolean> {
  return (await q.run('DELETE FROM tags WHERE repository_id = ? AND name = ?', [repositoryId, tag])).changes > 0;
}
