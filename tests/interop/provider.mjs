// A real third-party authorization server (panva/oidc-provider) on 127.0.0.1 for
// bearerguard's interop tests: nobody on this project wrote the tokens it mints.
//
// Usage: node provider.mjs [--port N] [--ttl SECONDS] [--keys-file PATH]
//   --port / INTEROP_PORT          0 (default) picks a free port
//   --ttl / INTEROP_TTL            access token lifetime in seconds (default 300)
//   --keys-file / INTEROP_KEYS     keep the key set in this file, so a restart on the
//                                  same port serves the same keys (outage tests)
//   --watch-stdin                  exit when stdin closes, so a killed parent leaves no orphan
//
// On start it prints ONE JSON line on stdout (issuer, port, clients, resources, kids);
// everything else goes to stderr. Test-only controls on the same listener:
//   POST /__admin/rotate         new RS256+ES256 keys sign from now on, old keys stay published
//   POST /__admin/drop-old-keys  only the current keys stay published
//   GET  /__admin/state          current and published kids
// Per-request knobs on the token endpoint (headers, so the grant stays standard):
//   X-Interop-Alg: ES256|RS256   signing alg of a JWT access token (default RS256)
//   X-Interop-TTL: SECONDS       lifetime of this one access token
//   X-Interop-Client-Cert: PEM   (URL-encoded) the client certificate a TLS proxy would
//                                forward; tokens of interop-mtls-client are bound to it
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import http from 'node:http';
import process from 'node:process';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.INTEROP_PORT ?? '0' },
    ttl: { type: 'string', default: process.env.INTEROP_TTL ?? '300' },
    'keys-file': { type: 'string', default: process.env.INTEROP_KEYS ?? '' },
    'watch-stdin': { type: 'boolean', default: false },
  },
});

const HOST = '127.0.0.1';
const DEFAULT_TTL = positiveInt(args.ttl, 'ttl');
const SIGNING_ALGS = ['RS256', 'ES256'];

const RESOURCES = {
  jwt: 'https://api.example.test/jwt',
  opaque: 'https://api.example.test/opaque',
  // Another API of the same issuer: its JWTs must not open the first one.
  other_jwt: 'https://other.example.test/jwt',
};
const JWT_RESOURCES = new Set([RESOURCES.jwt, RESOURCES.other_jwt]);
const SCOPES = ['read:items', 'write:items'];

// Fixed credentials: this server only ever listens on loopback for a test run.
const CLIENTS = {
  client: { client_id: 'interop-client', client_secret: 'interop-client-secret-0123456789abcdef' },
  resource_server: { client_id: 'interop-rs', client_secret: 'interop-rs-secret-0123456789abcdef' },
  resource_server_post: {
    client_id: 'interop-rs-post',
    client_secret: 'interop-rs-post-secret-0123456789abcdef',
  },
  // RFC 8705 §3: its tokens are bound to the client certificate it presents.
  mtls_client: {
    client_id: 'interop-mtls-client',
    client_secret: 'interop-mtls-client-secret-0123456789abcdef',
  },
};
const RESOURCE_SERVER_CLIENTS = new Set([
  CLIENTS.resource_server.client_id,
  CLIENTS.resource_server_post.client_id,
]);

function positiveInt(value, name) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new TypeError(`--${name} must be a non-negative integer, got ${JSON.stringify(value)}`);
  }
  return n;
}

function log(message) {
  process.stderr.write(`[interop-provider] ${message}\n`);
}

// ---------------------------------------------------------------- keys

let generation = 0;

function newKeyPair(alg) {
  generation += 1;
  const tag = `${alg.toLowerCase()}-${generation}-${randomBytes(4).toString('hex')}`;
  const { privateKey } = alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: tag, alg, use: 'sig' };
}

function newKeySet() {
  return Object.fromEntries(SIGNING_ALGS.map((alg) => [alg, newKeyPair(alg)]));
}

/** The key state: which key signs per alg, and every key still published. */
log(`starting (pid ${process.pid})`);
const keys = loadKeys() ?? { current: newKeySet(), retired: [] };
saveKeys();
log(`keys ready: ${publishedKeys().map((k) => k.kid).join(' ')}`);

function loadKeys() {
  if (!args['keys-file'] || !existsSync(args['keys-file'])) return undefined;
  const stored = JSON.parse(readFileSync(args['keys-file'], 'utf8'));
  generation = stored.generation ?? 0;
  return { current: stored.current, retired: stored.retired };
}

function saveKeys() {
  if (!args['keys-file']) return;
  const tmp = `${args['keys-file']}.tmp`;
  writeFileSync(tmp, JSON.stringify({ generation, ...keys }), { mode: 0o600 });
  renameSync(tmp, args['keys-file']);
}

function publishedKeys() {
  // The current keys first, so nothing that picks "the first matching key" picks an old one.
  return [...Object.values(keys.current), ...keys.retired];
}

function kidState() {
  return {
    current: Object.fromEntries(Object.entries(keys.current).map(([alg, k]) => [alg, k.kid])),
    published: publishedKeys().map((k) => k.kid),
  };
}

// ---------------------------------------------------------------- token store

/**
 * One in-memory store shared by every Provider instance built in this process, so a
 * key rotation (which builds a new Provider) keeps every token issued so far.
 */
class SharedStore {
  #entries = new Map();

