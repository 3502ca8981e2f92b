// Load now, then again every `ms` while `active()` says so; stops with the component.
import { onBeforeUnmount, ref } from 'vue'

export function usePoll (load, { ms = 2000, active = () => true } = {}) {
  const error = ref(null)
  const loading = ref(true)
  let timer = null
  let stopped = false
  async function tick () {
    try {
      await load()
      error.value = null
    } catch (e) {
      error.value = e
    } finally {
      loading.value = false
    }
    if (!stopped && active()) timer = setTimeout(tick, ms)
  }
  tick()
  onBeforeUnmount(() => { stopped = true; clearTimeout(timer) })
  return { error, loading, refresh: tick }
}
