"""The Python SDK: `trainyard.Client`. A thin HTTP client over the REST API.

    import trainyard
    client = trainyard.Client()                 # see "Which server" below
    job = client.submit_job("examples/cnn.yaml")
    final = client.wait_job(job["id"], on_progress=print)

Answers are the API's typed models (trainyard.apitypes): `job.id`, `job.state`. Dict-style
access (`job["id"]`) still works but is deprecated. A field a newer server adds is ignored
(kept in `model_extra`) rather than refused, so an older SDK keeps working.

Errors come back as the same TrainyardError subclasses the server raised (rebuilt from
the JSON body), so `except SpecError` works on both sides of the wire. When the server
cannot be reached, ClusterError says so and how to fix it (`trainyard up`).

Which server, and which token, `Client()` talks to, first found wins:
  1. its arguments, `Client(url=..., token=...)`;
  2. the environment, TRAINYARD_URL and TRAINYARD_TOKEN;
  3. the current context (`trainyard login`, `trainyard context use`), in
     <TRAINYARD_HOME>/contexts.json;
  4. the local stack (`trainyard up`) and its admin token.
A URL given by 1 or 2 without a token gets the token of a saved context for that same
server, if any: a context's token is never sent to another server. Tokens never appear in
a repr, a log line or an error.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay,
                      wait_exponential_jitter)

from trainyard import apitypes as T
from trainyard import contexts
from trainyard import errors as E
from trainyard import redact
from trainyard.config import home, read_secret, read_stack

__all__ = ["Client", "JobPage", "JOB_PAGE_MAX", "zip_folder", "error_from_response", "IDEMPOTENCY_HEADER",
           "RETRY_ERRORS", "workload_meta_of", "resolve_target", "AUDIT_FILTERS", "parse"]

log = logging.getLogger("trainyard.sdk")

IDEMPOTENCY_HEADER = "Idempotency-Key"
# The request may have reached the server, but its answer was lost: safe to resend only when
# the request is idempotent (GET, DELETE) or carries an Idempotency-Key. Connection failures
# before anything was sent are retried by the transport itself.
RETRY_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ReadTimeout)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})

_SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", "node_modules", ".tox"}
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
JOB_PAGE_MAX = 500  # the server's largest page of GET /v1/jobs


class JobPage(list):
    """A page of jobs: the list of `Job` models that list_jobs always returned, and the page's
    `total` (every job under the filters) and `next_cursor` (None on the last page)."""

    def __init__(self, jobs: Iterable[Any] = (), *, total: int = 0, next_cursor: str | None = None):
        super().__init__(jobs)
        self.total = total
        self.next_cursor = next_cursor

    def __repr__(self) -> str:
        return f"JobPage({len(self)} of {self.total}, next_cursor={self.next_cursor!r})"


_BY_CODE: dict[str, type[E.TrainyardError]] = {
    "invalid_spec": E.SpecError,
    "exceeds_capacity": E.CapacityError,
    "not_found": E.NotFoundError,
    "conflict": E.ConflictError,
    "unauthorized": E.AuthError,
    "forbidden": E.AuthError,
    "cluster_error": E.ClusterError,
    "stack_error": E.StackError,
    "too_many_requests": E.TooManyError,
}


def zip_folder(folder: str | Path) -> bytes:
    """Zip a folder's contents (files at the zip's root, as Ray's working_dir expects)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise E.SpecError(f"is not a folder: {str(root)!r}", field="working_dir", value=str(folder),
                          fix="give the path of the folder with your workload code")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = Path(dirpath) / name
                info = zipfile.ZipInfo(str(path.relative_to(root)), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())  # fixed dates: the same folder, the same hash
    return buf.getvalue()


