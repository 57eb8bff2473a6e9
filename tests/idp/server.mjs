// OpenID Connect identity provider for Deputy's tests, built on oidc-provider.
//
//   node server.mjs --port 0 --config idp.json
//
// Listens on 127.0.0.1 only, issuer http://127.0.0.1:<port>. When ready it
// prints one JSON line to stdout: {"issuer": "...", "port": N}. Exits on
// SIGTERM / SIGINT. All state (keys, sessions, codes) is in memory.
//
// Config file (JSON):
//   {
//     "clients":  [ oidc-provider client metadata, e.g.
//                   {"client_id", "client_secret", "redirect_uris",
//                    "grant_types", "response_types", "token_endpoint_auth_method"} ],
//     "accounts": [ {"sub", "email", "email_verified", "name", "groups": [..], "password"} ]
//   }
//
// Interaction: GET /interaction/<uid> shows a plain login form (fields
// `login` = sub or email, `password`). Consent has no page: it is granted
// automatically for whatever the configured client asked for.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    config: { type: 'string' },
  },
});
if (!args.config) {
  console.error('usage: node server.mjs --port <port|0> --config <file.json>');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(args.config, 'utf8'));
const clients = config.clients ?? [];
const accounts = config.accounts ?? [];

// Signing keys, new on every start. The first key of a type is the one used
// for signing: RS256 for ID tokens and JWT access tokens (the defaults), and
// ES256 available for clients that ask for it (id_token_signed_response_alg).
function signingKey(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const kid = `${alg.toLowerCase()}-${crypto.randomUUID()}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}
const jwks = {
  keys: [
    signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
    signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
  ],
};

function findAccountBySub(sub) {
  return accounts.find((a) => a.sub === sub);
}

function findAccountByLogin(login) {
  return accounts.find((a) => a.sub === login || (a.email && a.email === login));
}

function passwordMatches(account, password) {
  const a = Buffer.from(String(account?.password ?? ''));
  const b = Buffer.from(String(password ?? ''));
  return account !== undefined && a.length === b.length && crypto.timingSafeEqual(a, b);
}

// The issuer must carry the real port, so listen first, then build the provider.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients,
  jwks,
  cookies: {
    // Plain http on loopback: signed cookies without the `secure` flag, and
    // SameSite=Lax (a browser drops SameSite=None cookies that are not secure).
    keys: [crypto.randomBytes(32).toString('base64url')],
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  // scope -> claims it releases. Scopes named here are also advertised.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put scope-requested claims (email, name, groups) in the ID token itself,
  // not only at the userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: {
    methods: ['S256'],
    required: () => true, // for every client, confidential ones too
  },
  features: {
    devInteractions: { enabled: false }, // our own pages below
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Any absolute-URI resource is accepted. Tokens for a resource are JWTs
      // (RFC 9068, header typ "at+jwt", RS256) with aud = the resource and,
      // for client_credentials, sub = client_id. Scopes the request asks for
      // are granted.
      async getResourceServerInfo(ctx) {
        return {
          scope: ctx.oidc.params?.scope ?? '',
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  async findAccount(ctx, sub) {
    const account = findAccountBySub(sub);
    if (!account) return undefined;
    return {
      accountId: account.sub,
      async claims() {
        const { password, ...claims } = account;
        return claims;
      },
    };
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
});

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(res, uid, { error, login } = {}) {
  const body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to the test identity provider</h1>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}">
  <label>Login <input type="text" name="login" value="${escapeHtml(login ?? '')}" autofocus></label>
  <label>Password <input type="password" name="password"></label>
  <button type="submit">Sign in</button>
</form>
</body></html>
`;
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Consent without a page: grant exactly what the client asked for.
async function grantConsent(req, res, details) {
  const { prompt, params, session, grantId: existingGrantId } = details;
  const grant = existingGrantId
    ? await provider.Grant.find(existingGrantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  const consent = existingGrantId ? {} : { grantId };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function handleInteraction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { name } = details.prompt;

  if (req.method === 'GET' && name === 'login') return loginPage(res, uid);
  if (req.method === 'GET' && name === 'consent') return grantConsent(req, res, details);
  if (req.method === 'POST' && name === 'login') {
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    const account = findAccountByLogin(login);
    if (!passwordMatches(account, form.get('password'))) {
      return loginPage(res, uid, { error: 'Invalid login or password.', login });
    }
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: account.sub } },
      { mergeWithLastSubmission: false },
    );
  }
  res.statusCode = 400;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(`unexpected ${req.method} for prompt ${name}\n`);
}

const providerCallback = provider.callback();
server.on('request', (req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(new URL(req.url, issuer).pathname);
  if (!match) return providerCallback(req, res);
  return handleInteraction(req, res, match[1]).catch((err) => {
    // e.g. expired or unknown interaction (cookie missing)
    if (!res.headersSent) {
      res.statusCode = 400;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end(`interaction error: ${err.message}\n`);
    } else {
      res.end();
    }
  });
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
