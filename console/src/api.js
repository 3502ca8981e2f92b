// Every call goes through here: the token from sessionStorage as `Authorization: Bearer`, and
// the server's one error shape (error, message, issues) turned into an ApiError.
import { reactive } from 'vue'

const KEY = 'trainyard.token'

export const session = reactive({ me: null, token: sessionStorage.getItem(KEY) })

export class ApiError extends Error {
  constructor (status, body) {
    super((body && body.message) || `HTTP ${status}`)
    this.status = status
    this.code = body && body.error
    this.issues = (body && body.issues) || []
  }
}

export function logout () {
  sessionStorage.removeItem(KEY)
  session.token = null
  session.me = null
}

export async function api (path, { method = 'GET', body, text = false, token } = {}) {
  const headers = { Accept: text ? 'text/plain' : 'application/json' }
  // token 'none': a public call (the sign-on settings), without the session's token
  const bearer = token === 'none' ? null : (token || session.token)
  if (bearer) headers.Authorization = `Bearer ${bearer}`
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  if (!res.ok) {
    let data = null
    try { data = await res.json() } catch { /* not JSON: the status says enough */ }
    if (res.status === 401 && !token) logout()
    throw new ApiError(res.status, data)
  }
  if (text) return { text: await res.text(), headers: res.headers }
  return res.status === 204 ? null : res.json()
}

export async function login (token) {
  const me = await api('/v1/me', { token })
  sessionStorage.setItem(KEY, token)
  session.token = token
  session.me = me
  return me
}

export async function loadMe () {
  if (session.token && !session.me) session.me = await api('/v1/me')
  return session.me
}

const RANK = { viewer: 1, member: 2, maintainer: 3, admin: 4 }

// What the caller may do in a project, by the roles GET /v1/me gave: the server checks again.
export function can (project, need) {
  const me = session.me
  if (!me) return false
  if (me.admin) return true
  return (RANK[me.projects[project]] || 0) >= RANK[need]
}

export function canCancel (job) {
  const me = session.me
  if (!me || !job) return false
  return can(job.project, 'maintainer') || (can(job.project, 'member') && job.owner === me.user)
}

export const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED'])

export function fmtTime (iso) {
  if (!iso) return '—'
  const d = new Date(iso)
  return d.toISOString().replace('T', ' ').slice(0, 19) + 'Z'
}

export function fmtNum (v, digits = 4) {
  if (v === null || v === undefined) return '—'
  if (typeof v !== 'number') return String(v)
  return Number.isInteger(v) ? String(v) : v.toPrecision(digits)
}