def workload_meta_of(spec: Mapping[str, Any], *, working_dir: str | Path | None = None) -> dict | None:
    """The metadata of the spec's own workload, read here on the user's machine (it imports
    the module, with `working_dir` first on the path), for the server, which imports no user
    code. None for registered families with metadata, and when the module is not importable
    here (the runner checks it when the job starts)."""
    from trainyard.workload import local_meta

    ref = spec.get("workload") if isinstance(spec, Mapping) else None
    if not isinstance(ref, str):
        return None
    return local_meta(ref, paths=[working_dir] if working_dir else ())


def error_from_response(resp: httpx.Response) -> E.TrainyardError:
    """Rebuild the server's error as the same TrainyardError subclass.

    str(err) is the server's message; `err.details` is the whole JSON body. SpecErrors are
    rebuilt from their issues, so `err.issues` and `err.field` work as on the server."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": (resp.text or "").strip()[:500] or f"HTTP {resp.status_code}"}
    code = body.get("error", "")
    message = body.get("message") or f"HTTP {resp.status_code}"
    cls = _BY_CODE.get(code, E.TrainyardError)
    if issubclass(cls, E.SpecError) and body.get("issues"):
        issues = [E.FieldIssue(i.get("field") or "", i.get("message") or "", i.get("value"), i.get("fix"))
                  for i in body["issues"]]
        err: E.TrainyardError = cls(issues)
    else:
        # bypass the subclasses' constructors: the message is already complete
        err = cls.__new__(cls)
        E.TrainyardError.__init__(err, message)
        if cls is E.SpecError or cls is E.CapacityError:
            err.issues = [E.FieldIssue("", message)]
            err.source = None
        if cls is E.NotFoundError:
            err.kind = "resource"
    err.status = resp.status_code
    err.details = body
    return err


def new_key() -> str:
    """One Idempotency-Key per logical request: every resend of it carries the same key."""
    return uuid.uuid4().hex


def _admin_token() -> str | None:
    return read_secret(Path(os.environ.get("TRAINYARD_ADMIN_TOKEN_FILE") or home() / "admin.token"))


def resolve_target(url: str | None = None, token: str | None = None) -> tuple[str, str | None, str | None]:
    """(server URL, token, context name or None): where `Client(url, token)` connects, in the
    order the module docstring gives. Raises ClusterError when no server is known, SpecError
    when the contexts file is broken."""
    env_url = os.environ.get("TRAINYARD_URL") or None
    env_token = os.environ.get("TRAINYARD_TOKEN") or None
    if url or env_url:
        target = str(url or env_url).rstrip("/")
        if token is None:
            token = env_token
        context_name = None
        if token is None:
            saved = contexts.token_for_server(target)
            if saved is not None:
                token, context_name = saved.token, saved.name
        return target, (token if token is not None else _admin_token()), context_name
    saved = contexts.current()
    if saved is not None:
        return saved.server, token if token is not None else (env_token or saved.token), saved.name
    target = str((read_stack().get("server") or {}).get("url") or "").rstrip("/")
    if not target:
        raise E.ClusterError("no Trainyard server is known: no context is current, the local stack is not "
                             "running and no URL was given",
                             fix="log in with `trainyard login --server URL`, start a local stack with "
                                 "`trainyard up`, or pass Client(url=...) / set TRAINYARD_URL")
    return target, token if token is not None else (env_token or _admin_token()), None


class Client:
    """Talks to a Trainyard server: the one its arguments, the environment, the current context
    or the local stack names (see the module docstring)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 4, retry_budget_s: float = 60.0):
        """`retries`: how many times a request whose answer was lost is sent again (GETs, DELETEs
        and creating requests, which carry an Idempotency-Key, so a resend creates nothing twice)."""
        self.url, token, self.context = resolve_target(url, token)
        if token:
            # checked before httpx sees it: a header error would quote the token
            token = contexts.check_token(token, field_name="token")
        redact.register(token)  # whatever logs or prints an error in this process hides it
        self.last_stream_state: str | None = None  # set by stream_logs when the job ended
        self.retries = max(0, int(retries))
        self.retry_budget_s = retry_budget_s
        # connect errors (nothing sent yet) are retried by the transport for every request
        self._http = httpx.Client(base_url=self.url, timeout=timeout,
                                  transport=httpx.HTTPTransport(retries=min(self.retries, 2)),
                                  headers={"Authorization": f"Bearer {token}"} if token else {})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f", context={self.context!r}" if self.context else ""
        return f"Client(url={self.url!r}{where})"

    # ------------------------------------------------------------------ plumbing
    def _request(self, method: str, path: str, *, key: str | None = None, **kwargs) -> httpx.Response:
        """One logical request. `key`: its Idempotency-Key (creating routes); with it, or for
        an idempotent method, a lost answer is retried with the same key."""
        if key is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), IDEMPOTENCY_HEADER: key}
        retryable = key is not None or method.upper() in _SAFE_METHODS

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("%s %s: %s, sending it again (attempt %d)", method, path, type(exc).__name__,
                     state.attempt_number + 1)

        retrying = Retrying(retry=retry_if_exception_type(RETRY_ERRORS),
                            stop=stop_after_attempt(1 + (self.retries if retryable else 0))
                            | stop_after_delay(self.retry_budget_s),
                            wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1), before_sleep=log_retry,
                            reraise=True)
        try:
            resp = retrying(self._http.request, method, path, **kwargs)
        except httpx.TimeoutException:
            raise E.ClusterError(f"the Trainyard server at {self.url} did not answer in time",
                                 fix="check it with `trainyard status`") from None
        except httpx.TransportError as exc:
            raise E.ClusterError(f"the Trainyard server at {self.url} is unreachable ({type(exc).__name__})",
                                 fix="start the local stack with `trainyard up`, or check the URL") from None
        if resp.status_code == 404 and method.upper() == "DELETE" and retrying.statistics.get("attempt_number", 1) > 1:
            return resp  # the lost answer was the delete's: it is gone, as asked
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs) -> Any:
        resp = self._request(method, path, **kwargs)
        return resp.json() if resp.content else None

    def _model(self, model: type[M], method: str, path: str, **kwargs) -> M:
        return parse(model, self._json(method, path, **kwargs))

    # ------------------------------------------------------------------ jobs
    def submit_job(self, spec: str | Path | Mapping[str, Any], *, working_dir: str | Path | None = None,
                   _path: str = "/v1/jobs") -> dict:
        """Submit a job. `spec`: a path to a YAML file, YAML text, or a mapping.

        A working_dir (the argument, or the spec's, relative to the spec file) is zipped and
        uploaded with the request."""
        body = self._submit_body(spec, working_dir=working_dir)
        return parse(T.Sweep if _path == "/v1/sweeps" else T.JobDetail,
                     self._json("POST", _path, json=body, key=new_key()))

    def validate_job(self, spec: str | Path | Mapping[str, Any], *, working_dir: str | Path | None = None,
                     kind: str = "job") -> T.SpecCheck:
        """Check a job (or, with kind="sweep", a sweep) spec as the server checks a submission,
        role included, creating nothing: the normalised spec, or the submission's SpecError."""
        if kind not in ("job", "sweep"):
            raise E.SpecError(f"must be 'job' or 'sweep', got {kind!r}", field="kind", value=kind,
                              fix="pass kind='job' or kind='sweep'")
        body = self._submit_body(spec, working_dir=working_dir)
        return self._model(T.SpecCheck, "POST", f"/v1/{kind}s/validate", json=body)

    def _submit_body(self, spec: str | Path | Mapping[str, Any], *, working_dir: str | Path | None) -> dict:
        """The body of a submission: the spec, its working_dir zipped, its workload's metadata."""
        from trainyard.specs import load_yaml, read_spec_file

        base = Path.cwd()
        if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec and spec.endswith((".yaml", ".yml"))):
            path = Path(spec)
            data: dict = load_yaml(read_spec_file(path), source=str(path))
            base = path.parent
        elif isinstance(spec, str):
            data = load_yaml(spec)
        elif isinstance(spec, Mapping):
            data = dict(spec)
        else:
            raise E.SpecError(f"must be a path, YAML text or a mapping, got {type(spec).__name__}", field="spec")
        folder = working_dir or data.get("working_dir")
        body: dict[str, Any] = {"spec": data}
        folder_path = None
        if folder:
            folder_path = Path(folder).expanduser()
            if not folder_path.is_absolute():
                folder_path = base / folder_path
            if working_dir is not None and not data.get("working_dir"):
                data["working_dir"] = str(working_dir)
            body["working_dir_zip_b64"] = base64.b64encode(zip_folder(folder_path)).decode()
        meta = workload_meta_of(data, working_dir=folder_path)
        if meta is not None:
            body["workload_meta"] = meta
        return body

    def list_jobs(self, *, state: str | Iterable[str] | None = None, project: str | None = None,
                  user: str | None = None, kind: str | None = None, cluster: str | None = None,
                  limit: int = 50, cursor: str | None = None, offset: int = 0) -> "JobPage":
        """One page of jobs, newest first: a list of `Job` models with `.total` (every job under the
        filters that you may see) and `.next_cursor` (pass it as `cursor` for the next page;
        None on the last). `state`: public states (or phases), one or several. `user`: the
        jobs' owner. A `limit` above the server's page size (500) is fetched in several pages."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise E.SpecError(f"must be a whole number >= 1, got {limit!r}", field="limit", value=limit,
                              fix="ask for 1 or more jobs")
        params: dict[str, Any] = {k: v for k, v in {"project": project, "user": user, "kind": kind,
                                                    "cluster": cluster}.items() if v is not None}
        if state is not None:
            params["state"] = [state] if isinstance(state, str) else list(state)
        if offset:
            params["offset"] = offset
        jobs: list[T.Job] = []
        total, following = 0, cursor
        while True:
            page = self._model(T.JobList, "GET", "/v1/jobs",
                               params={**params, "limit": min(limit - len(jobs), JOB_PAGE_MAX),
                                       **({"cursor": following} if following else {})})
            jobs += page.jobs
            total, following = (page.total if page.total is not None else len(jobs)), page.next_cursor
            params.pop("offset", None)
            if not following or len(jobs) >= limit:
                return JobPage(jobs, total=total, next_cursor=following)

    def iter_jobs(self, *, page_size: int = JOB_PAGE_MAX, **filters: Any) -> Iterator[T.Job]:
        """Every job under the filters (those of list_jobs, but `limit`), newest first, a page
        at a time: each job once, also while new jobs are submitted (they sort before the pages read)."""
        for bad in ("limit", "cursor", "offset"):
            if bad in filters:
                raise E.SpecError("is not a filter of iter_jobs", field=bad, fix="use list_jobs to read one page")
        cursor = None
        while True:
            page = self.list_jobs(limit=page_size, cursor=cursor, **filters)
            yield from page
            cursor = page.next_cursor
            if not cursor:
                return

    def get_job(self, job_id: str) -> T.JobDetail:
        return self._model(T.JobDetail, "GET", f"/v1/jobs/{job_id}")

    def job_logs(self, job_id: str, offset: int = 0) -> str:
        """The driver's log from character `offset`; the next offset is offset + len(text)."""
        return self._request("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset}).text

    def stream_logs(self, job_id: str, *, follow: bool = True, tail: int | None = None,
                    since: datetime | float | str | None = None) -> Iterator[str]:
        """The job driver's log, line by line (redacted by the server). With `follow`, lines
        keep coming until the job ends (the server streams server-sent events); the final
        public state is then in `self.last_stream_state`. `tail`: only the last N lines first;
        `since`: a datetime (naive is UTC), RFC 3339 text, or seconds before now."""
        params: dict[str, Any] = {"follow": "true" if follow else "false"}
        if tail is not None:
            params["tail"] = tail
        if since is not None:
            params["since"] = _iso_utc(since) if isinstance(since, datetime) else str(since)
        self.last_stream_state = None
        if not follow:
            text = self._request("GET", f"/v1/jobs/{_seg(job_id)}/logs", params=params).text
            yield from text.splitlines()
            return
        # no read timeout beyond the server's keep-alive comments (every 15 s)
        timeout = httpx.Timeout(self._http.timeout.connect or 30.0, read=120.0)
        try:
            with self._http.stream("GET", f"/v1/jobs/{_seg(job_id)}/logs", params=params, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from_response(resp)
                kind, data = None, []
                for line in resp.iter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        field, _, value = line.partition(": ") if ": " in line else (line.rstrip(":"), "", "")
                        if field == "event":
                            kind = value
                        elif field == "data":
                            data.append(value)
                        continue
                    if not data and kind is None:
                        continue
                    payload = "\n".join(data)
                    if kind == "end":
                        self.last_stream_state = (json.loads(payload) or {}).get("state")
                        return
                    if kind == "error":
                        raise E.ClusterError((json.loads(payload) or {}).get("message") or "the log stream failed",
                                             fix=f"read what there is: trainyard jobs logs {job_id}")
                    yield payload
                    kind, data = None, []
        except httpx.TimeoutException:
            raise E.ClusterError(f"the Trainyard server at {self.url} stopped sending the log",
                                 fix="follow the logs again") from None
        except httpx.TransportError as exc:
            raise E.ClusterError(f"the Trainyard server at {self.url} is unreachable ({type(exc).__name__})",
                                 fix="start the local stack with `trainyard up`, or check the URL") from None

    def cancel_job(self, job_id: str) -> T.JobDetail:
        return self._model(T.JobDetail, "POST", f"/v1/jobs/{job_id}/cancel")

    def wait_job(self, job_id: str, *, timeout: float | None = None, poll: float = 1.0,
                 on_progress: Callable[[T.JobDetail], None] | None = None) -> T.JobDetail:
        """Poll until the job ends; returns its final description. `on_progress(job)` is
        called whenever state or progress changed. Raises TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            job = self.get_job(job_id)
            seen = (job.state, job.phase, repr(job.progress))
            if on_progress is not None and seen != last:
                on_progress(job)
            last = seen
            if job.state in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout:g}s")
            time.sleep(poll)

    def get_queue(self, *, project: str | None = None, cluster: str | None = None,
                  limit: int | None = None) -> T.Queue:
        """The queue per cluster (each job's positions, reason, estimated start) and per project
        (queued, running, quota in use, budget left), for the projects you can read."""
        params = {k: v for k, v in {"project": project, "cluster": cluster, "limit": limit}.items() if v is not None}
        return self._model(T.Queue, "GET", "/v1/queue", params=params)

    # ------------------------------------------------------------------ sweeps
    def submit_sweep(self, spec: str | Path | Mapping[str, Any], *, working_dir: str | Path | None = None) -> T.Sweep:
        """Submit a sweep: a job spec plus a `sweep:` block (docs/sweeps.md). Same inputs as submit_job."""
        return self.submit_job(spec, working_dir=working_dir, _path="/v1/sweeps")

    def list_sweeps(self, *, project: str | None = None, limit: int = 100, offset: int = 0) -> list[T.SweepSummary]:
        params = {k: v for k, v in {"project": project, "limit": limit, "offset": offset}.items() if v is not None}
        return self._model(T.SweepList, "GET", "/v1/sweeps", params=params).sweeps

    def get_sweep(self, sweep_id: str) -> T.Sweep:
        """The sweep, with `leaderboard` (final when done, live while it runs) and `best`."""
        return self._model(T.Sweep, "GET", f"/v1/sweeps/{sweep_id}")

    def cancel_sweep(self, sweep_id: str) -> T.Sweep:
        return self._model(T.Sweep, "POST", f"/v1/sweeps/{sweep_id}/cancel")

    def wait_sweep(self, sweep_id: str, *, timeout: float | None = None, poll: float = 2.0,
                   on_progress: Callable[[T.Sweep], None] | None = None) -> T.Sweep:
        """Poll until the sweep ends; returns its final description (with the leaderboard)."""
        self.wait_job(sweep_id, timeout=timeout, poll=poll,
                      on_progress=(lambda _job: on_progress(self.get_sweep(sweep_id))) if on_progress else None)
        return self.get_sweep(sweep_id)

    # ------------------------------------------------------------------ endpoints (trainyard.serving)
    def deploy_endpoint(self, model: str | None = None, *, version: str | None = None, alias: str | None = None,
                        spec: str | Path | Mapping[str, Any] | None = None, cluster: str | None = None,
                        timeout: float = 300.0) -> T.Deployment:
        """Serve MODEL (its champion, else its latest version) or move an endpoint to a version.

        `spec`: an endpoint spec (path, YAML text or mapping) for autoscaling, batching, name.
        """
        if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec and Path(spec).exists()):
            spec = Path(spec).read_text()
        body = {"model": model, "version": str(version) if version is not None else None, "alias": alias,
                "spec": spec if spec is None or isinstance(spec, str) else dict(spec), "cluster": cluster}
        return self._model(T.Deployment, "POST", "/v1/endpoints", json={k: v for k, v in body.items() if v is not None},
                           timeout=timeout, key=new_key())

    def list_endpoints(self, *, cluster: str | None = None) -> list[T.EndpointSummary]:
        return self._model(T.EndpointList, "GET", "/v1/endpoints",
                           params={"cluster": cluster} if cluster else None).endpoints

    def get_endpoint(self, name: str, *, cluster: str | None = None) -> T.Endpoint:
        return self._model(T.Endpoint, "GET", f"/v1/endpoints/{name}", params={"cluster": cluster} if cluster else None)

    def delete_endpoint(self, name: str, *, cluster: str | None = None, timeout: float = 300.0) -> None:
        self._request("DELETE", f"/v1/endpoints/{name}", params={"cluster": cluster} if cluster else None,
                      timeout=timeout)

    def predict(self, name: str, payload: Any, *, cluster: str | None = None) -> dict:
        """POST the payload to the endpoint (through the server); 422 names the bad field."""
        return self._json("POST", f"/v1/endpoints/{name}/predict", json=payload,
                          params={"cluster": cluster} if cluster else None)

    def promote_model(self, model: str, *, candidate: str | None = None, policy: Mapping[str, Any] | None = None,
                      endpoint: Mapping[str, Any] | None = None, cluster: str | None = None, wait: bool = True,
                      timeout: float = 3600.0) -> T.Promotion:
        """Run a promotion of MODEL's candidate (compare -> canary -> promote or roll back)."""
        body = {"candidate": str(candidate) if candidate is not None else None,
                "policy": dict(policy) if policy else None, "endpoint": dict(endpoint) if endpoint else None,
                "cluster": cluster, "wait": wait}
        return self._model(T.Promotion, "POST", f"/v1/models/{model}/promote",
                           json={k: v for k, v in body.items() if v is not None}, timeout=timeout, key=new_key())

    def rollback_model(self, model: str, *, cluster: str | None = None, timeout: float = 600.0) -> T.Rollback:
        """Serve MODEL's endpoint at the version from before its last promotion (and move
        `champion` back). Not retried: each roll-back undoes one more promotion. ConflictError
        when there is nothing to roll back."""
        return self._model(T.Rollback, "POST", f"/v1/models/{model}/rollback",
                           json={"cluster": cluster} if cluster else {}, timeout=timeout)

    def model_history(self, model: str) -> T.ModelHistory:
        """Champion, candidate, and every promotion event with its evidence."""
        return self._model(T.ModelHistory, "GET", f"/v1/models/{model}/history")

    def get_promotion(self, promotion_id: str) -> T.Promotion:
        return self._model(T.Promotion, "GET", f"/v1/promotions/{promotion_id}")

    # ------------------------------------------------------------------ clusters
    def list_clusters(self) -> list[T.Cluster]:
        return self._model(T.ClusterList, "GET", "/v1/clusters").clusters

    def add_cluster(self, name: str, address: str, *, token: str | None = None, token_file: str | None = None,
                    max_resources: dict | None = None, check: bool = True) -> T.Cluster:
        """Register a cluster. `token_file` is read here, on the client: the server takes the
        token by value and reads no file a request names."""
        if token_file is not None:
            if token is not None:
                raise E.SpecError("give token or token_file, not both", field="token_file")
            token = read_secret(Path(token_file).expanduser())
            if token is None:
                raise E.SpecError("the token file is missing or empty", field="token_file", value=str(token_file),
                                  fix="give a readable file holding the cluster's token")
        body = {"name": name, "address": address, "token": token, "max_resources": max_resources, "check": check}
        return self._model(T.Cluster, "POST", "/v1/clusters", json={k: v for k, v in body.items() if v is not None},
                           key=new_key())

    def remove_cluster(self, name: str) -> None:
        self._request("DELETE", f"/v1/clusters/{name}")

    # ------------------------------------------------------------------ identity, users, tokens
    def me(self) -> T.Me:
        """Who this client is: {"user", "kind", "admin", "via", "projects": {name: role}}."""
        return self._model(T.Me, "GET", "/v1/me")

    def create_user(self, name: str, *, kind: str = "user", admin: bool = False) -> T.User:
        """Add a user (kind "user") or a service account (kind "service"). Admin only."""
        return self._model(T.User, "POST", "/v1/users", json={"name": name, "kind": kind, "admin": bool(admin)},
                           key=new_key())

    def list_users(self) -> list[T.User]:
        return self._model(T.UserList, "GET", "/v1/users").users

    def remove_user(self, name: str) -> None:
        """Disable the user and revoke their tokens (the user `admin` cannot be removed)."""
        self._request("DELETE", f"/v1/users/{_seg(name)}")

    def create_token(self, name: str, *, expires_in_days: int | None = None, user: str | None = None) -> T.CreatedToken:
        """A new API token for this client's user (or, as an admin, for `user`). The answer's
        `token` is shown this once; the server keeps only its hash.

        Sent without an Idempotency-Key and never resent: a replayed answer would have to be
        stored with the token in it. A lost answer leaves a token nobody knows; revoke it."""
        body = {"name": name, "expires_in_days": expires_in_days, "user": user}
        return self._model(T.CreatedToken, "POST", "/v1/tokens", json=body)

    def list_tokens(self, *, user: str | None = None) -> list[T.Token]:
        """Tokens (never their text): own ones, or `user`'s (admin)."""
        return self._model(T.TokenList, "GET", "/v1/tokens", params={"user": user} if user else None).tokens

    def revoke_token(self, token_id: str) -> None:
        self._request("DELETE", f"/v1/tokens/{_seg(token_id)}")

    # ------------------------------------------------------------------ projects
    def create_project(self, name: str, *, description: str = "") -> T.ProjectSummary:
        return self._model(T.ProjectSummary, "POST", "/v1/projects", json={"name": name, "description": description},
                           key=new_key())

    def list_projects(self) -> list[T.ProjectSummary]:
        """The projects this client may see, each with its `role` ("admin" for admins)."""
        return self._model(T.ProjectList, "GET", "/v1/projects").projects

    def get_project(self, name: str) -> T.Project:
        """The project with its `members` [{"user", "role"}] and its `quota` (weight, quota,
        budget, usage: see get_quota)."""
        return self._model(T.Project, "GET", f"/v1/projects/{_seg(name)}")

    def set_quota(self, project: str, *, weight: float = 1.0, nominal: dict[str, float] | None = None,
                  borrowing_limit: dict[str, float] | None = None, lending_limit: dict[str, float] | None = None,
                  gpu_hours: float | None = None, cpu_hours: float | None = None,
                  window_days: float = 30.0) -> T.QuotaView:
        """Set `project`'s fair-share weight, quota and budget (admins), replacing what it had:
        what is left out is unset. Resources: "CPU", "GPU", "memory" (bytes),
        "accelerator_type:<T>" (GPUs of type T). Returns the settings with their usage
        ({"weight", "nominal", ..., "budget", "usage": {"gpu": {...}, "cpu": {...}}})."""
        body: dict = {"weight": weight, "nominal": nominal, "borrowing_limit": borrowing_limit,
                      "lending_limit": lending_limit}
        if gpu_hours is not None or cpu_hours is not None:
            body["budget"] = {"gpu_hours": gpu_hours, "cpu_hours": cpu_hours, "window_days": window_days}
        return self._model(T.QuotaView, "PUT", f"/v1/projects/{_seg(project)}/quota", json=body)

    def get_quota(self, project: str) -> T.QuotaView:
        """`project`'s weight, quota, budget and usage (used, remaining, burn per day)."""
        return self.get_project(project).quota

    def set_member(self, project: str, user: str, *, role: str) -> T.Membership:
        """Give `user` the `role` (viewer, member, maintainer) in `project`, adding them if needed."""
        return self._model(T.Membership, "PUT", f"/v1/projects/{_seg(project)}/members/{_seg(user)}",
                           json={"role": role})

    def remove_member(self, project: str, user: str) -> None:
        self._request("DELETE", f"/v1/projects/{_seg(project)}/members/{_seg(user)}")

    # ------------------------------------------------------------------ audit
    def audit(self, **filters: Any) -> T.AuditList:
        """The audit trail, newest first: {"events": [...], "total": n}. Filters (admin only):
        actor, action, project, object_id, outcome ("ok", "refused", "error"), since (a datetime,
        or ISO 8601 text; a naive datetime is UTC), limit, offset."""
        unknown = sorted(set(filters) - set(AUDIT_FILTERS))
        if unknown:
            raise E.SpecError(f"is not an audit filter{E.did_you_mean(unknown[0], AUDIT_FILTERS)}", field=unknown[0],
                              fix=f"filters: {', '.join(AUDIT_FILTERS)}")
        params = {k: v for k, v in filters.items() if v is not None}
        since = params.get("since")
        if isinstance(since, datetime):
            params["since"] = _iso_utc(since)
        return self._model(T.AuditList, "GET", "/v1/audit", params=params)

    # ------------------------------------------------------------------ system
    def status(self) -> T.Status:
        return self._model(T.Status, "GET", "/v1/status")

    def health(self) -> T.Health:
        return self._model(T.Health, "GET", "/healthz")


AUDIT_FILTERS = ("actor", "action", "project", "object_id", "outcome", "since", "limit", "offset")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """`data` as `model`. Keys the model does not know (a newer server's fields) are dropped,
    not refused: the models forbid extra keys so that the server cannot drift from them, but a
    client must outlive the server version it was written against. Anything else that does not
    fit is the server breaking its contract: a ClusterError that names the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        if not all(e["type"] == "extra_forbidden" for e in errors):
            first = errors[0]
            raise E.ClusterError(f"the server's answer does not fit {model.__name__} at "
                               f"{'.'.join(str(p) for p in first['loc']) or '(root)'}: {first['msg']}",
                               fix="use a client of the server's version (`trainyard version`)") from None
        data = _without(data, [e["loc"] for e in errors])
    return model.model_validate(data)


def _without(data: Any, locs: list[tuple]) -> Any:
    """A copy of `data` without the keys at `locs`."""
    import copy

    data = copy.deepcopy(data)
    for loc in locs:
        parent = data
        for part in loc[:-1]:
            parent = parent[part]
        parent.pop(loc[-1], None)
    return data


def _seg(value: str) -> str:
    """One path segment: a name can never reach another route ("../users", "a/b")."""
    return quote(str(value), safe="")


def _iso_utc(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
