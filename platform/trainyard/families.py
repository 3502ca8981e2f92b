"""Where model families come from, learnt without importing them.

The control plane never imports a family (user code, or a built-in's workload module):

- Families register as entry points of the group `trainyard.workloads` (name ->
  "module:ATTRIBUTE" of a `trainyard.workload.Workload`); the built-ins register the same
  way, in Trainyard's own pyproject.toml. Listing them reads installed metadata only.
- What the server needs of a family (`WorkloadMeta`: name, metrics, metric, mode, default
  search space and hyperparameters, request/response schemas, whether it batches) is data:
  a `meta.json` beside the module the entry point names, mapping each workload name to
  its metadata. It is read as a file, found without importing anything.
- A user's own family (`package.module:ATTRIBUTE`, or a registered name without a
  meta.json) is known to the server only by what the client read on the user's machine
  and sent with the spec (`workload_meta`), checked strictly here. Without it the server
  checks the reference's syntax only, and the runner checks the rest when the job starts.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from trainyard.errors import SpecError, did_you_mean

__all__ = ["GROUP", "META_FILE", "REF_RE", "WorkloadMeta", "registered", "static_meta", "check_reference",
           "parse_meta", "meta_for", "MAX_META_BYTES"]

log = logging.getLogger("trainyard.families")

GROUP = "trainyard.workloads"
META_FILE = "meta.json"
# dotted identifiers, one colon, an attribute: no path, no '..', no leading ':'
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
REF_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}$")
MAX_REF_CHARS = 200
MAX_META_BYTES = 64 * 1024
_MAX_METRICS = 64
_MAX_KEYS = 256
_NAME_CHARS = 100
_TRAINYARD_DIST = "trainyard"


@dataclass(frozen=True)
class WorkloadMeta:
    """What the control plane knows of a family: data only, no code."""

    name: str
    metric: str
    mode: str
    metrics: tuple[str, ...]
    search_space: Mapping[str, Any] = field(default_factory=dict)
    default_hparams: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    request_schema: Mapping[str, Any] = field(default_factory=dict)
    response_schema: Mapping[str, Any] = field(default_factory=dict)
    batches: bool = False
    # JSON Schema of `hyperparameters` (a property's "description" is the fix shown on failure)
    hparams_schema: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = list(self.metrics)
        return data


# --------------------------------------------------------------------------- registration


def _source_tree_entries() -> dict[str, str] | None:
    """Trainyard's own entries from pyproject.toml when running from a source checkout.

    An editable install's metadata is written once at install time; reading the checkout's
    pyproject keeps the built-ins right after the table changes, before a reinstall."""
    spec = importlib.util.find_spec("trainyard")
    if spec is None or not spec.origin:
        return None
    pyproject = Path(spec.origin).resolve().parent.parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, ValueError):
        return None
    if (data.get("project") or {}).get("name") != _TRAINYARD_DIST:
        return None
    return dict(((data["project"].get("entry-points") or {}).get(GROUP)) or {})


@functools.lru_cache(maxsize=1)
def registered() -> dict[str, str]:
    """Family name -> "module:ATTRIBUTE", from the `trainyard.workloads` entry points.

    Reads installed metadata only: no family module is imported. Cached for the process;
    `registered.cache_clear()` rereads (tests that install a distribution)."""
    found: dict[str, str] = {}
    own = _source_tree_entries()
    for ep in importlib.metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        if own is not None and dist is not None and dist.name == _TRAINYARD_DIST:
            continue  # the checkout's table wins over its (possibly stale) install
        found.setdefault(ep.name, ep.value)
    if own:
        found = {**own, **{k: v for k, v in found.items() if k not in own}}
    return found


def _module_dir(module: str) -> Path | None:
    """The folder holding `module`'s file, found without importing it or its parents."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: finders only, no import
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not dirs:
        return Path(spec.origin).parent if spec.origin and len(parts) == 1 else None
    for part in parts[1:]:
        below = [d / part for d in dirs if (d / part).is_dir()]
        if not below:  # the last part is a module file in the current folder
            return next((d for d in dirs if (d / f"{part}.py").is_file()), None)
        dirs = below
    return dirs[0]


@functools.lru_cache(maxsize=64)
def static_meta(name: str) -> WorkloadMeta | None:
    """The metadata a registered family ships as data (its meta.json), or None."""
    ref = registered().get(name)
    if ref is None or not REF_RE.match(ref):
        return None
    folder = _module_dir(ref.partition(":")[0])
    path = folder / META_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = table.get(name) if isinstance(table, dict) else None
    if entry is None:
        return None
    try:
        return parse_meta(entry, field=str(path))
    except SpecError as exc:  # a plugin's broken file: treat the family as one without metadata
        log.warning("ignoring the metadata of workload %r: %s", name, exc)
        return None


# --------------------------------------------------------------------------- references


