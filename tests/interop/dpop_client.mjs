// A DPoP client nobody on this project wrote: panva's oauth4webapi, driven end to end.
//
// It asks oidc-provider for a DPoP-bound token (client_credentials, RFC 9449 §5), then
// calls the API at each URL given with oauth4webapi's own proofs, retrying once when
// the API asks for a nonce (use_dpop_nonce + DPoP-Nonce, RFC 9449 §8), as its docs say
// a client should. The proofs' typ, jwk, htm, htu, ath, iat, jti and nonce are all
// oauth4webapi's making, so this proves bearerguard's verifier against them.
//
// Usage: node dpop_client.mjs ISSUER CLIENT_ID CLIENT_SECRET RESOURCE ALG URL [URL...]
// Prints ONE JSON line: {"jkt", "token_type", "calls": [{"url", "status", "retried",
// "body" | "error" and "challenges"}]}.
import process from 'node:process';

import * as oauth from 'oauth4webapi';

const [issuerUrl, clientId, clientSecret, resource, alg, ...urls] = process.argv.slice(2);
const insecure = { [oauth.allowInsecureRequests]: true }; // 127.0.0.1 only, in tests

const issuer = new URL(issuerUrl);
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, insecure),
);
const client = { client_id: clientId };
const keyPair = await oauth.generateKeyPair(alg);
const DPoP = oauth.DPoP(client, keyPair);

const tokenResponse = await oauth.clientCredentialsGrantRequest(
  as,
  client,
  oauth.ClientSecretBasic(clientSecret),
  new URLSearchParams({ resource, scope: 'read:items write:items' }),
  { DPoP, ...insecure },
);
const token = await oauth.processClientCredentialsResponse(as, client, tokenResponse);

async function call(url) {
  let retried = false;
  for (;;) {
    try {
      const response = await oauth.protectedResourceRequest(
        token.access_token,
        'GET',
        new URL(url),
        new Headers(),
        null,
        { DPoP, ...insecure },
      );
      return { url, status: response.status, retried, body: await response.json() };
    } catch (error) {
      if (!retried && oauth.isDPoPNonceError(error)) {
        retried = true; // the handle has taken the DPoP-Nonce header: once more
        continue;
      }
      const status = error.response?.status ?? null;
      // oauth4webapi's own reading of the WWW-Authenticate header (every challenge in it).
      const challenges = Array.isArray(error.cause)
        ? error.cause.map((c) => ({ scheme: c.scheme, parameters: c.parameters }))
        : [];
      return { url, status, retried, error: `${error.name}: ${error.message}`, challenges };
    }
  }
}

const calls = [];
for (const url of urls) calls.push(await call(url));
process.stdout.write(`${JSON.stringify({
  jkt: await DPoP.calculateThumbprint(),
  token_type: token.token_type,
  calls,
})}\n`);