  get(key) {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.#entries.set(key, { value, expiresAt });
  }

  delete(key) {
    this.#entries.delete(key);
  }

  deleteWhere(predicate) {
    for (const [key, entry] of this.#entries) {
      if (predicate(entry.value)) this.#entries.delete(key);
    }
  }
}

const store = new SharedStore();

/** The oidc-provider adapter interface over the shared store, one instance per model. */
class SharedAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), payload, expiresIn);
    if (payload.uid) store.set(`uid:${payload.uid}`, id, expiresIn);
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, id, expiresIn);
  }

  async find(id) {
    return store.get(this.key(id));
  }

  async findByUid(uid) {
    const id = store.get(`uid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = store.get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = store.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    store.deleteWhere((payload) => payload?.grantId === grantId);
  }
}

// ---------------------------------------------------------------- provider

function requestedAlg(ctx) {
  const alg = ctx.get('x-interop-alg') || 'RS256';
  if (!SIGNING_ALGS.includes(alg)) {
    throw new errors.InvalidRequest(`X-Interop-Alg must be one of ${SIGNING_ALGS.join(', ')}`);
  }
  return alg;
}

function requestedTtl(ctx) {
  const header = ctx.get('x-interop-ttl');
  if (!header) return DEFAULT_TTL;
  const ttl = Number(header);
  if (!Number.isInteger(ttl) || ttl < 1) {
    throw new errors.InvalidRequest('X-Interop-TTL must be a positive integer');
  }
  return ttl;
}

function buildProvider(issuer) {
  const configuration = {
    adapter: SharedAdapter,
    clients: [
      {
        ...CLIENTS.client,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: SCOPES.join(' '),
      },
      {
        ...CLIENTS.mtls_client,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: SCOPES.join(' '),
        tls_client_certificate_bound_access_tokens: true,
      },
      {
        ...CLIENTS.resource_server,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        ...CLIENTS.resource_server_post,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    jwks: { keys: publishedKeys() },
    scopes: SCOPES,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // A resource server may introspect any token; a client only its own.
        allowedPolicy: async (_ctx, client, token) => RESOURCE_SERVER_CLIENTS.has(client.clientId)
          || token.clientId === client.clientId,
      },
      revocation: { enabled: true },
      // RFC 9449: a token request with a DPoP proof gets a token bound to its key
      // (cnf.jkt in the JWT, and in the introspection answer of an opaque one).
      dPoP: { enabled: true },
      // RFC 8705 certificate-bound tokens. No TLS here: the test client's certificate
      // arrives as a URL-encoded PEM in X-Interop-Client-Cert, as a TLS-terminating
      // proxy would forward it; the provider hashes it into cnf["x5t#S256"].
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        getCertificate: (ctx) => {
          const header = ctx.get('x-interop-client-cert');
          return header ? decodeURIComponent(header) : undefined;
        },
        certificateAuthorized: () => true,
        certificateSubjectMatches: () => false,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          const scope = SCOPES.join(' ');
          const accessTokenTTL = requestedTtl(ctx);
          if (JWT_RESOURCES.has(resourceIndicator)) {
            const alg = requestedAlg(ctx);
            return {
              scope,
              accessTokenTTL,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg, kid: keys.current[alg].kid } },
            };
          }
          if (resourceIndicator === RESOURCES.opaque) {
            return { scope, accessTokenTTL, accessTokenFormat: 'opaque' };
          }
          throw new errors.InvalidTarget();
        },
      },
    },
    // Every token here comes from a resource indicator; these only cover the rest.
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? DEFAULT_TTL,
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? DEFAULT_TTL,
    },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // A client_credentials-only server: no end-user, no interactions.
    findAccount: async () => undefined,
  };
  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (_ctx, error) => log(`server_error: ${error.stack ?? error}`));
  return provider;
}

// ---------------------------------------------------------------- listener

const server = http.createServer();
let issuer;
let handler;

function rebuild() {
  handler = buildProvider(issuer).callback();
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function admin(req, res) {
  const route = `${req.method} ${req.url}`;
  if (route === 'POST /__admin/rotate') {
    keys.retired = [...Object.values(keys.current), ...keys.retired];
    keys.current = newKeySet();
  } else if (route === 'POST /__admin/drop-old-keys') {
    keys.retired = [];
  } else if (route !== 'GET /__admin/state') {
    sendJson(res, 404, { error: 'unknown admin route' });
    return;
  }
  if (req.method === 'POST') {
    saveKeys();
    rebuild();
    log(`${req.url}: signing with ${JSON.stringify(kidState().current)}`);
  }
  sendJson(res, 200, kidState());
}

server.on('request', (req, res) => {
  if (req.url.startsWith('/__admin/')) {
    req.resume();
    admin(req, res);
    return;
  }
  handler(req, res);
});

server.listen(positiveInt(args.port, 'port'), HOST, () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;
  rebuild();
  const ready = {
    issuer,
    port,
    pid: process.pid,
    discovery: `${issuer}/.well-known/openid-configuration`,
    ttl: DEFAULT_TTL,
    resources: RESOURCES,
    scopes: SCOPES,
    clients: CLIENTS,
    kids: kidState(),
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
});

server.on('error', (error) => {
  log(`listen failed: ${error.message}`);
  process.exit(1);
});

function shutdown(signal) {
  log(`${signal}: closing`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (args['watch-stdin']) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
