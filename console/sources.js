// The files a build is made from, and their digest: the build records it (build-info.json) and
// tests/unit/test_console_build.py recomputes it in Python, so that a source change without a
// rebuild fails CI even on a machine with no Node. Keep the two definitions in step.
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, relative, sep } from 'node:path'

export const ROOTS = ['index.html', 'package.json', 'package-lock.json', 'vite.config.js', 'sources.js', 'src']

function walk (dir, out) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path, out)
    else out.push(path)
  }
}

export function sourceDigest (base) {
  const files = []
  for (const root of ROOTS) {
    const path = join(base, root)
    if (statSync(path).isDirectory()) walk(path, files)
    else files.push(path)
  }
  const names = files.map((f) => relative(base, f).split(sep).join('/')).sort()
  const hash = createHash('sha256')
  for (const name of names) {
    hash.update(name + '\0')
    hash.update(readFileSync(join(base, name)))
    hash.update('\0')
  }
  return hash.digest('hex')
}
