// Single sign-on for the console: the OpenID Connect authorization-code flow with PKCE, as a
// public client (no secret), by oidc-client-ts. The server says whether it is set up
// (GET /v1/auth/config). The library checks state and nonce and makes the PKCE verifier; the
// token the server's verifier accepts (the ID token when its audience is the console's client
// id, else the access token) is then used like a pasted API token (api.js, sessionStorage).
import { UserManager, WebStorageStateStore } from 'oidc-client-ts'
import { api, login } from './api.js'

let config = null

export async function authConfig () {
  if (!config) config = await api('/v1/auth/config', { token: 'none' }).catch(() => ({ sso: false }))
  return config
}

function manager (cfg) {
  // sessionStorage for the library's state too: nothing of a sign-on outlives the tab
  const store = new WebStorageStateStore({ store: window.sessionStorage })
  return new UserManager({
    authority: cfg.issuer,
    client_id: cfg.client_id,
    redirect_uri: window.location.origin + cfg.redirect_path,
    response_type: 'code',
    scope: cfg.scopes,
    stateStore: store,
    userStore: store,
    loadUserInfo: false,
    automaticSilentRenew: false,
    monitorSession: false
  })
}

function randomString () {
  const bytes = crypto.getRandomValues(new Uint8Array(24))
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

// only a path of this app: `next` comes from the URL, so it must not send the user elsewhere
export function safeNext (next) {
  return typeof next === 'string' && next.startsWith('/') && !next.startsWith('//') && !next.includes('\\')
    ? next : '/queue'
}

export async function startSignIn (next) {
  const cfg = await authConfig()
  if (!cfg.sso) throw new Error('single sign-on is not configured on this server')
  // the ID token must carry this nonce back (checked by the library against what it stored)
  await manager(cfg).signinRedirect({ nonce: randomString(), state: { next: safeNext(next) } })
}

export async function finishSignIn () {
  const cfg = await authConfig()
  if (!cfg.sso) throw new Error('single sign-on is not configured on this server')
  const mgr = manager(cfg)
  const user = await mgr.signinRedirectCallback()
  await mgr.removeUser() // the token is kept where a pasted one is, and nowhere else
  const token = cfg.token === 'access_token' ? user.access_token : user.id_token
  if (!token) throw new Error(`the issuer sent no ${cfg.token}`)
  await login(token)
  return safeNext(user.state && user.state.next)
}
