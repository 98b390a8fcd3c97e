// RFC 9110 byte ranges for blob GET: one range, or the whole blob.
import type { Response } from 'express';
import { RegistryError } from '../oci/errors.ts';

export type ByteRange = { start: number; end: number } | 'unsatisfiable' | undefined;

/** Parse `Range` against a size; multi-range requests get the whole blob (clients fall back). */
export function parseRange(header: string | undefined, size: number): ByteRange {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size || size === 0) return 'unsatisfiable';
  return { start, end };
}

/** The head of a blob answer of `size` bytes: 206 with Content-Range for one range, else 200; an unsatisfiable range is RANGE_INVALID. */
export function answerBlobRange(res: Response, rangeHeader: string | undefined, size: number): { start: number; end: number } | undefined {
  res.set('Accept-Ranges', 'bytes');
  const range = parseRange(rangeHeader, size);
  if (range === 'unsatisfiable') {
    res.set('Content-Range', `bytes */${size}`);
    throw new RegistryError('RANGE_INVALID', `the range is outside the blob's ${size} bytes`);
  }
  if (range) {
    res.status(206).set({ 'Content-Range': `bytes ${range.start}-${range.end}/${size}`, 'Content-Length': String(range.end - range.start + 1) });
  } else {
    res.status(200).set('Content-Length', String(size));
  }
  return range;
}
