"""What the API asks of the control plane: submit (validated), describe, logs, cancel.

A submission is validated completely before anything is written: a rejected request leaves
no row, no event and no package file behind.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from trainyard import redact
from trainyard.clusters.registry import ClusterRegistry
from trainyard.config import Settings, home
from trainyard.controller import runtime, views
from trainyard.controller.group_commit import GroupCommitter
from trainyard.controller.logtail import LogTails
from trainyard.errors import CapacityError, ClusterError, ConflictError, FieldIssue, SpecError, did_you_mean
from trainyard.scheduler import never_fits_reason
from trainyard.specs import JobSpec, parse_job_spec
from trainyard.store import Database
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st

__all__ = ["JobService", "MAX_PACKAGE_BYTES", "packages_dir"]

log = logging.getLogger("trainyard.controller")

# Ray's GCS refuses packages over 500 MiB; ours stay well below to keep the store sane
MAX_PACKAGE_BYTES = 100 * 1024 * 1024


def packages_dir(settings: Settings) -> Path:
    return Path(settings.extra.get("packages_dir") or home() / "packages")


def _event(data: str, *, ident: int | None = None, kind: str | None = None) -> str:
    """One server-sent event; `data` holds no newline (one log line, or JSON)."""
    head = (f"event: {kind}\n" if kind else "") + (f"id: {ident}\n" if ident is not None else "")
    return f"{head}data: {data}\n\n"


def store_package(target: Path, package: bytes) -> None:
    """Write a working_dir zip under its digest's name, whole or not at all. Two submissions
    of the same folder may race here: each writes its own temporary file (a shared name let
    one truncate what the other was about to rename, and the second rename failed), and the
    rename is atomic, so a reader sees no file or the whole zip."""
    if target.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(package)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class JobService:
    def __init__(self, db: Database, registry: ClusterRegistry, settings: Settings, *,
                 commits: GroupCommitter | None = None):
        self.db = db
        self.registry = registry
        self.settings = settings
        # concurrent submissions share one commit (and its fsync): group_commit.py; the server
        # passes the committer its audit rows go through too
        self.commits = commits or GroupCommitter(db)
        # submission_id -> (monotonic time, progress): for clients that cannot tail a log
        self._progress_cache: dict[str, tuple[float, dict | None]] = {}
        # one follower per running job's Ray log, shared by progress reads and log streams
        self.tails = LogTails(self._tail_opener)

    def _tail_opener(self, cluster: str, submission_id: str):
        return lambda stop: self.registry.client(cluster).tail_logs(submission_id, stop=stop)

    def can_tail(self, cluster: str) -> bool:
        return hasattr(self.registry.client(cluster), "tail_logs")

    def close(self) -> None:
        self.tails.close()

    # ------------------------------------------------------------------ submit
    def validate(self, spec: Mapping[str, Any] | str, *, working_dir_zip_b64: str | None = None,
                 kind: str = "job", workload_meta: Any = None) -> tuple[JobSpec, bytes | None]:
        job, package, _data = self._validated(spec, working_dir_zip_b64=working_dir_zip_b64, kind=kind,
                                              workload_meta=workload_meta)
        return job, package

    def _validated(self, spec: Mapping[str, Any] | str, *, working_dir_zip_b64: str | None,
                   kind: str, workload_meta: Any) -> tuple[JobSpec, bytes | None, dict[str, Any]]:
        """validate(), and the spec as stored (its JSON form, made once for every check)."""
        # workload_meta: what the client read of a user's own family; the server imports none
        if kind == "sweep":  # a SweepSpec is a JobSpec plus `sweep:`/`promote:` (trainyard.sweeps)
            from trainyard.specs import parse_sweep_spec

            job = parse_sweep_spec(spec, source="spec", workload_meta=workload_meta)
        else:
            job = parse_job_spec(spec, source="spec", workload_meta=workload_meta)
        package = self._check_package(job, working_dir_zip_b64)
        data = job.model_dump(mode="json")
        self._check_storage(job, data)
        self._check_capacity(job, data)
        return job, package, data

    def submit(self, spec: Mapping[str, Any] | str, *, working_dir_zip_b64: str | None = None,
               kind: str = "job", workload_meta: Any = None,
               on_created: Callable[[Session, dict[str, Any]], Any] | None = None,
               owner: str = "admin") -> dict[str, Any]:
        """Validate, store and queue. `on_created(session, view)` runs in the transaction that
        creates the row (the API records an Idempotency-Key there): if it raises, nothing is
        created; what it returns (when not None) is returned instead of the view."""
        write = self.prepare(spec, working_dir_zip_b64=working_dir_zip_b64, kind=kind,
                             workload_meta=workload_meta, on_created=on_created, owner=owner)
        # acknowledged after the commit that holds it; concurrent submissions share that commit
        return self.commits.run(write)

    async def submit_async(self, spec: Mapping[str, Any] | str, *, working_dir_zip_b64: str | None = None,
                           kind: str = "job", workload_meta: Any = None,
                           on_created: Callable[[Session, dict[str, Any]], Any] | None = None,
                           owner: str = "admin") -> dict[str, Any]:
        """submit() for the event loop: the same checks and the same transaction, awaited.

        A spec alone is checked on the loop (a worker thread costs more than the check); one
        with a working_dir zip (up to 100 MiB to decode, check and write) in a worker thread.
        The write joins the committer's next batch; this returns once that batch committed."""
        kwargs = dict(working_dir_zip_b64=working_dir_zip_b64, kind=kind, workload_meta=workload_meta,
                      on_created=on_created, owner=owner)
        if working_dir_zip_b64 is None:
            write = self.prepare(spec, **kwargs)
        else:
            write = await asyncio.to_thread(lambda: self.prepare(spec, **kwargs))
        return await self.commits.run_async(write)

    def prepare(self, spec: Mapping[str, Any] | str, *, working_dir_zip_b64: str | None = None,
                kind: str = "job", workload_meta: Any = None,
                on_created: Callable[[Session, dict[str, Any]], Any] | None = None,
                owner: str = "admin") -> Callable[[Session], dict[str, Any]]:
        """Validate (and keep the working_dir package): the submission's write, for a commit."""
        job, package, data = self._validated(spec, working_dir_zip_b64=working_dir_zip_b64, kind=kind,
                                             workload_meta=workload_meta)
        digest = None
        if package is not None:
            digest = hashlib.sha1(package).hexdigest()
            folder = packages_dir(self.settings)
            folder.mkdir(parents=True, exist_ok=True)
            store_package(folder / f"{digest}.zip", package)

        def write(s) -> dict[str, Any]:
            row = jobs_repo.insert_job(s, spec=data, name=job.name, project=job.project,
                                       priority=job.priority, kind=kind, package=digest, owner=owner,
                                       reason="submitted; waiting for the scheduler", message="queued")
            view = views.job_dict(row, mlflow_uri=self.settings.mlflow_uri, detail=True)
            if on_created is not None:
                answer = on_created(s, view)
                if answer is not None:
                    return answer
            return view

        return write

    def _check_package(self, job: JobSpec, b64: str | None) -> bytes | None:
        if b64 is None:
            if job.working_dir is not None:
                raise SpecError(
                    f"the server cannot read your local folder {job.working_dir!r}", field="working_dir",
                    value=job.working_dir,
                    fix="submit with `trainyard jobs submit` or trainyard.Client, which upload it, "
                        "or remove working_dir")
            return None
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise SpecError("is not valid base64", field="working_dir_zip_b64",
                            fix="send the zip's bytes base64-encoded") from None
        if len(data) > MAX_PACKAGE_BYTES:
            raise SpecError(f"the working_dir zip is {len(data) // (1024 * 1024)} MiB, more than "
                            f"{MAX_PACKAGE_BYTES // (1024 * 1024)} MiB", field="working_dir",
                            value=job.working_dir,
                            fix="leave data and checkpoints out of the folder (read them from storage)")
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise SpecError("is not a zip archive", field="working_dir_zip_b64",
                            fix="zip the folder's contents (the SDK does this for you)")
        return data

    def _check_storage(self, job: JobSpec, spec: dict[str, Any] | None = None) -> None:
        if job.checkpoint.storage is not None:
            from trainyard.specs.storage import confine_storage

            confine_storage(job.checkpoint.storage, roots=self.settings.allowed_storage_roots())
        spec = spec if spec is not None else job.model_dump(mode="json")
        storage = runtime.storage_for(spec, self.settings)
        if not storage.startswith("s3://"):
            return
        s3 = runtime.s3_settings_for(spec, self.settings)
        missing = []
        if not (s3["key"] and s3["secret"]):
            missing.append("credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        if not s3["endpoint_url"]:
            missing.append("an endpoint URL")
        if missing:
            raise SpecError(
                f"s3 storage {storage!r} needs {' and '.join(missing)}, and neither the spec nor the "
                f"server has them", field="checkpoint.storage", value=storage,
                fix="set checkpoint.endpoint_url and env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the spec, "
                    "start the server with them, or use file:// storage")

    def _check_capacity(self, job: JobSpec, spec: dict[str, Any] | None = None) -> None:
        queued = views.queued_job("new", spec if spec is not None else job.model_dump(mode="json"),
                                  priority=job.priority)
        rows = self.registry.cached_rows()  # a second or two old at most: ClusterRegistry.cached_rows
        if not rows:
            raise CapacityError("no cluster is registered", field="resources.cluster",
                                fix="register one with `trainyard clusters add NAME --address URL`, "
                                    "or start the local stack with `trainyard up`")
        names = [r.name for r in rows]
        if job.resources.cluster and job.resources.cluster not in names:
            raise SpecError(f"cluster {job.resources.cluster!r} is not registered;"
                            f"{did_you_mean(job.resources.cluster, names) or ''} registered: {', '.join(names)}",
                            field="resources.cluster", value=job.resources.cluster,
                            fix="pick a registered cluster, or leave resources.cluster out")
        candidates = [r for r in rows if not job.resources.cluster or r.name == job.resources.cluster]
        known = [v for v in (views.cluster_view(r) for r in candidates) if v is not None]
        if len(known) < len(candidates):
            return  # a cluster we know nothing about yet may be big enough: let it queue
        reason = never_fits_reason(queued, known)
        if reason is not None:
            field, message = reason
            raise CapacityError([FieldIssue(field, message, job.resources.min_workers if field == "resources.workers"
                                             else None)], source="spec")

    # ------------------------------------------------------------------ read
    def describe(self, job_id: str, *, with_progress: bool = True) -> dict[str, Any]:
        with self.db.session() as s:
            job = jobs_repo.get_job(s, job_id)
            events = [{"at": views.iso(e.at), "from": e.from_phase, "to": e.to_phase, "reason": e.reason}
                      for e in jobs_repo.list_events(s, job_id)]
            live_cost = self._live_cost(s, job)
        progress = None
        if with_progress and job.phase in (st.RUNNING, st.STALLED, st.CANCELLING, st.PREEMPTING) and job.submission_id and job.cluster:
            progress = self._progress(job.cluster, job.submission_id)
        view = views.job_dict(job, mlflow_uri=self.settings.mlflow_uri, detail=True,
                              progress=progress, events=events)
        if live_cost is not None:
            view["cost"] = live_cost
        return view

    def _live_cost(self, s: Session, job) -> dict[str, Any] | None:
        """A running job's cost so far: its ended attempts and the current one up to now."""
        # only while an attempt holds resources: a requeued job waiting again keeps its first
        # start time, which would count the wait as held
        if job.phase not in (st.RUNNING, st.STALLED, st.CANCELLING) or job.started_at is None:
            return None
        from datetime import datetime, timezone

        from trainyard.controller import costs
        from trainyard.store import quotas as quotas_repo

        try:
            row = clusters_repo.find_cluster(s, job.cluster) if job.cluster else None
            record = costs.record_for(job, attempts=quotas_repo.attempts_of(s, job.id),
                                      finished_at=datetime.now(timezone.utc), running=True,
                                      prices=costs.prices_of(row.max_resources if row is not None else None))
        except Exception:  # a nicety: never fail a GET for it
            log.exception("job %s: no live cost record", job.id)
            return None
        return record.to_dict() if record is not None else None

    def _progress(self, cluster: str, submission_id: str, *, ttl_s: float = 1.0) -> dict | None:
        """The job's last progress line, from its followed log: each byte of the log is read
        once (logtail.py); the first look waits briefly for Ray's replay of what was written."""
        from trainyard.protocol import last_progress

        try:
            tailing = self.can_tail(cluster)
        except Exception as exc:  # progress is a nicety: never fail a GET for it
            log.debug("no progress for %s: %s", submission_id, exc)
            return None
        if tailing:
            tail = self.tails.get(cluster, submission_id)
            if not tail.settled:
                tail.wait_settled(quiet_s=0.2, timeout_s=2.0)
            return tail.progress
        now = time.monotonic()
        cached = self._progress_cache.get(submission_id)
        if cached and now - cached[0] < ttl_s:
            return cached[1]
        try:
            text = self.registry.client(cluster).logs(submission_id)
        except Exception as exc:  # progress is a nicety: never fail a GET for it
            log.debug("no progress for %s: %s", submission_id, exc)
            return cached[1] if cached else None
        progress = last_progress(text or "")
        if len(self._progress_cache) > 1000:
            self._progress_cache.clear()
        self._progress_cache[submission_id] = (now, progress)
        return progress

    def logs(self, job_id: str, *, offset: int = 0) -> tuple[str, str]:
        """(text from `offset`, public state). Empty text before the job reached a cluster."""
        with self.db.session() as s:
            job = jobs_repo.get_job(s, job_id)
        state = st.public_state(job.phase)
        if not (job.submission_id and job.cluster):
            return "", state
        try:
            text = self.registry.client(job.cluster).logs(job.submission_id)
        except ClusterError:
            if job.phase in st.TERMINAL or job.phase == st.DISPATCHING:
                return "", state
            raise
        text = redact.redact(text or "", runtime.secret_values(job.spec or {}, self.settings))
        return text[max(0, offset):], state

    def _log_source(self, job_id: str) -> tuple[str, str | None, str | None, list[str]]:
        """(phase, cluster, submission id, secrets to hide) of the job's current attempt."""
        with self.db.session() as s:
            job = jobs_repo.get_job(s, job_id)
            return (job.phase, job.cluster, job.submission_id if job.cluster else None,
                    runtime.secret_values(job.spec or {}, self.settings))

    def _check_tailable(self, cluster: str | None) -> None:
        if cluster and not self.can_tail(cluster):
            raise ClusterError(f"cluster '{cluster}' cannot stream logs", fix="read them without follow/tail/since")

    def log_lines(self, job_id: str, *, tail: int | None = None, since: float | None = None) -> tuple[str, str]:
        """(the last `tail` lines / those read since `since`, redacted, as text; public state)."""
        phase, cluster, sid, secrets = self._log_source(job_id)
        if not sid:
            return "", st.public_state(phase)
        self._check_tailable(cluster)
        follower = self.tails.get(cluster, sid)
        follower.wait_settled()
        if follower.error and not follower.lines:
            raise ClusterError(follower.error)
        lines, _ = follower.snapshot(tail=tail, since=since)
        return "".join(redact.redact(ln.text, secrets) + "\n" for ln in lines), st.public_state(phase)

    def stream_log(self, job_id: str, *, tail: int | None = None, since: float | None = None,
                   poll_s: float = 1.0, heartbeat_s: float = 15.0) -> Iterator[str]:
        """The job's log as server-sent events, until the job ended: `id: <line number>` and
        `data: <line>` per line (redacted); a comment every `heartbeat_s` while nothing comes;
        then `event: end` with {"state", "phase"}, or `event: error` with {"message"}. A job
        that waits in the queue is followed from its dispatch; a requeued one into its next attempt."""
        phase, cluster, _, _ = self._log_source(job_id)  # raises NotFoundError before the stream starts
        self._check_tailable(cluster)
        yield ": following\n\n"  # the answer's head goes out now, also for a job still queued
        followed: set[str] = set()
        first = True
        beat = time.monotonic()
        while True:
            phase, cluster, sid, secrets = self._log_source(job_id)
            if sid and sid not in followed:
                follower = self.tails.get(cluster, sid)
                follower.wait_settled()
                lines, seq = follower.snapshot(tail=tail, since=since) if first else follower.snapshot()
                first = False
                for ln in lines:
                    yield _event(redact.redact(ln.text, secrets), ident=ln.seq)
                ended = follower.done
                while not ended:
                    fresh, ended = follower.after(seq, timeout_s=poll_s)
                    follower.touch()
                    for ln in fresh:
                        yield _event(redact.redact(ln.text, secrets), ident=ln.seq)
                        seq = ln.seq
                    if fresh:
                        beat = time.monotonic()
                    elif time.monotonic() - beat >= heartbeat_s:
                        beat = time.monotonic()
                        yield ": keep-alive\n\n"
                if follower.error is None:
                    followed.add(sid)
                else:
                    phase = self._log_source(job_id)[0]
                    if phase in st.TERMINAL:
                        yield _event(json.dumps({"message": redact.redact(follower.error, secrets)}), kind="error")
                        return
                    time.sleep(poll_s)  # Ray does not know the attempt yet: look again
                continue
            if phase in st.TERMINAL:
                yield _event(json.dumps({"state": st.public_state(phase), "phase": phase}), kind="end")
                return
            if time.monotonic() - beat >= heartbeat_s:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(poll_s)

    # ------------------------------------------------------------------ cancel
    def cancel(self, job_id: str, *, reason: str = "cancelled by the user") -> dict[str, Any]:
        for _ in range(5):
            try:
                return self._cancel_once(job_id, reason)
            except StaleDataError:
                continue  # the controller moved the job meanwhile: look again
        raise ConflictError(f"job {job_id} is changing too fast to cancel", fix="try again")

    def _cancel_once(self, job_id: str, reason: str) -> dict[str, Any]:
        stop = None
        with self.db.session() as s:
            job = jobs_repo.get_job(s, job_id)
            if job.phase in st.QUEUED:
                started = job.phase == st.PENDING
                jobs_repo.transition(s, job, st.CANCELLED, reason=reason, cancel_requested=1,
                                     message="cancelled before it started" if started
                                     else "cancelled while queued after a preemption")
            elif job.phase in (st.DISPATCHING, st.SUBMITTED, st.RUNNING, st.STALLED, st.PREEMPTING):
                jobs_repo.transition(s, job, st.CANCELLING, reason=reason, cancel_requested=1,
                                     message="cancelling: waiting for Ray to stop the job")
                stop = (job.cluster, job.submission_id)
            elif job.phase in (st.CANCELLING, st.CANCELLED):
                pass  # idempotent
            else:
                st.check_transition(job.phase, st.CANCELLED, job_id=job.id)  # raises ConflictError
        if stop and stop[0] and stop[1]:
            try:
                self.registry.client(stop[0]).stop(stop[1])
            except ClusterError as exc:  # the controller keeps trying
                log.warning("stop of %s on %s failed, will retry: %s", stop[1], stop[0], exc)
        return self.describe(job_id, with_progress=False)
