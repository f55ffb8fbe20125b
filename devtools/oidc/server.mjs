// Development OpenID Connect provider for the staff UI: node-oidc-provider (a certified
// OpenID Provider implementation) on loopback, with demo identities and a plain login form.
// Development and tests only: the users and their passwords below are public.
//
//   node server.mjs --port 8090 --client-id mailing-ui --client-secret dev-secret \
//        --redirect-uri http://127.0.0.1:8000/accounts/oidc/sso/login/callback/
//
// Prints "OIDC provider ready at <issuer>" on stdout once it listens.

import crypto from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8090' },
    'client-id': { type: 'string', default: 'mailing-ui' },
    'client-secret': { type: 'string', default: 'dev-secret' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: [] },
  },
});

// Demo identities. "demo" is staff (allowed domain and the staff group); "visitor" is a
// valid identity of the provider who is not staff, to show the refusal.
const USERS = {
  demo: {
    password: 'demo-password',
    claims: {
      email: 'demo@example.com', email_verified: true, name: 'Demo Staff',
      preferred_username: 'demo', groups: ['staff'],
    },
  },
  visitor: {
    password: 'visitor-password',
    claims: {
      email: 'visitor@outside.test', email_verified: true, name: 'Visiting Person',
      preferred_username: 'visitor', groups: [],
    },
  },
};

const issuer = `http://${args.host}:${args.port}`;
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'dev-1', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: args['redirect-uri'],
    post_logout_redirect_uris: args['post-logout-redirect-uri'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: false },
    // RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the mailing service's
    // sign-out sends the browser here, the session ends, the browser goes back.
    rpInitiatedLogout: { enabled: true, logoutSource },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...user.claims }) };
  },
  // First-party client: no consent screen; the grant covers what the client asked for.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'preferred_username', 'groups']);
    await grant.save();
    return grant;
  },
});
provider.proxy = false;

// The head of the provider's own pages (login, logout), in one look.
function pageHead(title, extraStyle = '') {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} - development identity provider</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;background:#eef2f7;margin:0;display:grid;place-items:center;min-height:100vh}
main{background:#fff;padding:2rem;border-radius:12px;box-shadow:0 4px 24px #0002;width:min(22rem,90vw)}
h1{font-size:1.25rem;margin:0 0 .25rem}p{color:#556;margin:.25rem 0 1rem}
label{display:block;font-weight:600;margin-top:.75rem}
input{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #99a;border-radius:6px;font:inherit}
input:focus,button:focus{outline:3px solid #7aa7ff;outline-offset:1px}
button{margin-top:1.25rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#2453c7;color:#fff;font:inherit;font-weight:600}
${extraStyle}
</style></head><body><main>`;
}

// The provider's own confirmation step of a sign-out (it asks, as real providers do when
// the request carries no ID token); `form` is the provider's hidden form to submit.
async function logoutSource(ctx, form) {
  ctx.body = `${pageHead('Sign out', 'button.secondary{background:#e3e7ef;color:#223;margin-top:.5rem}')}
<h1>Development identity provider</h1>
<p>Sign out of the identity provider too? The next sign-in will ask for your password.</p>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button>
<button class="secondary" type="submit" form="op.logoutForm">Stay signed in here</button>
</main></body></html>`;
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, error = '', login = '') {
  return `${pageHead('Sign in', '.error{color:#b00020;font-weight:600}')}
<h1>Development identity provider</h1>
<p>Sign in with a demo identity (for example <code>demo</code> / <code>demo-password</code>).</p>
${error ? `<p class="error" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label for="login">Username</label><input id="login" name="login" required value="${escape(login)}" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form></main></body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt } = details;
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(loginPage(uid));
    return;
  }
  if (req.method === 'POST' && req.url.endsWith('/login') && prompt.name === 'login') {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const user = USERS[login];
    const given = Buffer.from(form.get('password') || '');
    const expected = Buffer.from(user ? user.password : '');
    if (!user || given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(loginPage(uid, 'Unknown username or wrong password.', login));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    return;
  }
  res.writeHead(400, { 'content-type': 'text/plain' });
  res.end('unexpected interaction step');
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}`);
    });
    return;
  }
  callback(req, res);
});

server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  console.log(`OIDC provider ready at http://${args.host}:${port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
