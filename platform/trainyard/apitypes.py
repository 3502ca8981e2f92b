"""The REST API's response contract: one pydantic model per answer.

The server declares them as `response_model` (FastAPI validates every answer against them and
publishes them in /openapi.json, from which the console's TypeScript types are generated);
the SDK parses answers into them. This module imports pydantic only, so that the SDK and the
CLI get the models without FastAPI; `trainyard.api.models` re-exports it for the server side.

Fixed shapes forbid extra keys: a field added to an answer (controller/views.py) must be added
here too, or the route answers 500 and tests/unit/test_api_contract.py says which field.
Free-form parts (a job's spec, progress and result; promotion evidence) stay `dict`.

Dict-style access (`job["id"]`, `job.get("state")`) still works on every model but is
deprecated: use attributes (`job.id`). It remains for the callers written against the SDK's
dict answers and will go in a later release.
"""
from __future__ import annotations

import warnings
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, RootModel

__all__ = [
    "ApiModel", "Health", "ServerInfo", "QueueStats", "ControllerStatus", "Status",
    "PendingInfo", "WorkersRange", "Job", "JobDetail", "JobList", "SweepModel", "Leaderboard", "SweepSummary", "Sweep",
    "SweepList", "SpecCheck", "Cluster", "ClusterList",
    "EndpointSummary", "EndpointList", "EndpointVersion", "Replicas", "Endpoint", "Deployment",
    "EndpointKey", "CreatedEndpointKey", "EndpointKeyList", "PromotionEvent", "PromotionResult",
    "Promotion", "ModelHistory", "Rollback", "AuthConfig", "OpenAPIDocument",
    "Me", "User", "UserList", "CreatedToken", "Token", "TokenList", "ProjectSummary", "ProjectList",
    "Member", "BudgetUse", "QuotaView", "Project", "Membership", "AuditEvent", "AuditList",
    "to_plain",
]


