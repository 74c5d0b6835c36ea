// A small OpenID Connect provider for the tests (node-oidc-provider, a certified implementation):
// static clients and accounts from $IDP_CONFIG (JSON), a `groups` claim, PKCE required, refresh
// tokens and RP-initiated logout. Its built-in login form takes an account's name and password.
// Started by tests/oidc_server.py; not for production.
import { createRequire } from 'node:module';

const require = createRequire(process.env.IDP_MODULES + '/');
const { default: Provider } = await import(require.resolve('oidc-provider'));
const config = JSON.parse(process.env.IDP_CONFIG);

const provider = new Provider(config.issuer, {
  clients: config.clients,
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email'], groups: ['groups'] },
  conformIdTokenClaims: false, // the claims in the ID token too, as Keycloak sends them
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: [config.cookie_key] },
  issueRefreshToken: async () => true,
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (!account || account.disabled) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account.claims }; } };
  },
});
// The tests change an account (its groups, disabled) as an admin would in the IdP's console:
// PUT /test/accounts/<id> with the account's JSON and the header X-Test-Key.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/test\/accounts\/([^/]+)$/);
  if (!match || ctx.method !== 'PUT') return next();
  if (ctx.get('x-test-key') !== config.cookie_key) { ctx.status = 403; return undefined; }
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  config.accounts[decodeURIComponent(match[1])] = JSON.parse(Buffer.concat(chunks).toString());
  ctx.status = 204;
  return undefined;
});
provider.proxy = false;
provider.listen(config.port, '127.0.0.1', () => console.log(`listening ${config.issuer}`));
