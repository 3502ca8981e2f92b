import { createApp } from 'vue'
import { createRouter, createWebHistory } from 'vue-router'
import App from './App.vue'
import './style.css'
import { session } from './api.js'

const routes = [
  { path: '/', redirect: '/queue' },
  { path: '/login', component: () => import('./pages/Login.vue'), meta: { title: 'Sign in', open: true } },
  // the redirect URI registered at the issuer: the server's SSO_REDIRECT_PATH (GET /v1/auth/config)
  { path: '/auth/callback', component: () => import('./pages/AuthCallback.vue'), meta: { title: 'Signing in', open: true } },
  { path: '/queue', component: () => import('./pages/Queue.vue'), meta: { title: 'Queue' } },
  { path: '/jobs', component: () => import('./pages/Jobs.vue'), meta: { title: 'Jobs' } },
  { path: '/jobs/:id', component: () => import('./pages/Job.vue'), meta: { title: 'Job' }, props: true },
  { path: '/sweeps', component: () => import('./pages/Sweeps.vue'), meta: { title: 'Sweeps' } },
  { path: '/sweeps/:id', component: () => import('./pages/Sweep.vue'), meta: { title: 'Sweep' }, props: true },
  { path: '/models', component: () => import('./pages/Models.vue'), meta: { title: 'Models and endpoints' } },
  { path: '/models/:name', component: () => import('./pages/Endpoint.vue'), meta: { title: 'Endpoint' }, props: true },
  { path: '/clusters', component: () => import('./pages/Clusters.vue'), meta: { title: 'Clusters' } },
  { path: '/submit', component: () => import('./pages/Submit.vue'), meta: { title: 'Submit' } },
  { path: '/:rest(.*)*', component: () => import('./pages/NotFound.vue'), meta: { title: 'Not found' } }
]

const router = createRouter({ history: createWebHistory(), routes })
router.beforeEach((to) => {
  if (!to.meta.open && !session.token) return { path: '/login', query: { next: to.fullPath } }
})
router.afterEach((to) => { document.title = `${to.meta.title} · Trainyard` })

createApp(App).use(router).mount('#app')