class _DictAccess:
    """`model["field"]` and `model.get("field")`: deprecated, for callers of the dict-era SDK."""

    def __getitem__(self, key: str) -> Any:
        warnings.warn(f"{type(self).__name__}[{key!r}] is deprecated: use the attribute .{key}",
                      DeprecationWarning, stacklevel=2)
        if not isinstance(key, str) or not self._has(key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        warnings.warn(f"{type(self).__name__}.get({key!r}) is deprecated: use the attribute .{key}",
                      DeprecationWarning, stacklevel=2)
        return getattr(self, key) if isinstance(key, str) and self._has(key) else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._has(key)

    def _has(self, key: str) -> bool:
        return key in type(self).model_fields or key in (self.__pydantic_extra__ or {})  # type: ignore[attr-defined]


class ApiModel(_DictAccess, BaseModel):
    """A fixed-shape answer: an unknown key is an error, on the server and in the SDK."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class OpenModel(_DictAccess, BaseModel):
    """An answer whose nested producers may add keys (kept, untyped)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


def to_plain(value: Any) -> Any:
    """JSON-ready data from a model, a list of them, or plain data (for printing)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- system
class Health(ApiModel):
    ok: bool
    version: str


class ServerInfo(ApiModel):
    version: str
    uptime_s: float
    db: str
    mlflow_uri: Optional[str]
    storage: str


class QueueStats(ApiModel):
    pending: int
    active: int
    plans: int
    skipped: int
    scans: int
    rows_read: int
    notes_written: int
    preemptions: int = Field(0, description="Running jobs this server asked to checkpoint and stop for others.")
    last_plan_ms: Optional[float]
    last_dispatch_ms: Optional[float]


class ControllerStatus(ApiModel):
    ticks: int
    last_tick_at: Optional[str]
    last_error: Optional[str]
    poll_interval_s: float
    last_wait_s: Optional[float] = Field(
        None, description="The pause after the last tick: poll_interval_s, or longer when ticks over a long queue "
                          "would otherwise take more than controller_max_share of the CPU time (the rests a "
                          "tick took within itself count toward the pause; controller_busy_share instead while "
                          "the API was serving requests).")
    busy_rests: int = Field(0, description="Rests the ticks took at controller_busy_share, because the API was "
                                           "serving requests: how often requests held the scheduler back.")
    autoscaler_demand: dict[str, Any]
    queue: QueueStats


# ----------------------------------------------------------------------------- the queue
class QueueEntry(ApiModel):
    """A queued job as `GET /v1/queue` lists it."""

    id: str
    name: str
    project: str
    owner: Optional[str]
    priority: int
    kind: str
    created_at: Optional[str]
    cluster: Optional[str] = Field(..., description="Where the scheduler would place it; null: not placed yet.")
    position_in_queue: Optional[int]
    position_in_project: Optional[int]
    position_in_cluster: Optional[int]
    reason: Optional[dict[str, Any]] = Field(..., description="`code`, `message` and details; null until "
                                                               "the controller looked at the job.")
    estimated_start: Optional[str]


class ClusterQueue(ApiModel):
    cluster: Optional[str]
    count: int = Field(..., description="Queued jobs for this cluster (all of them, also those not listed).")
    jobs: list[QueueEntry]


class QuotaUse(ApiModel):
    nominal: dict[str, float]
    borrowing_limit: Optional[dict[str, float]]
    used: dict[str, float] = Field(..., description="What the project's dispatched and running jobs hold.")


class BudgetLeft(ApiModel):
    used_hours: float
    budget_hours: float
    remaining_hours: float


class ProjectQueue(ApiModel):
    project: str
    queued: int
    running: int
    weight: float
    quota: Optional[QuotaUse]
    budget: Optional[dict[str, BudgetLeft]] = Field(..., description="'gpu' and/or 'cpu', where budgeted.")


class Queue(ApiModel):
    """`GET /v1/queue`: the queue per cluster and project, only the projects the caller can read."""

    clusters: list[ClusterQueue]
    projects: list[ProjectQueue]
    total: int
    truncated: bool = Field(..., description="More jobs are queued than `limit` listed.")


# ----------------------------------------------------------------------------- jobs
class PendingInfo(ApiModel):
    """Why a PENDING job waits."""

    reason: dict[str, Any] = Field(..., description="`code`, `message` (a sentence) and the code's details.")
    position_in_queue: Optional[int]
    position_in_project: Optional[int]
    position_in_cluster: Optional[int]
    estimated_start: Optional[str] = Field(..., description="ISO 8601, or null when unknown.")


class WorkersRange(ApiModel):
    """An elastic job's resources.workers {min, max}, and its grant."""

    min: int
    max: int
    granted: Optional[int] = Field(None, description="The most workers the scheduler let the current attempt "
                                                     "grow to (its project's quota room); null until dispatched.")


class Job(ApiModel):
    """A job (or a sweep) as lists show it."""

    id: str
    kind: Literal["job", "sweep"]
    name: str
    project: str
    owner: Optional[str]
    priority: int
    state: str = Field(..., description="Public state: PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, ...")
    phase: str = Field(..., description="The controller's finer phase (DISPATCHING, STOPPING, ...).")
    workload: Optional[str]
    workers: int = Field(..., description="Workers it holds: while it runs, an elastic job's live world size "
                                          "(its min before the first progress line); queued or ended, the "
                                          "count it is admitted at (an elastic job's min).")
    workers_range: Optional[WorkersRange] = Field(None, description="An elastic job's worker range and the most "
                                                                    "its quota let this attempt grow to; null for "
                                                                    "a fixed job.")
    cluster: Optional[str]
    submission_id: Optional[str]
    attempt: int
    created_at: Optional[str]
    started_at: Optional[str]
    ended_at: Optional[str]
    duration_s: Optional[float]
    message: Optional[str]
    metrics: Optional[dict[str, Any]]
    mlflow_run_id: Optional[str]
    mlflow_experiment_id: Optional[str]
    mlflow_url: Optional[str]
    cancel_requested: bool
    pending: Optional[PendingInfo] = Field(..., description="Why it waits; null once it left the queue.")
    # fields that other parts of the server fill in as they land: optional, null until then
    cost: Optional[dict[str, Any]] = Field(None, description="The job's cost and utilization record.")
    preemptions: Optional[int] = Field(None, description="How many times the job was preempted.")
    preempted_s: Optional[float] = Field(None, description="Seconds spent preempted.")


class JobDetail(Job):
    """A job described: progress while it runs, result when done, its (redacted) spec and events."""

    progress: Optional[dict[str, Any]]
    result: Optional[dict[str, Any]]
    spec: dict[str, Any]
    events: list[dict[str, Any]]


class JobList(ApiModel):
    jobs: list[Job]
    count: int = Field(..., description="How many jobs this page holds.")
    limit: int
    offset: int
    total: Optional[int] = Field(None, description="How many jobs match the filters, over all pages.")
    next_cursor: Optional[str] = Field(None, description="Pass as `cursor` for the next page; null: last page.")


# ----------------------------------------------------------------------------- sweeps
class Leaderboard(OpenModel):
    metric: Optional[str] = None
    mode: Optional[str] = None
    rows: list[dict[str, Any]] = Field(default_factory=list, description="One row per trial, best first.")
    best: Optional[dict[str, Any]] = None
    curves: dict[str, list[list[Optional[float]]]] = Field(
        default_factory=dict, description="Per trial: [time_s, iteration, step, value] points.")
    best_so_far: list[list[Optional[float]]] = Field(
        default_factory=list, description="[time_s, total_steps_spent, best_value] points.")
    live: bool = Field(False, description="True while the sweep runs (the board of its last progress line).")


class SweepModel(ApiModel):
    model_name: Optional[str]
    model_version: Optional[str]
    model_alias: Optional[str]
    registered_trial: Optional[str]


class SweepSummary(Job):
    best: Optional[dict[str, Any]]
    num_trials: Optional[int]


class SweepList(ApiModel):
    sweeps: list[SweepSummary]
    count: int
    limit: int
    offset: int


class Sweep(JobDetail):
    leaderboard: Optional[Leaderboard]
    best: Optional[dict[str, Any]]
    sweep: Optional[dict[str, Any]] = Field(..., description="The spec's `sweep:` block.")
    promote: Optional[dict[str, Any]] = Field(..., description="The spec's `promote:` block.")
    model: Optional[SweepModel] = Field(..., description="The model version the sweep registered.")


class SpecCheck(ApiModel):
    """A spec that passed every check a submission makes (POST /v1/jobs/validate, /v1/sweeps/validate).
    A spec that fails answers 422 with the same field-named `issues` as a submission would."""

    valid: Literal[True] = True
    kind: Literal["job", "sweep"]
    project: str = Field(..., description="The project the spec would be submitted into.")
    spec: dict[str, Any] = Field(..., description="The spec as the server normalised it (defaults filled "
                                                   "in), env values masked as in a job's description.")


# ----------------------------------------------------------------------------- clusters
class Cluster(ApiModel):
    name: str
    address: str
    auth: Literal["token", "none"]
    token_file: Optional[str]
    reachable: Optional[bool] = Field(..., description="Null until the controller has checked it.")
    nodes: int
    resources_total: dict[str, float]
    resources_free: dict[str, float]
    max_resources: Optional[dict[str, Any]]
    last_seen_at: Optional[str]
    last_error: Optional[str]
    created_at: Optional[str]


class ClusterList(ApiModel):
    clusters: list[Cluster]


class Status(ApiModel):
    server: ServerInfo
    clusters: list[Cluster]
    jobs: dict[str, int] = Field(..., description="Jobs per public state (of the caller's projects).")
    controller: ControllerStatus


# ----------------------------------------------------------------------------- endpoints, models
class EndpointSummary(ApiModel):
    name: str
    model: str
    project: str
    public: bool
    status: Optional[str]
    weights: dict[str, float]
    canary: Optional[str]
    route: str
    url: str


class EndpointList(ApiModel):
    endpoints: list[EndpointSummary]


class EndpointVersion(ApiModel):
    version: str
    weight: float
    role: Literal["stable", "canary", "draining"]
    requests: int
    errors: int
    error_rate: Optional[float]
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    request_rate: float
    recent_error_rate: Optional[float]
    recent_p50_ms: Optional[float]
    recent_p99_ms: Optional[float]


class Replicas(ApiModel):
    running: int
    target: Optional[int]
    status: Optional[str]


class Endpoint(ApiModel):
    name: str
    model: str
    project: str
    public: bool
    keys: int = Field(..., description="How many endpoint keys exist (never their text).")
    family: Optional[str]
    status: Optional[str]
    url: str
    split: str
    generation: int
    replicas: dict[str, Replicas] = Field(..., description="Per Serve deployment.")
    autoscaling: dict[str, Any]
    versions: list[EndpointVersion]


class Deployment(ApiModel):
    name: str
    model: str
    version: str
    url: str
    created: bool = Field(..., description="True: a new endpoint; false: an existing one moved to `version`.")


class EndpointKey(ApiModel):
    id: str
    name: str
    created_at: Optional[str]


class CreatedEndpointKey(EndpointKey):
    key: str = Field(..., description="Shown this once; the endpoint keeps only its hash.")


class EndpointKeyList(ApiModel):
    keys: list[EndpointKey]


class PromotionEvent(OpenModel):
    kind: str = Field(..., description="compared, canary_started, promoted, rejected, rolled_back, failed, ...")
    model: str
    candidate: Optional[str]
    champion: Optional[str]
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    time: float


class PromotionResult(ApiModel):
    model: str
    candidate: Optional[str]
    champion_before: Optional[str]
    champion_after: Optional[str]
    state: str
    reason: Optional[str]
    run_id: Optional[str]
    events: list[PromotionEvent]


class Promotion(ApiModel):
    id: str
    model: str
    state: str = Field(..., description="running, then the outcome (promoted, rejected, rolled_back, failed).")
    started_at: float
    events: list[PromotionEvent]
    result: Optional[PromotionResult]
    error: Optional[dict[str, Any]]


class ModelHistory(ApiModel):
    model: str
    champion: Optional[str]
    candidate: Optional[str]
    events: list[dict[str, Any]] = Field(..., description="Every promotion decision recorded in MLflow.")
    active: list[Promotion] = Field(..., description="Promotions of the model running on this server now.")
    rollback_to: Optional[str] = Field(None, description="The version `POST /v1/models/{name}/rollback` would "
                                                         "serve again; null: nothing to roll back.")


class Rollback(ApiModel):
    """`POST /v1/models/{name}/rollback`: the endpoint serves the version from before the last promotion."""

    model: str
    endpoint: str
    from_version: str = Field(..., description="The version the last promotion put in place.")
    to_version: str = Field(..., description="The version served again (the champion it replaced).")
    champion: str = Field(..., description="The model's `champion` alias now.")
    run_id: str = Field(..., description="The MLflow run that records the roll-back in the promotion history.")
    event: PromotionEvent


# ----------------------------------------------------------------------------- sign-on
class AuthConfig(ApiModel):
    """`GET /v1/auth/config` (no token needed): how the console signs in. Public values only."""

    sso: bool = Field(..., description="true when the server accepts tokens from an OIDC issuer and the console "
                                       "may sign in through it (issuer and client id are set).")
    issuer: Optional[str] = Field(None, description="The issuer (its discovery document is "
                                                    "`<issuer>/.well-known/openid-configuration`).")
    client_id: Optional[str] = Field(None, description="The console's public client id (no secret: PKCE).")
    scopes: Optional[str] = Field(None, description="Space-separated scopes the console asks for.")
    redirect_path: Optional[str] = Field(None, description="Where the issuer sends the browser back, on this "
                                                           "server: register `<server URL><redirect_path>`.")
    token: Optional[Literal["id_token", "access_token"]] = Field(
        None, description="Which of the issuer's tokens the console sends as Bearer (the one whose `aud` is this "
                          "server's TRAINYARD_OIDC_AUDIENCE).")


class OpenAPIDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3 document."""


# ----------------------------------------------------------------------------- identity, teams
class Me(ApiModel):
    user: str
    kind: Literal["user", "service"]
    admin: bool
    via: Literal["token", "oidc"]
    projects: dict[str, str] = Field(..., description="The caller's role per project (admins: every project, "
                                                      "as 'admin').")


class User(ApiModel):
    name: str
    kind: str
    admin: bool
    disabled: bool
    created_at: Optional[str]


class UserList(ApiModel):
    users: list[User]


class CreatedToken(ApiModel):
    id: str
    name: str
    user: str
    token: str = Field(..., description="Shown this once; the server keeps only its hash.")
    created_at: Optional[str]
    expires_at: Optional[str]


class Token(ApiModel):
    id: str
    name: str
    user: str
    created_at: Optional[str]
    expires_at: Optional[str]
    last_used_at: Optional[str]
    revoked_at: Optional[str]


class TokenList(ApiModel):
    tokens: list[Token]


class ProjectSummary(ApiModel):
    name: str
    description: str
    created_at: Optional[str]
    role: str = Field(..., description="The caller's role: viewer, member, maintainer, or admin.")


class ProjectList(ApiModel):
    projects: list[ProjectSummary]


class Member(ApiModel):
    user: str
    role: str


class BudgetUse(ApiModel):
    used_hours: float
    budget_hours: Optional[float]
    remaining_hours: Optional[float]
    burn_per_day: float = Field(..., description="Resource-hours used over the last day.")
    exhausted_at: Optional[str] = Field(None, description="When the budget runs out at this burn rate.")


class QuotaView(ApiModel):
    weight: float
    nominal: Optional[dict[str, float]]
    borrowing_limit: Optional[dict[str, float]]
    lending_limit: Optional[dict[str, float]]
    budget: Optional[dict[str, Optional[float]]]
    usage: dict[str, BudgetUse] = Field(..., description="'gpu' and 'cpu': used within the budget's window "
                                                          "(30 days without a budget), remaining, burn rate.")
    updated_at: Optional[str]


class Project(ProjectSummary):
    members: list[Member]
    quota: QuotaView


class Membership(ApiModel):
    project: str
    user: str
    role: str


class AuditEvent(ApiModel):
    id: int
    at: Optional[str]
    actor: str
    action: str
    object_type: str
    object_id: Optional[str]
    project: Optional[str]
    status_code: int
    outcome: str
    source_ip: Optional[str]


class AuditList(ApiModel):
    events: list[AuditEvent]
    total: int
