"""The console's log follower (console/src/logstream.js) under Node: server-sent events split
anywhere across chunks, comments skipped, `end` resolves, `error` and an early close reject (so
that the job page falls back to polling). Skips where Node is not installed."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "console" / "src" / "logstream.js"

SCRIPT = r"""
import { followLog, parseEvents } from %(module)s
const enc = new TextEncoder()
function answer (chunks, status = 200) {
  globalThis.fetch = async (path, init) => {
    globalThis.seen = { path, auth: init.headers.Authorization }
    if (status !== 200) return new Response(JSON.stringify({ message: 'cannot stream logs' }), { status })
    return new Response(new ReadableStream({ start (c) { for (const x of chunks) c.enqueue(enc.encode(x)); c.close() } }))
  }
}
async function run (chunks, status) {
  answer(chunks, status)
  const lines = []
  try {
    const end = await followLog('/v1/jobs/j-1/logs?follow=true', { token: 'tyk_x', onLine: (l) => lines.push(l) })
    return { lines, end, seen: globalThis.seen }
  } catch (e) { return { lines, error: e.message, status: e.status ?? null } }
}
const whole = ': following\n\nid: 1\ndata: first line\n\n: keep-alive\n\nid: 2\ndata: second: with colon\n\nevent: end\ndata: {"state": "SUCCEEDED", "phase": "SUCCEEDED"}\n\n'
const out = {
  whole: await run([whole]),
  split: await run(whole.match(/[\s\S]{1,7}/g)),
  error: await run(['id: 1\ndata: a\n\n', 'event: error\ndata: {"message": "ray is gone"}\n\n']),
  early: await run(['id: 1\ndata: a\n\n']),
  refused: await run([], 502),
  crlf: parseEvents('data: x\r\n\r\ndata: y'),
}
console.log(JSON.stringify(out))
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node")
def test_log_follower_parses_the_stream_and_rejects_what_needs_a_fallback():
    script = SCRIPT % {"module": json.dumps(MODULE.as_uri())}
    done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for name in ("whole", "split"):
        assert out[name]["lines"] == ["first line", "second: with colon"], out[name]
        assert out[name]["end"] == {"state": "SUCCEEDED", "phase": "SUCCEEDED"}
        assert out[name]["seen"]["auth"] == "Bearer tyk_x"
    assert out["error"] == {"lines": ["a"], "error": "ray is gone", "status": None}
    assert out["early"]["lines"] == ["a"] and "closed before the job ended" in out["early"]["error"]
    assert out["refused"] == {"lines": [], "error": "cannot stream logs", "status": 502}
    assert out["crlf"] == {"events": [{"event": "message", "id": None, "data": "x"}], "rest": "data: y"}
