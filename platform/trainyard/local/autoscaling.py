"""The local fake multi-node cluster: cluster/local.yaml with this head's GCS address.

`trainyard up --autoscaling` renders the config, then starts the head with it:

    path = render_local_config(gcs_address, out_dir=temp_dir)
    start_ray_head(..., gcs_port=port, autoscaling_config=str(path))   # sets RAY_FAKE_CLUSTER=1

The GCS address must be known before the head starts (the autoscaler reads the file at
start), so pick the port first (free_port()) and pass it to both.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Mapping

from trainyard.errors import StackError

__all__ = ["default_template", "local_config", "render_local_config", "RECLAIMING_PROVIDER"]

# the provider `trainyard up --autoscaling` runs the template's fake cluster with
# (trainyard.local.fake_provider, imported only by the autoscaler's monitor process)
RECLAIMING_PROVIDER = "trainyard.local.fake_provider.ReclaimingFakeProvider"

_REPO_TEMPLATE = Path(__file__).resolve().parents[3] / "cluster" / "local.yaml"


def default_template() -> Path:
    """cluster/local.yaml of the source checkout this package runs from."""
    if not _REPO_TEMPLATE.exists():
        raise StackError(
            f"the local cluster config {_REPO_TEMPLATE} does not exist",
            fix="run from a source checkout of Trainyard, or pass template= the path of a "
                "fake_multinode config (see cluster/local.yaml)")
    return _REPO_TEMPLATE


def local_config(gcs_address: str, *, template: str | Path | Mapping[str, Any] | None = None,
                 head_cpus: int | None = None) -> dict:
    """The config dict: the template with `provider.gcs_address` set (and the head's CPUs).

    Pure apart from reading the template file; the template itself is never changed.
    """
    import yaml

    host, _, port = gcs_address.rpartition(":")
    if not host or not port.isdigit():
        raise StackError(f"gcs_address must be 'host:port', got {gcs_address!r}",
                         fix="pass RayHead.gcs_address, e.g. '127.0.0.1:61234'")
    if isinstance(template, Mapping):
        config = copy.deepcopy(dict(template))
    else:
        config = yaml.safe_load(Path(template or default_template()).read_text())
    provider = config.setdefault("provider", {})
    if provider.get("type") != "fake_multinode":
        raise StackError(f"provider.type must be 'fake_multinode', got {provider.get('type')!r}",
                         fix="use cluster/local.yaml; cloud configs go through `ray up`")
    provider["gcs_address"] = gcs_address
    # Ray's fake provider never drops a node whose raylet died, so a lost node would never be
    # replaced; this subclass drops it, as a cloud drops a reclaimed instance (see its module)
    provider.update(type="external", module=RECLAIMING_PROVIDER)
    if head_cpus is not None:
        head = config["available_node_types"][config["head_node_type"]]
        head["resources"] = {**(head.get("resources") or {}), "CPU": int(head_cpus)}
    return config


def render_local_config(gcs_address: str, *, template: str | Path | Mapping[str, Any] | None = None,
                        head_cpus: int | None = None, out_dir: str | Path | None = None) -> Path:
    """Write `local_config(...)` to a new YAML file under `out_dir` (default: a temp dir)."""
    import yaml

    config = local_config(gcs_address, template=template, head_cpus=head_cpus)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="ty-autoscale-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="local-cluster-", suffix=".yaml", dir=out_dir)
    with open(fd, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return Path(name)
