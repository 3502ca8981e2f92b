// Follow a job's log over GET /v1/jobs/{id}/logs?follow=true (server-sent events) with fetch()
// and a stream reader: EventSource cannot send the Authorization header.

// Split `buffer` into complete events ({event, id, data}) and the unfinished rest; comments
// (`: keep-alive`) are dropped. Events end with a blank line; fields are `name: value`.
export function parseEvents (buffer) {
  const events = []
  const blocks = buffer.replace(/\r\n?/g, '\n').split('\n\n')
  const rest = blocks.pop()
  for (const block of blocks) {
    let event = 'message'
    let id = null
    const data = []
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const name = colon < 0 ? line : line.slice(0, colon)
      let value = colon < 0 ? '' : line.slice(colon + 1)
      if (value.startsWith(' ')) value = value.slice(1)
      if (name === 'event') event = value
      else if (name === 'id') id = value
      else if (name === 'data') data.push(value)
    }
    if (data.length || event !== 'message') events.push({ event, id, data: data.join('\n') })
  }
  return { events, rest }
}

export class StreamError extends Error {
  constructor (message, status) { super(message); this.status = status }
}

// Resolves with the `end` event's data ({state, phase}) once the job ended; calls onLine(text)
// per log line. Rejects with a StreamError when the stream cannot start, breaks off or reports
// an error: the caller falls back to polling.
export async function followLog (path, { token, signal, onLine }) {
  const headers = { Accept: 'text/event-stream' }
  if (token) headers.Authorization = `Bearer ${token}`
  const res = await fetch(path, { headers, signal })
  if (!res.ok || !res.body) {
    let message = `HTTP ${res.status}`
    try { message = (await res.json()).message || message } catch { /* not JSON */ }
    throw new StreamError(message, res.status)
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) throw new StreamError('the log stream closed before the job ended')
    const parsed = parseEvents(buffer + value)
    buffer = parsed.rest
    for (const ev of parsed.events) {
      if (ev.event === 'end') { reader.cancel().catch(() => {}); return JSON.parse(ev.data || '{}') }
      if (ev.event === 'error') {
        let message = 'the log stream failed'
        try { message = JSON.parse(ev.data).message || message } catch { /* plain text */ }
        throw new StreamError(message)
      }
      if (ev.event === 'message') onLine(ev.data)
    }
  }
}
