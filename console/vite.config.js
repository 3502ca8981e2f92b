import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import { fileURLToPath } from 'node:url'
import { sourceDigest } from './sources.js'

const here = fileURLToPath(new URL('.', import.meta.url))

// The build goes into the Python package, so that a wheel and an editable install both serve
// it without Node; TRAINYARD_CONSOLE_OUT moves it (the freshness test builds into a temp dir).
const outDir = process.env.TRAINYARD_CONSOLE_OUT || fileURLToPath(new URL('../platform/trainyard/console', import.meta.url))

function buildInfo () {
  return {
    name: 'trainyard-build-info',
    generateBundle () {
      this.emitFile({ type: 'asset', fileName: 'build-info.json',
        source: JSON.stringify({ sources_sha256: sourceDigest(here) }, null, 1) + '\n' })
    }
  }
}

export default defineConfig({
  plugins: [vue(), buildInfo()],
  base: '/',
  server: { fs: { allow: ['..'] }, proxy: { '/v1': 'http://127.0.0.1:8080' } },
  build: {
    outDir,
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
    rollupOptions: { output: { manualChunks: { echarts: ['echarts/core', 'echarts/charts', 'echarts/components', 'echarts/renderers'] } } }
  }
})
