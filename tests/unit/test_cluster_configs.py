"""The Ray cluster launcher configs in cluster/: Ray's own schema, our resources convention,
and the local fake cluster's rendering."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from trainyard.clusters import launcher
from trainyard.errors import SpecError, StackError
from trainyard.local.autoscaling import local_config, render_local_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "cluster").glob("*.yaml"))


@pytest.fixture(scope="module")
def ray_schema():
    path = launcher.schema_path()
    assert path.exists(), f"ray-schema.json missing from the ray wheel at {path}"
    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def test_the_three_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"aws", "gcp", "local"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_matches_the_schema_shipped_with_ray(path, ray_schema):
    config = yaml.safe_load(path.read_text())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(ray_schema).iter_errors(config)]
    assert not errors, errors
    launcher.validate_config(config)  # the same plus our convention, as the server runs it


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_cloud_node_types_follow_the_resources_convention(name):
    types = launcher.node_types(launcher.load_config(REPO / "cluster" / f"{name}.yaml"))
    head, workers = types[0], types[1:]
    assert head["head"] and (head["min"], head["max"]) == (1, 1)
    # no training worker ever lands on the head
    assert head["resources"] == {"CPU": 0}
    gpu = [t for t in workers if t["gpus"]]
    assert {t["gpus"] for t in gpu} == {1, 8}, "a 1-GPU and an 8-GPU node type"
    assert any(t["spot"] for t in gpu) and any(not t["spot"] for t in gpu)
    for t in workers:
        assert t["min"] == 0 <= t["max"], "workers scale from zero"
        assert all(isinstance(v, int) for v in t["resources"].values())
        if t["gpus"]:
            assert t["accelerator_type"] and t["resources"][f"accelerator_type:{t['accelerator_type']}"] == 1
        else:
            assert t["accelerator_type"] is None
    # spot and on-demand twins offer the same resources
    for t in gpu:
        if t["spot"]:
            twin = next(o for o in gpu if o["name"] == t["name"].removesuffix("-spot"))
            assert twin["resources"] == t["resources"] and not twin["spot"]


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_every_node_installs_the_same_pinned_trainyard(name):
    config = launcher.load_config(REPO / "cluster" / f"{name}.yaml")
    setup = " ".join(config["setup_commands"])
    assert "-c ~/trainyard/dist/constraints.txt torch==2.13.0" in setup
    assert "~/trainyard/dist/trainyard-*.whl" in setup
    assert "~/trainyard/dist" in config["file_mounts"]
    # no node type replaces the common setup with its own
    assert not any("worker_setup_commands" in t for t in config["available_node_types"].values())
    # the torch pin agrees with constraints.txt
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().split()
                if "==" in line)
    assert pins["torch"] == "2.13.0" and pins["ray"] == "2.60.0"
    assert f"ray:{pins['ray']}-" in config["docker"]["image"]
    # token auth on the head and on the workers that join it
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(config[key])


def test_local_config_is_a_fake_multinode_cluster():
    config = launcher.load_config(REPO / "cluster" / "local.yaml")
    provider = config["provider"]
    assert provider["type"] == "fake_multinode"
    assert provider["use_node_id_as_ip"] and provider["disable_node_updaters"]
    assert provider["disable_launch_config_check"]
    # the fake provider names its head this way
    assert config["head_node_type"] == "ray.head.default"
    types = {t["name"]: t for t in launcher.node_types(config)}
    assert "gpu_node" not in types["ray.head.default"]["resources"], \
        "the head must lack the GPU stand-in, or no job would need a new node"
    assert types["gpu-fake"]["resources"] == {"CPU": 1, "gpu_node": 1}
    assert config["idle_timeout_minutes"] <= 0.1
    # the autoscaler reads these without filling defaults (`ray up` would have); a missing one
    # kills it at start with a KeyError, and nothing ever scales
    for key in ("file_mounts", "cluster_synced_files", "file_mounts_sync_continuously",
                "worker_setup_commands", "worker_start_ray_commands", "auth", "max_workers",
                "idle_timeout_minutes", "upscaling_speed"):
        assert key in config, key


def test_render_local_config_sets_the_gcs_address(tmp_path, ray_schema):
    path = render_local_config("127.0.0.1:61234", out_dir=tmp_path, head_cpus=3)
    assert path.parent == tmp_path and path.suffix == ".yaml"
    rendered = yaml.safe_load(path.read_text())
    assert rendered["provider"]["gcs_address"] == "127.0.0.1:61234"
    # run through the provider that drops a node whose raylet died (a cloud's view of a reclaim)
    assert (rendered["provider"]["type"], rendered["provider"]["module"]) == \
        ("external", "trainyard.local.fake_provider.ReclaimingFakeProvider")
    assert rendered["provider"]["use_node_id_as_ip"] and rendered["provider"]["disable_node_updaters"]
    assert rendered["available_node_types"]["ray.head.default"]["resources"]["CPU"] == 3
    jsonschema.validate(rendered, ray_schema)
    # the checked-in template is untouched, and two renders never share a file
    assert yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())["provider"]["gcs_address"] == "127.0.0.1:6379"
    assert render_local_config("127.0.0.1:61235", out_dir=tmp_path) != path


def test_render_local_config_rejects_bad_input():
    with pytest.raises(StackError, match="host:port"):
        local_config("61234")
    with pytest.raises(StackError, match="fake_multinode"):
        local_config("127.0.0.1:1", template=launcher.load_config(REPO / "cluster" / "aws.yaml"))


def test_max_resources_of_the_aws_cluster():
    config = launcher.load_config(REPO / "cluster" / "aws.yaml")
    total = launcher.max_resources(config)
    # 1 H100 node (8 GPUs), 2 A100 nodes (16), all 16 A10G nodes: 19 of the 20 allowed
    assert total["GPU"] == 8 + 16 + 16
    assert total["accelerator_type:H100"] == 1 and total["accelerator_type:A100"] == 2
    assert total["accelerator_type:A10G"] == 16  # two 8-node types, capped by their own max
    # CPU: the richest nodes first: H100 (192) + 2 A100 (96) + 4 cpu (16) + 13 g5 (4)
    assert total["CPU"] == 192 + 2 * 96 + 4 * 16 + 13 * 4


def test_max_resources_without_a_global_cap_sums_every_type():
    config = {
        "cluster_name": "t", "head_node_type": "h",
        "available_node_types": {
            "h": {"resources": {"CPU": 2}, "node_config": {}},
            "a": {"resources": {"CPU": 4, "GPU": 1, "accelerator_type:A10G": 1},
                  "min_workers": 0, "max_workers": 3, "node_config": {}},
        },
    }
    assert launcher.max_resources(config) == {"CPU": 2 + 12, "GPU": 3, "accelerator_type:A10G": 3}


def test_max_workers_placeable_packs_whole_workers():
    config = launcher.load_config(REPO / "cluster" / "aws.yaml")
    one_a100 = {"CPU": 1, "GPU": 1, "accelerator_type:A100": 0.001}
    assert launcher.max_workers_placeable(config, one_a100) == 16
    # 2 GPUs per worker never fit on the 1-GPU A10G nodes
    two_a10g = {"CPU": 1, "GPU": 2, "accelerator_type:A10G": 0.001}
    assert launcher.max_workers_placeable(config, two_a10g) == 0
    assert launcher.max_workers_placeable(config, {"CPU": 1, "accelerator_type:TPU-V4": 0.001}) == 0
    # the head (CPU 0) takes none; 4 cpu nodes of 16 and the GPU nodes' CPUs take the rest
    assert launcher.max_workers_placeable(config, {"CPU": 16}) == 12 + 2 * 6 + 4 + 0
    local = launcher.load_config(REPO / "cluster" / "local.yaml")
    assert launcher.max_workers_placeable(local, {"CPU": 1, "gpu_node": 1}) == 2


def test_node_types_name_the_bad_field():
    config = launcher.load_config(REPO / "cluster" / "aws.yaml")
    config["available_node_types"]["cpu"]["min_workers"] = 9
    config["available_node_types"]["gpu-8x-h100"]["resources"].pop("accelerator_type:H100")
    with pytest.raises(SpecError) as info:
        launcher.node_types(config)
    text = str(info.value)
    assert "available_node_types.cpu.min_workers: min_workers (9) must be <= max_workers (4)" in text
    assert "available_node_types.gpu-8x-h100.resources" in text and "accelerator_type:" in text
    config["head_node_type"] = "haed"
    with pytest.raises(SpecError, match="head_node_type"):
        launcher.node_types(config)


def test_validate_config_reports_schema_errors_by_field():
    config = launcher.load_config(REPO / "cluster" / "gcp.yaml")
    config["available_node_types"]["cpu"]["resources"]["CPU"] = -1
    config["max_wrokers"] = 3
    with pytest.raises(SpecError) as info:
        launcher.validate_config(config)
    text = str(info.value)
    assert "available_node_types.cpu.resources.CPU" in text and "max_wrokers" in text


def test_max_nodes_lists_every_node_at_the_largest_size():
    config = launcher.load_config(REPO / "cluster" / "local.yaml")
    assert launcher.max_nodes(config) == {"nodes": [
        {"CPU": 2}, {"CPU": 1}, {"CPU": 1, "gpu_node": 1}, {"CPU": 1, "gpu_node": 1}]}
    aws = launcher.max_nodes(launcher.load_config(REPO / "cluster" / "aws.yaml"))["nodes"]
    assert aws[0] == {"CPU": 0} and len(aws) == 1 + 4 + 8 + 8 + 2 + 1
    assert sum(n.get("GPU", 0) for n in aws) == 8 + 8 + 16 + 8
