// A large response body read without node's http parser, into memory that is
// lent to the reader and reused. The parser copies every body chunk into a
// new buffer, and relaying a 1 GiB blob on demand then spent about 40% of
// the daemon's CPU on that copy, its page faults and the collector freeing
// the copies (perf: parser 14%, concurrent marking and sweeping 24%).
//
// Once the response head is parsed, the connection's reads (ReadBufferAgent
// in http-upstream.ts) go to the body instead of the parser: each read lands
// in a slab of this body, and the body gives out views of it. The reader
// gives every view back (release) when it no longer uses it, and a slab whose
// views are all given back takes later reads. Invariants:
// - a view is never overwritten before it is given back;
// - the body is exactly Content-Length bytes: a connection that ends or
//   fails before that fails the body, bytes past it are never given;
// - the connection is never reused (the parser saw only part of the body):
//   it is closed at the end;
// - backpressure holds: the connection stops reading while the reader does.
import type http from 'node:http';
import type net from 'node:net';
import { Readable } from 'node:stream';

/** Where a connection's reads go instead of its parser (see ReadBufferAgent). */
export interface ReadSink {
  /** The memory the next read lands in. */
  nextBuffer(): Uint8Array;
  /** `n` bytes were read into `buf`. */
  onRead(n: number, buf: Uint8Array): void;
}

/** A socket of ReadBufferAgent: the agent routes its reads to `[READ_SINK]` when set. */
export const READ_SINK = Symbol('read sink');
export type SinkSocket = net.Socket & { [READ_SINK]?: ReadSink | undefined };

/** Bodies smaller than this stay with the parser (and the connection is kept alive). */
export const LEND_MIN_BYTES = 4 * 1024 * 1024;
/** Memory reads land in; each is reused once all its views are given back. */
const SLAB_BYTES = 1024 * 1024;
/** One read at most (what the kernel holds, up to this). */
const READ_BYTES = 256 * 1024;
/** A slab with less room than this left takes no more reads. */
const MIN_READ_BYTES = 64 * 1024;
/** Slabs kept for reuse once free; more are left to the collector. */
const SPARE_SLABS = 4;

/** A body whose chunks are views of lent memory: each is to be given back once unused. */
export class LentBody extends Readable implements ReadSink {
  private remaining: number;
  private slab: Buffer;
  private offset = 0;
  /** The memory of the read in flight, when it is a slab's. */
  private reading: Uint8Array | undefined;
  /** Views not yet given back, by slab. */
  private readonly lent = new Map<ArrayBufferLike, number>();
  private readonly spare: Buffer[] = [];
  private paused = false;
  /** Why the connection went: the response's own error when there is one. */
  private reason: Error | undefined;

  constructor(
    res: http.IncomingMessage,
    private readonly socket: SinkSocket,
    length: number,
    already: Buffer[],
  ) {
    super({ highWaterMark: SLAB_BYTES });
    this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    let taken = 0;
    for (const chunk of already) {
      taken += chunk.length;
      this.push(chunk); // the parser's own copies: nothing to give back
    }
    this.remaining = length - taken;
    res.on('error', (err) => (this.reason ??= err));
    socket.once('close', () => setImmediate(() => this.cut()));
    socket[READ_SINK] = this;
    if (this.remaining <= 0) this.finish();
  }

  /** Give a chunk of this body back: its memory may take later reads. */
  release(chunk: Buffer): void {
    const n = this.lent.get(chunk.buffer);
    if (n === undefined) return; // not lent (the parser's copies)
    if (n > 1) return void this.lent.set(chunk.buffer, n - 1);
    this.lent.delete(chunk.buffer);
    if (chunk.buffer !== this.slab.buffer && this.spare.length < SPARE_SLABS) this.spare.push(Buffer.from(chunk.buffer, 0, SLAB_BYTES));
  }

  nextBuffer(): Uint8Array {
    if (SLAB_BYTES - this.offset < MIN_READ_BYTES) {
      // The slab is full: a new one (its views go back as the reader is done with them).
      if (!this.lent.has(this.slab.buffer) && this.spare.length < SPARE_SLABS) this.spare.push(this.slab);
      const spare = this.spare.pop();
      // A spare never has views out (the test of held chunks proves it); never read into one that has, whatever happens.
      this.slab = spare && !this.lent.has(spare.buffer) ? spare : Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.offset = 0;
    }
    this.reading = this.slab.subarray(this.offset, Math.min(SLAB_BYTES, this.offset + READ_BYTES));
    return this.reading;
  }

  onRead(n: number, buf: Uint8Array): void {
    if (this.remaining <= 0) return;
    const take = Math.min(n, this.remaining);
    let view: Buffer;
    if (buf === this.reading) {
      view = this.slab.subarray(this.offset, this.offset + take);
      this.offset += n;
      this.lent.set(this.slab.buffer, (this.lent.get(this.slab.buffer) ?? 0) + 1);
    } else {
      // The read was set up before the body took the connection: its memory is the pool's.
      view = Buffer.from(Buffer.from(buf.buffer, buf.byteOffset, take));
    }
    this.reading = undefined;
    this.remaining -= take;
    if (!this.push(view) && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
    if (this.remaining <= 0) this.finish();
  }

  override _read(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.socket[READ_SINK] = undefined;
    this.socket.destroy();
    callback(err);
  }

  private finish(): void {
    this.socket[READ_SINK] = undefined;
    this.push(null);
    // Never reused: its parser is mid-body.
    setImmediate(() => this.socket.destroy());
  }

  /** The connection closed: an error unless every byte came. */
  private cut(): void {
    if (this.remaining <= 0 || this.destroyed) return;
    this.destroy(this.reason ?? new Error(`the connection closed ${this.remaining} bytes before the end of the body`));
  }
}

/**
 * Take the body of `res` off its parser, when it is worth it and possible: a
 * plain connection of ReadBufferAgent, a Content-Length of LEND_MIN_BYTES or
 * more, no transfer coding, nothing read of it yet. Otherwise undefined: read
 * `res` itself.
 */
export function lendBody(res: http.IncomingMessage, minBytes = LEND_MIN_BYTES): LentBody | undefined {
  const socket = res.socket as SinkSocket | null;
  const header = res.headers['content-length'];
  if (!socket || !(READ_SINK in socket) || socket[READ_SINK] || socket.destroyed) return undefined;
  if (header === undefined || !/^\d+$/.test(header) || res.headers['transfer-encoding'] !== undefined) return undefined;
  const length = Number(header);
  if (length < minBytes || res.complete || res.readableFlowing !== null || res.readableDidRead) return undefined;
  // What the parser already took (the reads that came with the head) is buffered in `res`.
  const already: Buffer[] = [];
  for (let chunk: Buffer | null = res.read() as Buffer | null; chunk !== null; chunk = res.read() as Buffer | null) already.push(chunk);
  return new LentBody(res, socket, length, already);
}
