"""Families as plugins, known to the control plane without importing them (no torch, no Ray).

- entry points of `trainyard.workloads` register families; an installed distribution (here a
  throwaway *.dist-info on sys.path) adds one without editing Trainyard;
- the server's knowledge of a family is data: a registered family's meta.json, or metadata
  the client sent, checked strictly; a bare `module:attr` is checked for syntax only;
- no spec check imports a user module (a module with an import side effect proves it).
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from trainyard import families
from trainyard.errors import SpecError
from trainyard.specs import parse_job_spec, parse_sweep_spec

REPO = Path(__file__).resolve().parents[2]

USER_MODULE = '''
import os, pathlib
pathlib.Path(os.environ["TY_MARKER"]).write_text("imported")
from trainyard.workload import Workload
WORKLOAD = Workload(name="marked", build_models=dict, build_datasets=tuple, evaluate=dict, predictor=dict,
                    metric="score", mode="max", metrics=("score", "loss"),
                    search_space={"training.lr": {"loguniform": [1e-4, 1e-2]}},
                    default_hparams={"width": 8})
'''

META = {"name": "marked", "metric": "score", "mode": "max", "metrics": ["score", "loss"],
        "search_space": {"training.lr": {"loguniform": [1e-4, 1e-2]}}, "default_hparams": {"width": 8}}


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """`ty_marked_mod` is importable here, and importing it writes a marker file."""
    marker = tmp_path / "marker"
    (tmp_path / "ty_marked_mod.py").write_text(USER_MODULE)
    monkeypatch.setenv("TY_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("ty_marked_mod", None)


@pytest.fixture()
def plugin_dist(tmp_path, monkeypatch):
    """A throwaway installed distribution that registers family `ty-plugin` by entry point,
    ships its meta.json beside the module, and writes a marker when imported."""
    site = tmp_path / "site"
    pkg = site / "ty_plugin_pkg"
    pkg.mkdir(parents=True)
    marker = tmp_path / "plugin-marker"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    (pkg / "fam.py").write_text(USER_MODULE.replace('"marked"', '"ty-plugin"'))
    (pkg / "meta.json").write_text(json.dumps({"ty-plugin": {**META, "name": "ty-plugin", "batches": False}}))
    info = site / "ty_plugin_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ty-plugin-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[trainyard.workloads]\nty-plugin = ty_plugin_pkg.fam:WORKLOAD\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TY_MARKER", str(tmp_path / "fam-marker"))
    families.registered.cache_clear()
    families.static_meta.cache_clear()
    yield marker
    families.registered.cache_clear()
    families.static_meta.cache_clear()
    for name in [m for m in sys.modules if m.startswith("ty_plugin_pkg")]:
        sys.modules.pop(name)


def _job(workload, **extra):
    return {"name": "j", "workload": workload, **extra}


def _sweep(workload, **sweep):
    return {"name": "s", "workload": workload, "sweep": sweep}


# ----------------------------------------------------------------------------- registration


def test_builtins_are_registered_from_pyproject_entry_points():
    import tomllib

    table = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][families.GROUP]
    assert {"cnn", "rnn", "rnn-forecast", "autoencoder", "gan", "diffusion", "transformer"} <= set(table)
    assert {k: families.registered()[k] for k in table} == table


def test_each_builtin_meta_json_says_what_its_code_says():
    """The server reads meta.json; the runner runs the code. They must agree (regenerate with
    trainyard.testing.write_meta when a family changes)."""
    pytest.importorskip("torch")
    from trainyard.workload import resolve_workload

    for name, ref in families.registered().items():
        if not ref.startswith("workloads."):
            continue
        assert families.static_meta(name) == resolve_workload(name).meta(), (
            f"{name}: meta.json is stale; run trainyard.testing.write_meta on its workloads")


def test_an_installed_distribution_adds_a_family_the_server_knows_without_importing_it(plugin_dist):
    from trainyard.workload import resolve_workload

    assert families.registered()["ty-plugin"] == "ty_plugin_pkg.fam:WORKLOAD"
    spec = parse_sweep_spec(_sweep("ty-plugin"))  # default space and metric from its meta.json
    assert spec.workload == "ty-plugin"
    with pytest.raises(SpecError) as err:
        parse_sweep_spec(_sweep("ty-plugin", metric="acc"))
    assert err.value.field == "sweep.metric" and "score" in str(err.value)
    assert not plugin_dist.exists() and "ty_plugin_pkg" not in sys.modules
    wl = resolve_workload("ty-plugin")  # the runner's side imports it
    assert wl.name == "ty-plugin" and plugin_dist.exists()


def test_a_plugins_broken_metadata_counts_as_none(plugin_dist, tmp_path):
    folder = Path(sys.path[0]) / "ty_plugin_pkg"
    (folder / "meta.json").write_text(json.dumps({"ty-plugin": {**META, "mode": "sideways"}}))
    families.static_meta.cache_clear()
    assert families.static_meta("ty-plugin") is None
    with pytest.raises(SpecError) as err:  # nothing known: the sweep must say what to search
        parse_sweep_spec(_sweep("ty-plugin"))
    assert err.value.field == "sweep.search_space"
    assert parse_sweep_spec(_sweep("ty-plugin"), workload_meta=META).workload == "ty-plugin"
    assert "ty_plugin_pkg" not in sys.modules


def test_the_platform_never_imports_a_family():
    offenders = []
    for path in (REPO / "platform" / "trainyard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "workloads"]
    assert offenders == []


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("ref", [":X", "../../etc:passwd", "a/b:c", "a..b:c", "pkg.:X", "pkg:", "pkg:a.b",
                                 "pkg:X:Y", " pkg:X", "1pkg:X", "p" * 300 + ":X"])
def test_malformed_references_are_refused_naming_the_field(ref):
    with pytest.raises(SpecError) as err:
        parse_job_spec(_job(ref))
    assert err.value.field == "workload" and err.value.status == 422


def test_unknown_names_suggest_the_known_ones():
    with pytest.raises(SpecError) as err:
        parse_job_spec(_job("cnnn"))
    assert err.value.field == "workload" and "did you mean 'cnn'" in str(err.value)


def test_no_spec_check_imports_a_user_module(user_module):
    parse_job_spec(_job("ty_marked_mod:WORKLOAD"))
    parse_job_spec(_job("this:X"))
    parse_sweep_spec(_sweep("ty_marked_mod:WORKLOAD", search_space={"training.lr": {"choice": [0.1]}},
                            metric="score", mode="max"))
    parse_sweep_spec(_sweep("ty_marked_mod:WORKLOAD"), workload_meta=META)
    assert not user_module.exists() and "ty_marked_mod" not in sys.modules and "this" not in sys.modules


# ----------------------------------------------------------------------------- client metadata


def test_supplied_metadata_gives_the_sweep_its_defaults_and_checks(user_module):
    spec = parse_sweep_spec(_sweep("ty_marked_mod:WORKLOAD"), workload_meta=META)
    assert spec.sweep.search_space is None  # the default comes from the metadata at plan time
    with pytest.raises(SpecError) as err:
        parse_sweep_spec(_sweep("ty_marked_mod:WORKLOAD", metric="accuracy"), workload_meta=META)
    assert err.value.field == "sweep.metric"
    with pytest.raises(SpecError) as err:
        parse_sweep_spec(_sweep("ty_marked_mod:WORKLOAD", search_space={"hyperparameters.depth": {"choice": [1]}},
                                metric="score"), workload_meta=META)
    assert "not a hyperparameter of marked" in str(err.value)
    with pytest.raises(SpecError) as err:  # nothing known, nothing given
        parse_sweep_spec(_sweep("ty_marked_mod:WORKLOAD"))
    assert err.value.field == "sweep.search_space" and "sent no metadata" in str(err.value)
    assert not user_module.exists()


def test_metadata_for_a_builtin_is_the_servers_own():
    spec = parse_sweep_spec(_sweep("cnn"), workload_meta={**META, "metrics": ["other"], "metric": "other"})
    assert spec.workload == "cnn"  # cnn's own metric (accuracy) was used, not the sent one


@pytest.mark.parametrize("patch,field", [
    ({"metric": "nope"}, "workload_meta.metric"),
    ({"mode": "up"}, "workload_meta.mode"),
    ({"mode": ["max"]}, "workload_meta.mode"),
    ({"metrics": "score"}, "workload_meta.metrics"),
    ({"metrics": ["score"] * 65}, "workload_meta.metrics"),
    ({"metrics": ["score", 3]}, "workload_meta.metrics"),
    ({"name": ""}, "workload_meta.name"),
    ({"name": "x" * 101}, "workload_meta.name"),
    ({"name": 5}, "workload_meta.name"),
    ({"batches": "yes"}, "workload_meta.batches"),
    ({"batches": 1}, "workload_meta.batches"),
    ({"search_space": ["training.lr"]}, "workload_meta.search_space"),
    ({"default_hparams": {str(i): i for i in range(300)}}, "workload_meta.default_hparams"),
    ({"search_space": {"training.lr": {"choice": [float("nan")]}}}, "workload_meta"),
    ({"description": "x" * 70000}, "workload_meta"),
    ({"code": "import os"}, "workload_meta.code"),
])
def test_supplied_metadata_is_checked_strictly(patch, field):
    with pytest.raises(SpecError) as err:
        parse_job_spec(_job("ty_marked_mod:WORKLOAD"), workload_meta={**META, **patch})
    assert err.value.field == field and err.value.status == 422


def test_metadata_that_is_not_a_mapping_is_refused():
    with pytest.raises(SpecError) as err:
        parse_job_spec(_job("pkg.mod:W"), workload_meta=["score"])
    assert err.value.field == "workload_meta"


def test_the_client_reads_its_own_workload_and_only_its_own(user_module, tmp_path):
    from trainyard.sdk import workload_meta_of

    assert workload_meta_of({"workload": "cnn"}) is None  # the server knows it
    assert workload_meta_of({"workload": "not_installed_anywhere:W"}) is None  # the runner checks it
    assert workload_meta_of({"workload": ":X"}) is None  # the server names the error
    meta = workload_meta_of({"workload": "ty_marked_mod:WORKLOAD"})
    assert user_module.exists()  # the user's machine may run the user's code
    assert families.parse_meta(meta) == families.parse_meta(META)
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "ty_wd_mod.py").write_text("raise RuntimeError('broken on purpose')\n")
    (folder / "ty_wd_ok.py").write_text(USER_MODULE)
    assert workload_meta_of({"workload": "ty_wd_ok:WORKLOAD"}, working_dir=folder)["name"] == "marked"
    # broken here: nothing is sent, and the runner names the field on the cluster
    assert workload_meta_of({"workload": "ty_wd_mod:W"}, working_dir=folder) is None
    assert str(folder) not in sys.path
    sys.modules.pop("ty_wd_ok", None)


def test_the_sdk_sends_the_metadata_with_the_spec(user_module):
    import httpx

    from trainyard.sdk import Client

    sent = []

    from api_views import job_view

    def handler(request):
        sent.append(json.loads(request.content))
        job = job_view("j-1").model_dump(mode="json")
        if request.url.path == "/v1/sweeps":
            job.update(kind="sweep", leaderboard=None, best=None, sweep=None, promote=None, model=None)
        return httpx.Response(201, json=job)

    client = Client(url="http://testserver", token="t")
    client._http = httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler))
    client.submit_job({"name": "j", "workload": "ty_marked_mod:WORKLOAD"})
    client.submit_sweep({"name": "s", "workload": "cnn"})
    assert sent[0]["workload_meta"]["metric"] == "score" and "workload_meta" not in sent[1]


# ----------------------------------------------------------------------------- the runner's side


def test_the_driver_fails_at_once_naming_the_workload(tmp_path, capsys):
    from trainyard.runner.__main__ import main

    spec = tmp_path / "job.yaml"
    spec.write_text("name: j\nworkload: ty_nowhere_mod:WORKLOAD\n")
    rc = main(["job", "--job-id", "j-1", "--spec-file", str(spec)])
    out = capsys.readouterr()
    assert rc == 2 and "TRAINYARD_ERROR" in out.out
    assert "workload: cannot import module 'ty_nowhere_mod'" in out.err


def test_the_driver_checks_a_user_sweep_against_its_real_workload(user_module):
    from trainyard.runner import checked_spec

    spec = checked_spec(parse_sweep_spec, _sweep("ty_marked_mod:WORKLOAD"))  # default space from the code
    assert spec.workload == "ty_marked_mod:WORKLOAD" and user_module.exists()
    with pytest.raises(SpecError) as err:
        checked_spec(parse_sweep_spec, _sweep("ty_marked_mod:WORKLOAD", metric="acc"))
    assert err.value.field == "sweep.metric"


# ----------------------------------------------------------------------------- the server's path


def test_the_server_drops_its_launch_folder_from_the_import_path(tmp_path, monkeypatch):
    from trainyard.api.__main__ import drop_launch_dir

    monkeypatch.chdir(tmp_path)
    path = drop_launch_dir(["", str(tmp_path), "/usr/lib/python3", str(REPO / "platform")])
    assert path == ["/usr/lib/python3", str(REPO / "platform")]


def test_the_local_stack_starts_the_server_in_safe_path_mode(tmp_path):
    import subprocess

    from trainyard.local.stack import server_command

    cmd = server_command(1)
    assert cmd[1] == "-P"
    (tmp_path / "ty_cwd_mod.py").write_text("")
    probe = subprocess.run([cmd[0], "-P", "-c", "import sys; print('' in sys.path, sys.path[0])"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.stdout.split()[0] == "False" and str(tmp_path) not in probe.stdout