def check_reference(ref: Any, *, field_name: str = "workload") -> str:
    """A registered name, or a `package.module:ATTRIBUTE` reference; else SpecError."""
    known = registered()
    if isinstance(ref, str) and ref in known:
        return ref
    if not isinstance(ref, str) or len(ref) > MAX_REF_CHARS or ":" not in ref:
        names = ", ".join(sorted(known))
        hint = did_you_mean(ref, known) if isinstance(ref, str) else ""
        raise SpecError(f"workload {str(ref)[:MAX_REF_CHARS]!r} is not known;{hint or ''} Known: {names}",
                        field=field_name, value=str(ref)[:MAX_REF_CHARS],
                        fix="use a registered family name, or 'package.module:ATTRIBUTE' for your own")
    if not REF_RE.match(ref):
        raise SpecError(f"{ref!r} is not a module reference", field=field_name, value=ref,
                        fix="write 'package.module:ATTRIBUTE': dotted Python identifiers, one ':', "
                            "no paths and no '..'")
    return ref


# --------------------------------------------------------------------------- metadata


def _bad(field_name: str, message: str, value: Any = None, fix: str | None = None) -> SpecError:
    return SpecError(message, field=field_name, value=value, fix=fix)


def _text(data: Mapping, key: str, where: str, *, limit: int, required: bool = True) -> str:
    value = data.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise _bad(f"{where}.{key}", f"must be a string of 1..{limit} characters, got {str(value)[:80]!r}",
                   None if value is None else str(value)[:80])
    return value


def _mapping(data: Mapping, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict) or len(value) > _MAX_KEYS or not all(isinstance(k, str) for k in value):
        raise _bad(f"{where}.{key}", f"must be a mapping of at most {_MAX_KEYS} string keys",
                   type(value).__name__)
    return value


_META_KEYS = {"name", "metric", "mode", "metrics", "search_space", "default_hparams", "description",
              "request_schema", "response_schema", "batches", "hparams_schema"}


def parse_meta(data: Any, *, field: str = "workload_meta") -> WorkloadMeta:
    """Strictly check metadata (sent by a client, or read from a meta.json): types, sizes.

    Raises SpecError naming the field; coerces nothing."""
    if not isinstance(data, dict):
        raise _bad(field, f"must be a mapping, got {type(data).__name__}")
    try:
        size = len(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        raise _bad(field, "must be plain JSON (no NaN or infinity, not nested without end)") from None
    if size > MAX_META_BYTES:
        raise _bad(field, f"is {size} bytes of JSON, more than {MAX_META_BYTES}",
                   fix="trim the default search space or the schemas")
    unknown = sorted(set(data) - _META_KEYS)
    if unknown:
        raise _bad(f"{field}.{unknown[0]}", "unknown key", None, f"allowed keys: {', '.join(sorted(_META_KEYS))}")
    name = _text(data, "name", field, limit=_NAME_CHARS)
    metric = _text(data, "metric", field, limit=_NAME_CHARS)
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in ("max", "min"):
        raise _bad(f"{field}.mode", f"must be 'max' or 'min', got {str(mode)[:20]!r}")
    metrics = data.get("metrics")
    if (not isinstance(metrics, list) or not 1 <= len(metrics) <= _MAX_METRICS
            or not all(isinstance(m, str) and 0 < len(m) <= _NAME_CHARS for m in metrics)):
        raise _bad(f"{field}.metrics", f"must be a list of 1..{_MAX_METRICS} metric names")
    if metric not in metrics:
        raise _bad(f"{field}.metric", f"{metric!r} is not in metrics {metrics}", metric)
    batches = data.get("batches", False)
    if not isinstance(batches, bool):
        raise _bad(f"{field}.batches", f"must be true or false, got {str(batches)[:20]!r}")
    return WorkloadMeta(
        name=name, metric=metric, mode=mode, metrics=tuple(metrics),
        search_space=_mapping(data, "search_space", field),
        default_hparams=_mapping(data, "default_hparams", field),
        description=_text(data, "description", field, limit=1000, required=False),
        request_schema=_mapping(data, "request_schema", field),
        response_schema=_mapping(data, "response_schema", field),
        batches=batches,
        hparams_schema=_mapping(data, "hparams_schema", field))


def meta_for(ref: str, *, supplied: Any = None, field_name: str = "workload") -> WorkloadMeta | None:
    """What the control plane knows of `ref`, without importing it.

    A registered family with a meta.json: that (whatever was supplied). Otherwise the
    client-supplied metadata, checked strictly; or None when none was sent (the runner
    checks the workload when the job starts). Raises SpecError for an unknown name or a
    malformed reference."""
    ref = check_reference(ref, field_name=field_name)
    known = static_meta(ref) if ref in registered() else None
    if known is not None:
        return known
    if supplied is None or isinstance(supplied, WorkloadMeta):
        return supplied  # a WorkloadMeta comes from the imported Workload itself (the runner)
    return parse_meta(supplied)
