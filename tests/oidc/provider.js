// A real OpenID provider (the certified `oidc-provider` package) on loopback, for the portal's
// single sign-on tests. Test data only: two users, one client, a signing key made at start.
//
//   node provider.js --port 9400 --redirect-uri http://localhost:8081/oidc/callback/ \
//     --post-logout-uri http://localhost:8081/admin/login/ [...]
//
// Besides the standard endpoints (discovery, authorization with PKCE, token, userinfo, JWKS),
// it serves a plain login form at /interaction/<uid> (a user name, no password), and, for the
// tests alone, POST /__test__/groups/<user> {"groups": [...]} to change a user's groups and
// POST /__test__/tamper {"aud": "..."} or {"expired": true} to make the next token response's
// id_token name another audience or be already expired (re-signed with the provider's own key,
// so only that claim is wrong).
import http from 'node:http';
import { parseArgs } from 'node:util';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '9400' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'post-logout-uri': { type: 'string', multiple: true, default: [] },
    'client-id': { type: 'string', default: 'ledger-portal' },
    'client-secret': { type: 'string', default: 'test-only-client-secret' },
  },
});
const issuer = `http://127.0.0.1:${args.port}`;

const users = {
  alice: { email: 'alice@example.test', groups: ['acme-governors', 'acme-approvers'] },
  nobody: { email: 'nobody@example.test', groups: [] },
};

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };
let tamper = null;

const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: args['redirect-uri'],
    post_logout_redirect_uris: args['post-logout-uri'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['test-only-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'], email: ['email'], profile: ['preferred_username'], groups: ['groups'],
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    if (!users[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, email: users[id].email, groups: [...users[id].groups] };
      },
    };
  },
  // no consent screen: the portal's client gets what it asks for
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && tamper && ctx.body?.id_token) {
    const claims = jose.decodeJwt(ctx.body.id_token);
    if (tamper.aud) claims.aud = tamper.aud;
    if (tamper.expired) {
      claims.iat -= 7200;
      claims.exp = claims.iat + 3600;
    }
    ctx.body.id_token = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid })
      .sign(privateKey);
    tamper = null;
  }
});

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, { error: 'interaction mismatch' });
  if (action === 'login' && req.method === 'POST') {
    const login = new URLSearchParams(await readBody(req)).get('login');
    if (users[login]) {
      return provider.interactionFinished(req, res, { login: { accountId: login } },
        { mergeWithLastSubmission: false });
    }
  }
  const page = `<!doctype html><title>Test IdP: sign in</title>
<h1>Test identity provider</h1><p>Signing in to ${escape(details.params.client_id)}</p>
<form method="post" action="/interaction/${escape(uid)}/login">
<label>User <input name="login" id="login" autofocus></label>
<button type="submit" id="idp-submit">Sign in</button></form>`;
  return send(res, 200, page, 'text/html; charset=utf-8');
}

async function testHook(req, res, path) {
  const body = JSON.parse((await readBody(req)) || '{}');
  const groupsOf = path.match(/^\/__test__\/groups\/([\w-]+)$/);
  if (req.method === 'POST' && groupsOf && users[groupsOf[1]]) {
    users[groupsOf[1]].groups = body.groups;
    return send(res, 200, users[groupsOf[1]]);
  }
  if (req.method === 'POST' && path === '/__test__/tamper') {
    tamper = body;
    return send(res, 200, { tamper });
  }
  return send(res, 404, { error: 'no such test hook' });
}

const providerCallback = provider.callback();
http.createServer(async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  try {
    if (path.startsWith('/__test__/')) return await testHook(req, res, path);
    const step = path.match(/^\/interaction\/([\w-]+)(?:\/(login))?$/);
    if (step) return await interaction(req, res, step[1], step[2]);
    return providerCallback(req, res);
  } catch (err) {
    return send(res, 500, { error: String(err) });
  }
}).listen(Number(args.port), '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${issuer}`);
});
