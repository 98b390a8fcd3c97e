// One table of registry error codes, rendered as OCI error bodies
// ({"errors":[{code,message,detail}]}) with the status distribution uses.
import type { Response } from 'express';

export const OCI_ERRORS = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'Repository name unknown' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const;

export type OciCode = keyof typeof OCI_ERRORS;

/** A registry error to be answered in the OCI shape. */
export class RegistryError extends Error {
  readonly status: number;
  constructor(
    readonly code: OciCode,
    message?: string,
    readonly detail?: unknown,
    status?: number,
  ) {
    super(message ?? OCI_ERRORS[code].message);
    this.status = status ?? OCI_ERRORS[code].status;
  }
}

export function ociBody(code: OciCode, message?: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message: message ?? OCI_ERRORS[code].message, ...(detail === undefined ? {} : { detail }) }] });
}

export function sendOciError(res: Response, err: RegistryError): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  const body = ociBody(err.code, err.message, err.detail);
  res.status(err.status).set({ 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)) });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
