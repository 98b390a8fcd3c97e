// A throwaway PKI made by openssl for each test file: a CA, a server
// certificate for localhost/127.0.0.1, CA-signed client certificates, and a
// self-signed "rogue" certificate whose CN is a trusted name.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertPair {
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  ca: string;
  caKey: string;
  server: CertPair;
  /** A CA-signed client certificate with the given CN (made on demand). */
  client(cn: string): CertPair;
  /** A self-signed certificate with the given CN: must never be trusted. */
  rogue(cn: string): CertPair;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-pki-'));
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '30', '-subj', '/CN=Test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  const signed = (name: string, cn: string, ext: string): CertPair => {
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '30', '-out', `${name}.crt`, '-extfile', `${name}.ext`], dir);
    return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  };
  const server = signed('server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  const clients = new Map<string, CertPair>();
  let n = 0;
  return {
    dir,
    ca: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    server,
    client(cn) {
      if (!clients.has(cn)) clients.set(cn, signed(`client${n++}`, cn, 'extendedKeyUsage=clientAuth\n'));
      return clients.get(cn)!;
    },
    rogue(cn) {
      const name = `rogue${n++}`;
      openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '30', '-subj', `/CN=${cn}`,
        '-addext', 'extendedKeyUsage=clientAuth'], dir);
      return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
    },
  };
}
