// The Host header's grammar (host [":" port]): a name or IPv4 address, or an
// IPv6 literal in brackets. Whatever builds a URL from a client's Host checks
// it first: a malformed one is the client's error (400), never a crash.
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::\d{1,5})?$/;

export function isValidHost(value: string): boolean {
  if (!HOST.test(value)) return false;
  try {
    return new URL(`http://${value}/`).host !== '';
  } catch {
    return false;
  }
}
