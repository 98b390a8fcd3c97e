// The errors of the content store (BlobStore), each a case its callers answer
// differently (HTTP status, retry, report).

export class BlobStoreError extends Error {
  override readonly name: string = 'BlobStoreError';
}

/** A digest that is not `sha256:<64 lowercase hex>`. */
export class InvalidDigestError extends BlobStoreError {
  override readonly name: string = 'InvalidDigestError';
  constructor(readonly digest: string) {
    super(`unsupported or malformed digest '${digest}' (expected sha256:<64 lowercase hex>)`);
  }
}

/** createUpload with an id that is not a UUID. */
export class InvalidUploadIdError extends BlobStoreError {
  override readonly name: string = 'InvalidUploadIdError';
  constructor(readonly uuid: string) {
    super(`invalid upload id '${uuid}'`);
  }
}

/** No upload session of that id (never created, cancelled, committed or collected). */
export class UploadUnknownError extends BlobStoreError {
  override readonly name: string = 'UploadUnknownError';
  constructor(readonly uuid: string) {
    super(`upload ${uuid} is unknown`);
  }
}

/** createUpload of an id that already has a session. */
export class UploadExistsError extends BlobStoreError {
  override readonly name: string = 'UploadExistsError';
  constructor(readonly uuid: string) {
    super(`upload ${uuid} already exists`);
  }
}

/** Another process (a node sharing the storage) is writing, committing or dropping this upload right now. */
export class UploadBusyError extends BlobStoreError {
  override readonly name: string = 'UploadBusyError';
  constructor(readonly uuid: string) {
    super(`upload ${uuid} is being written by another request`);
  }
}

/** An append whose `start` is not the upload's current size; `size` is that size (for a 416 and its Range). */
export class UploadRangeError extends BlobStoreError {
  override readonly name: string = 'UploadRangeError';
  constructor(
    readonly size: number,
    readonly start: number,
  ) {
    super(`chunk starts at ${start} but the upload holds ${size} bytes`);
  }
}

/** The content's digest is not the one claimed. */
export class DigestMismatchError extends BlobStoreError {
  override readonly name: string = 'DigestMismatchError';
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content digest is ${actual}, not ${expected}`);
  }
}

/** The content's size is not the one claimed (`actual` is a lower bound when the body overran). */
export class SizeMismatchError extends BlobStoreError {
  override readonly name: string = 'SizeMismatchError';
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`content is ${actual} bytes, not ${expected}`);
  }
}

/** An append body longer than its `maxBytes`. */
export class BodyTooLargeError extends BlobStoreError {
  override readonly name: string = 'BodyTooLargeError';
  constructor(readonly limit: number) {
    super(`body exceeds ${limit} bytes`);
  }
}
