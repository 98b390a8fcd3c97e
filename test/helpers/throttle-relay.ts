// A TCP relay in front of a local server whose answers trickle at a fixed
// rate: it keeps a download in flight long enough for a test to act in the
// middle of it (kill the daemon, drop a client) on any machine, however fast.
import net from 'node:net';

export interface ThrottleRelay {
  port: number;
  close(): Promise<void>;
}

/** Relay 127.0.0.1:<returned port> to 127.0.0.1:`target`, answers limited to `bytesPerSecond`. */
export async function startThrottleRelay(target: number, bytesPerSecond: number): Promise<ThrottleRelay> {
  const relay = net.createServer((client) => {
    const server = net.connect(target, '127.0.0.1');
    client.pipe(server);
    server.on('data', (chunk: Buffer) => {
      if (!client.write(chunk)) server.pause();
      server.pause();
      setTimeout(() => server.resume(), Math.ceil((chunk.length / bytesPerSecond) * 1000));
    });
    client.on('drain', () => server.resume());
    server.on('end', () => client.end());
    const drop = () => {
      client.destroy();
      server.destroy();
    };
    client.on('error', drop);
    server.on('error', drop);
    client.on('close', drop);
    server.on('close', drop);
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
  return {
    port: (relay.address() as net.AddressInfo).port,
    close: () => new Promise((r) => relay.close(() => r())),
  };
}
