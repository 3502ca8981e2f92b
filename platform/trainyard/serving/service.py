"""Endpoints and promotions as the server offers them (used by the /v1/endpoints and
/v1/models routes). No torch: only httpx and the MLflow client.

Which cluster: an endpoint request names one, else the default cluster ('local'). The
Serve HTTP port is one setting for every cluster, TRAINYARD_SERVE_PORT (default 8000),
and the proxy is reached at the dashboard's host (TRAINYARD_SERVE_HOST overrides it).
Promotions run in background threads; their events are in MLflow as they happen. Each is
tagged with this deployment's id (`deployment_id`, from the store's URL) and this process's
instance id, so that the next start of the server finds the ones a crash left unfinished
and makes their endpoints safe (`start_recovery`, serving/recovery.py).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

import tenacity

from trainyard.config import Settings
from trainyard.errors import ConflictError, NotFoundError, SpecError
from trainyard.serving.client import DEFAULT_HTTP_PORT, ServeClient
from trainyard.serving.endpoints import EndpointManager

__all__ = ["ServingService", "serve_port", "deployment_id", "DEFAULT_CLUSTER"]

log = logging.getLogger("trainyard.serving")
DEFAULT_CLUSTER = "local"
RECOVERY_WAIT_S = 300.0  # longest a new promotion waits for the recovery of the old ones


def deployment_id(db_url: str) -> str:
    """A stable id of this server deployment: its store (one server per store, helm: Recreate)."""
    import hashlib

    from sqlalchemy.engine import make_url

    try:
        text = make_url(db_url).render_as_string(hide_password=True)
    except Exception:
        text = db_url
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def serve_port() -> int:
    return Settings.from_env().serve_port or DEFAULT_HTTP_PORT


class ServingService:
    """`clusters(name) -> (dashboard_url, token)` comes from the server's cluster registry."""

    def __init__(self, *, tracking_uri: str, clusters: Callable[[str], tuple[str, str | None]],
                 default_cluster: str = DEFAULT_CLUSTER, env: Mapping[str, str] | None = None,
                 server_id: str = ""):
        self.tracking_uri = tracking_uri
        self.server_id = server_id
        self.instance = uuid.uuid4().hex[:12]
        self._clusters = clusters
        self.default_cluster = default_cluster
        self.env = dict(env or {})
        self._managers: dict[str, tuple[tuple, EndpointManager]] = {}
        self._registry = None
        self._lock = threading.Lock()
        self.promotions: dict[str, dict] = {}
        self._sweeps_seen: set[str] = set()
        self._recovered = threading.Event()  # cleared while promotions from before a restart are recovered
        self._recovered.set()
        self.recoveries: list[dict] = []
        self._rolling_back: set[str] = set()

    def registry(self):
        if not self.tracking_uri:
            raise SpecError("the server has no MLflow tracking URI", field="mlflow_uri",
                            fix="start the server with TRAINYARD_MLFLOW_URI set (`trainyard up` does)")
        if self._registry is None:
            from trainyard.serving.registry import Registry

            self._registry = Registry(self.tracking_uri)
        return self._registry

    def manager(self, cluster: str | None = None) -> EndpointManager:
        name = cluster or self.default_cluster
        url, token = self._clusters(name)
        key = (url, token)
        with self._lock:
            cached = self._managers.get(name)
            if cached and cached[0] == key:
                return cached[1]
            env = Settings.from_env()
            host = env.serve_host or urlparse(url).hostname or "127.0.0.1"
            serve = ServeClient(url, token=token, http_host=host, http_port=env.serve_port or DEFAULT_HTTP_PORT,
                                name=name, http_bind_host=env.serve_bind_host or host)
            manager = EndpointManager(serve, self.registry() if self.tracking_uri else None,
                                      tracking_uri=self.tracking_uri, env=self.env)
            if cached:
                cached[1].serve.close()
            self._managers[name] = (key, manager)
            return manager

    def close(self) -> None:
        with self._lock:
            for _, manager in self._managers.values():
                manager.serve.close()
            self._managers.clear()

    # ------------------------------------------------------------------ promotions
    def promote(self, model: str, *, policy: Mapping | None = None, candidate: str | None = None,
                endpoint: Mapping | None = None, cluster: str | None = None, wait: bool = False,
                tags: Mapping[str, str] | None = None) -> dict:
        from trainyard.serving.promotion import Promoter
        from trainyard.specs import parse_promotion_policy

        parsed = parse_promotion_policy(dict(policy) if policy else None, source="policy")  # 422 before we start
        registry = self.registry()
        registry.versions(model)  # 404 now rather than in the thread
        if candidate is None and registry.alias_version(model, "candidate") is None:
            raise SpecError(f"model {model!r} has no alias 'candidate'", field="candidate",
                            fix="run a sweep (it sets the alias), or pass --candidate VERSION")
        manager = self.manager(cluster)
        with self._lock:  # one promotion per model at a time: a second request joins the running one
            running = next((p for p in self.promotions.values()
                            if p["model"] == model and p["state"] == "running"), None)
            if running is None:
                pid = uuid.uuid4().hex[:12]
                record = {"id": pid, "model": model, "state": "running", "started_at": time.time(),
                          "events": [], "result": None, "error": None}
                self.promotions[pid] = record
        if running is not None:
            while wait and running["state"] == "running":
                time.sleep(0.5)
            return running
        promoter = Promoter(manager, registry, on_event=lambda e: record["events"].append(e.to_dict()))
        tags = {**dict(tags or {}), "trainyard.cluster": cluster or self.default_cluster,
                "trainyard.server_instance": self.instance}
        if self.server_id:
            tags["trainyard.server"] = self.server_id

        def run():
            # never two promotions on one endpoint: an unfinished one from before a restart is undone first
            if not self._recovered.wait(RECOVERY_WAIT_S):
                log.warning("promotion of %s starts while older promotions are still being recovered", model)
            try:
                result = promoter.promote(model, policy=parsed, candidate=candidate, endpoint=endpoint, tags=tags)
                record["result"] = result.to_dict()
                record["state"] = result.state.value
            except Exception as exc:  # recorded, also as a `failed` event in MLflow
                log.exception("promotion of %s failed", model)
                record["state"] = "failed"
                record["error"] = getattr(exc, "to_dict", lambda: {"message": str(exc)})()

        if wait:
            run()
        else:
            threading.Thread(target=run, name=f"promote-{model}", daemon=True).start()
        return record

    def rollback(self, model: str, *, cluster: str | None = None, actor: str | None = None) -> dict:
        """Serve again the version that served before the model's last promotion (from its
        history: serving.policy.plan_rollback), move `champion` back to it, and record the
        roll-back in the history. Blocking: it lasts one rolling switch. ConflictError (409) when
        there is nothing to roll back, or a promotion or roll-back of the model is running."""
        from trainyard.serving.policy import ROLLBACK_EVENT, Event, plan_rollback
        from trainyard.serving.registry import CHAMPION

        registry = self.registry()
        registry.versions(model)  # 404 for a model that is not registered
        with self._lock:
            busy = model in self._rolling_back or any(p["model"] == model and p["state"] == "running"
                                                       for p in self.promotions.values())
            if busy:
                raise ConflictError(f"a promotion or roll-back of model {model!r} is running", field="model",
                                    value=model, fix="wait for it to end (`trainyard models history MODEL`)")
            self._rolling_back.add(model)
        try:
            plan = plan_rollback(model, registry.history(model))
            manager = self.manager(cluster)
            if not manager.exists(plan.endpoint):
                raise ConflictError(f"endpoint {plan.endpoint!r} of model {model!r} is not deployed, so there is "
                                    f"nothing to roll back", field="model", value=model,
                                    fix="deploy it again with `trainyard endpoints deploy`")
            champion = registry.alias_version(model, CHAMPION)
            # tagged like a promotion, so that a restart finds it unfinished and finishes it
            # (serving.recovery): a server killed mid-switch must not leave the endpoint split
            tags = {"trainyard.endpoint": plan.endpoint, "trainyard.cluster": cluster or self.default_cluster,
                    "trainyard.kind": "rollback", "trainyard.rollback_from": plan.from_version,
                    "trainyard.server_instance": self.instance}
            if self.server_id:
                tags["trainyard.server"] = self.server_id
            run_id = registry.start_promotion(model, plan.to_version, champion, {}, tags=tags)
            try:
                manager.switch(manager.get(plan.endpoint), plan.to_version)
                registry.set_alias(model, CHAMPION, plan.to_version)
            except Exception as exc:
                registry.log_event(run_id, 1, Event(kind="failed", model=model, candidate=plan.to_version,
                                                    champion=champion, reason=f"roll-back failed: {exc}",
                                                    evidence={"endpoint": plan.endpoint}))
                registry.end_promotion(run_id, "failed")
                raise
            who = f" by {actor}" if actor else ""
            event = Event(kind=ROLLBACK_EVENT, model=model, candidate=plan.to_version, champion=champion,
                          reason=f"rolled back{who}: v{plan.from_version} -> v{plan.to_version}",
                          evidence={"endpoint": plan.endpoint, "from_version": plan.from_version,
                                    "traffic": {plan.to_version: 1.0}})
            registry.log_event(run_id, 1, event)
            registry.end_promotion(run_id, ROLLBACK_EVENT)
            return {"model": model, "endpoint": plan.endpoint, "from_version": plan.from_version,
                    "to_version": plan.to_version, "champion": plan.to_version, "run_id": run_id,
                    "event": event.to_dict()}
        finally:
            with self._lock:
                self._rolling_back.discard(model)

    # ------------------------------------------------------------------ after a restart
    def recover_promotions(self) -> list[dict]:
        """One pass: every promotion this deployment left unfinished is made safe and closed.
        Returns one dict per record; those with "error" stay RUNNING (retried by the next pass)."""
        from trainyard.serving.recovery import recover_promotion

        if not (self.tracking_uri and self.server_id):
            return []
        registry = self.registry()
        done = []
        for record in registry.unfinished_promotions(server=self.server_id):
            if record.instance == self.instance:  # started by this process: running, not abandoned
                continue
            try:
                item = recover_promotion(record, registry=registry, manager_for=self.manager)
                log.warning("promotion %s of %s v%s was left unfinished by a restart: %s (%s on endpoint %s)",
                            record.run_id, record.model, record.candidate, item["outcome"], item["action"],
                            record.endpoint)
            except Exception as exc:
                item = {"run_id": record.run_id, "model": record.model, "error": f"{type(exc).__name__}: {exc}"}
                log.error("could not recover promotion %s of %s: %s", record.run_id, record.model, item["error"])
                try:  # shown on the run; it stays RUNNING for the next pass or the next start
                    registry.mark_promotion(record.run_id, "recovery_error", item["error"])
                except Exception:
                    pass
            done.append(item)
        return done

    def start_recovery(self, *, attempts: int = 3, delay_s: float = 10.0) -> threading.Thread | None:
        """Run `recover_promotions` in a daemon thread (retried while records fail), so that the
        server's start does not wait on Serve or MLflow. New promotions wait for it to end."""
        if not (self.tracking_uri and self.server_id):
            return None
        self._recovered.clear()

        def attempt() -> list[dict]:
            try:
                items = self.recover_promotions()
            except Exception as exc:  # MLflow not up yet
                log.warning("promotion recovery: %s", exc)
                items = [{"error": str(exc)}]
            self.recoveries.extend(i for i in items if "error" not in i)
            return items

        def run():
            try:
                # records that failed (Serve or MLflow still starting) are tried again; after the
                # last attempt they stay RUNNING, for the next start
                tenacity.Retrying(stop=tenacity.stop_after_attempt(attempts), wait=tenacity.wait_fixed(delay_s),
                                  retry=tenacity.retry_if_result(lambda items: any("error" in i for i in items)),
                                  retry_error_callback=lambda _state: None)(attempt)
            finally:
                self._recovered.set()

        thread = threading.Thread(target=run, name="promotion-recovery", daemon=True)
        thread.start()
        return thread

    def promotion(self, pid: str) -> dict:
        if pid not in self.promotions:
            raise NotFoundError("promotion", pid, known=list(self.promotions),
                                fix="see `trainyard models history MODEL`")
        return self.promotions[pid]

    def history(self, model: str) -> dict:
        registry = self.registry()
        registry.versions(model)
        from trainyard.serving.policy import plan_rollback

        active = [p for p in self.promotions.values() if p["model"] == model and p["state"] == "running"]
        events = registry.history(model)
        try:
            rollback_to = plan_rollback(model, events).to_version
        except ConflictError:
            rollback_to = None
        return {"model": model, "champion": registry.alias_version(model, "champion"),
                "candidate": registry.alias_version(model, "candidate"),
                "events": events, "active": active, "rollback_to": rollback_to}

    def maybe_promote_sweep(self, sweep_id: str, spec: Mapping[str, Any], result: Mapping[str, Any],
                            cluster: str | None = None) -> dict | None:
        """After a sweep SUCCEEDED: run its `promote:` block on the model it registered (once)."""
        if not spec.get("promote") or not result.get("model_name") or sweep_id in self._sweeps_seen:
            return None
        self._sweeps_seen.add(sweep_id)
        if self.registry().promotion_for_sweep(sweep_id) is not None:
            return None  # done before a restart
        return self.promote(result["model_name"], policy=spec["promote"], candidate=result.get("model_version"),
                            cluster=cluster, tags={"trainyard.sweep_id": sweep_id})

    def promote_finished_sweeps(self, db, *, within_s: float = 86400.0) -> list[dict]:
        """One pass of the watcher: promote the winners of sweeps that SUCCEEDED lately."""
        from datetime import datetime, timedelta, timezone

        from trainyard.store import jobs as jobs_repo

        since = datetime.now(timezone.utc) - timedelta(seconds=within_s)
        todo = []
        with db.session() as s:
            for row in jobs_repo.list_jobs(s, phases=["SUCCEEDED"], kind="sweep", limit=50):
                ended = row.ended_at
                if ended is not None and ended.tzinfo is None:
                    ended = ended.replace(tzinfo=timezone.utc)
                if row.id in self._sweeps_seen or (ended is not None and ended < since):
                    continue
                todo.append((row.id, dict(row.spec or {}), dict(row.result or {}), row.cluster))
        started = []
        for sweep_id, spec, result, cluster in todo:
            try:
                record = self.maybe_promote_sweep(sweep_id, spec, result, cluster=cluster)
            except Exception as exc:  # recorded; the next sweep still gets its turn
                log.warning("promotion after sweep %s could not start: %s", sweep_id, exc)
                continue
            if record is not None:
                started.append(record)
        return started
