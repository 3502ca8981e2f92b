"""The MLflow Model Registry as promotion sees it: versions, aliases, metrics, events.

Aliases: `candidate` (set by a sweep for its winner) and `champion` (what the endpoint
serves at full traffic). Promotion events go to the experiment `trainyard-promotions`,
one run per promotion, each event a JSON tag `event.NNNN`, so that
`trainyard models history` reads them back with one search and no artifact download.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from trainyard.errors import NotFoundError, SpecError
from trainyard.serving.policy import Event

__all__ = ["Registry", "PromotionRecord", "CANDIDATE", "CHAMPION", "EVENTS_EXPERIMENT"]

CANDIDATE = "candidate"
CHAMPION = "champion"
EVENTS_EXPERIMENT = "trainyard-promotions"
MODEL_TAG = "trainyard.model"
SERVER_TAG = "trainyard.server"  # the deployment (store) whose server ran the promotion
INSTANCE_TAG = "trainyard.server_instance"  # that server process


def _version_tag(value: str | None) -> str | None:
    return None if value in (None, "", "None") else str(value)


@dataclass(frozen=True)
class PromotionRecord:
    """A promotion's MLflow run, as a restarted server reads it back (see serving/recovery.py)."""

    run_id: str
    model: str
    candidate: str | None
    champion: str | None  # when it started
    endpoint: str
    cluster: str | None
    instance: str | None
    outcome: str | None  # set just before the run is terminated
    served_before: str | None  # no champion: the version the endpoint served first ("" none, None unknown)
    last_event: str | None
    next_seq: int
    recovered: bool  # an `interrupted` event is already logged (a restart during the recovery)
    start_time: int = 0
    kind: str = "promotion"  # or "rollback": a roll-back asked for by hand (candidate: its target)
    rollback_from: str | None = None  # a roll-back: the version it takes the endpoint off

    @classmethod
    def from_run(cls, run) -> "PromotionRecord":
        tags, params = run.data.tags, run.data.params
        model = tags.get(MODEL_TAG, "")
        events = []
        for key, value in tags.items():
            if key.startswith("event."):
                try:
                    events.append((int(key.split(".", 1)[1]), json.loads(value)))
                except ValueError:
                    continue
        events.sort(key=lambda e: e[0])
        endpoint = tags.get("trainyard.endpoint") or params.get("policy.endpoint")
        if endpoint in (None, "", "None"):  # a record from before the endpoint tag: its events name it
            endpoint = next((e.get("evidence", {}).get("endpoint") for _, e in events
                             if isinstance(e, dict) and e.get("evidence", {}).get("endpoint")), None) or model
        return cls(run_id=run.info.run_id, model=model, candidate=_version_tag(tags.get("trainyard.candidate")),
                   champion=_version_tag(tags.get("trainyard.champion")), endpoint=endpoint,
                   cluster=tags.get("trainyard.cluster") or None, instance=tags.get(INSTANCE_TAG) or None,
                   outcome=tags.get("trainyard.outcome") or None, served_before=tags.get("trainyard.served_before"),
                   last_event=tags.get("trainyard.last_event") or None,
                   next_seq=(events[-1][0] if events else 0) + 1,
                   recovered=any(isinstance(e, dict) and (e.get("evidence") or {}).get("interrupted")
                                 for _, e in events),
                   start_time=int(run.info.start_time or 0),
                   kind=tags.get("trainyard.kind") or "promotion",
                   rollback_from=_version_tag(tags.get("trainyard.rollback_from")))


