// The OCI grammar for repository names, tags and digests: shared by the
// routes that check what clients send and the token service that checks scopes.
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
export const NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
export const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