class Registry:
    def __init__(self, tracking_uri: str):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._families: dict[tuple[str, str], str | None] = {}

    # ------------------------------------------------------------------ models and versions
    def _model(self, name: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException:
            known = [m.name for m in self.client.search_registered_models(max_results=200)]
            raise NotFoundError("model", name, known=known, fix="list them with `trainyard models list`") from None

    def project(self, name: str) -> str:
        """The project that owns registered model `name` (its `trainyard.project` tag, set when a
        job registers it; `default` for models registered before projects existed)."""
        return (self._model(name).tags or {}).get("trainyard.project") or "default"

    def versions(self, name: str) -> list[str]:
        self._model(name)
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted((str(v.version) for v in found), key=int)

    def alias_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def resolve(self, name: str, *, version: str | None = None, alias: str | None = None) -> str:
        """The version to serve: explicit version, else alias, else `champion`, else the latest."""
        model = self._model(name)
        if version is not None:
            known = self.versions(name)
            if str(version) not in known:
                raise SpecError(f"model {name!r} has no version {version}", field="version", value=str(version),
                                fix=f"its versions: {', '.join(known) or 'none'}")
            return str(version)
        if alias is not None:
            found = self.alias_version(name, alias)
            if found is None:
                aliases = sorted((getattr(model, "aliases", None) or {}).keys())
                raise SpecError(f"model {name!r} has no alias {alias!r}", field="alias", value=alias,
                                fix=f"set aliases: {', '.join(aliases) or 'none'}; or deploy with --version")
            return found
        champion = self.alias_version(name, CHAMPION)
        if champion is not None:
            return champion
        known = self.versions(name)
        if not known:
            raise SpecError(f"model {name!r} has no versions", field="model", value=name,
                            fix="train a job that registers it first")
        return known[-1]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def family(self, name: str, version: str) -> str | None:
        """The Workload name the version was trained with (from its model metadata)."""
        key = (name, str(version))
        if self._families.get(key) is None:  # a version's model never changes: read it once
            self._families[key] = self._read_family(name, str(version))
        return self._families[key]

    def _read_family(self, name: str, version: str) -> str | None:
        mv = self.client.get_model_version(name, version)
        for key in ("trainyard.workload", "workload"):
            if key in (mv.tags or {}):
                return mv.tags[key]
        # the MLmodel file's metadata, read through *this* tracking server: mlflow's
        # get_model_info("models:/...") would ask the process-wide default one instead
        try:
            import tempfile

            import yaml
            from mlflow.artifacts import download_artifacts

            source = str(mv.source or "")
            model_id = getattr(mv, "model_id", None) or (
                source.split("/")[-1] if source.startswith("models:/m-") else None)
            location = self.client.get_logged_model(model_id).artifact_location if model_id else source
            with tempfile.TemporaryDirectory(prefix="ty-mlmodel-") as tmp:
                path = download_artifacts(artifact_uri=f"{location.rstrip('/')}/MLmodel",
                                          tracking_uri=self.tracking_uri, dst_path=tmp)
                with open(path) as fh:
                    meta = (yaml.safe_load(fh) or {}).get("metadata") or {}
            return meta.get("trainyard_workload")
        except Exception:
            return None

    def metric(self, name: str, version: str, metric: str) -> float | None:
        """The version's value of `metric`: a version tag `metric.<m>` wins, else its run's metric."""
        mv = self.client.get_model_version(name, str(version))
        tags = mv.tags or {}
        for key in (f"metric.{metric}", f"trainyard.metric.{metric}"):
            if key in tags:
                try:
                    return float(tags[key])
                except ValueError:
                    pass
        if mv.run_id:
            run = self.client.get_run(mv.run_id)
            if metric in run.data.metrics:
                return float(run.data.metrics[metric])
        return None

    # ------------------------------------------------------------------ promotion events
    def _events_experiment(self) -> str:
        exp = self.client.get_experiment_by_name(EVENTS_EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(EVENTS_EXPERIMENT)
        except Exception:  # created meanwhile by someone else
            return self.client.get_experiment_by_name(EVENTS_EXPERIMENT).experiment_id

    def start_promotion(self, model: str, candidate: str | None, champion: str | None, policy: dict,
                        tags: dict | None = None) -> str:
        run = self.client.create_run(self._events_experiment(), run_name=f"promote-{model}-v{candidate}",
                                     tags={MODEL_TAG: model, "trainyard.candidate": str(candidate),
                                           "trainyard.champion": str(champion), **(tags or {})})
        for key, value in _flat(policy).items():
            self.client.log_param(run.info.run_id, f"policy.{key}", value)
        return run.info.run_id

    def log_event(self, run_id: str, seq: int, event: Event) -> None:
        from mlflow.entities import Metric

        text = json.dumps(event.to_dict(), default=str, separators=(",", ":"))
        self.client.set_tag(run_id, f"event.{seq:04d}", text[:7900])
        self.client.set_tag(run_id, "trainyard.last_event", event.kind)
        now = int(time.time() * 1000)
        numbers = [Metric(f"{event.kind}.{k}", v, now, seq) for k, v in _flat(event.evidence).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers:
            self.client.log_batch(run_id, metrics=numbers[:1000])

    def end_promotion(self, run_id: str, outcome: str) -> None:
        self.client.set_tag(run_id, "trainyard.outcome", outcome)
        self.client.set_terminated(run_id, "FINISHED" if outcome != "failed" else "FAILED")

    def unfinished_promotions(self, *, server: str) -> list[PromotionRecord]:
        """Promotions that `server`'s deployment started and never ended (status RUNNING), oldest first."""
        exp = self.client.get_experiment_by_name(EVENTS_EXPERIMENT)
        if exp is None:
            return []
        wanted = f"attributes.status = 'RUNNING' and tags.`{SERVER_TAG}` = '{server}'"
        runs = self.client.search_runs([exp.experiment_id], filter_string=wanted, max_results=1000,
                                       order_by=["attributes.start_time ASC"])
        return [PromotionRecord.from_run(run) for run in runs]

    def mark_promotion(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, f"trainyard.{key}", value[:5000])

    def promotion_for_sweep(self, sweep_id: str) -> str | None:
        """The promotion run started for a sweep, if any (so a restarted server does not redo it)."""
        exp = self.client.get_experiment_by_name(EVENTS_EXPERIMENT)
        if exp is None:
            return None
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`trainyard.sweep_id` = '{sweep_id}'",
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def history(self, model: str) -> list[dict]:
        """Every promotion event of `model`, oldest first."""
        exp = self.client.get_experiment_by_name(EVENTS_EXPERIMENT)
        if exp is None:
            return []
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`{MODEL_TAG}` = '{model}'",
                                       max_results=1000)
        events = []
        for run in runs:
            for key, value in run.data.tags.items():
                if key.startswith("event."):
                    try:
                        data = json.loads(value)
                    except ValueError:
                        continue
                    data["promotion_run_id"] = run.info.run_id
                    events.append(data)
        return sorted(events, key=lambda e: e.get("time") or 0)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}." if not isinstance(value, dict) else f"{prefix}{key}."))
        return {k.rstrip("."): v for k, v in out.items()}
    out[prefix] = data
    return out
