"""Autoscaling clusters: the most they may grow to (from the autoscaler config) drives admission."""
from pathlib import Path

from fastapi.testclient import TestClient

from trainyard.api.app import create_app
from trainyard.clusters.autoscaling import max_nodes_from_config
from trainyard.config import Settings
from trainyard.controller.views import cluster_view
from trainyard.scheduler import DISPATCH, REJECT, schedule
from trainyard.controller.views import queued_job
from trainyard.store.models import ClusterRow

from test_api import TOKEN, FakeRay

LOCAL_YAML = Path(__file__).resolve().parents[2] / "cluster" / "local.yaml"


def test_max_nodes_from_the_local_cluster_config():
    nodes = max_nodes_from_config(LOCAL_YAML)
    assert nodes[0] == {"CPU": 2.0}  # the head
    assert nodes.count({"CPU": 1.0, "gpu_node": 1.0}) == 2 and nodes.count({"CPU": 1.0}) == 1


def test_global_max_workers_caps_each_type():
    cfg = {"head_node_type": "h", "max_workers": 1,
           "available_node_types": {"h": {"resources": {"CPU": 1}}, "w": {"resources": {"CPU": 4}, "max_workers": 5}}}
    assert max_nodes_from_config(cfg) == [{"CPU": 1.0}, {"CPU": 4.0}]


def _row(reserved=None):
    row = ClusterRow(name="local", dashboard_url="http://x", max_resources={"nodes": max_nodes_from_config(LOCAL_YAML)},
                     last_resources={"nodes": [{"id": "h", "total": {"CPU": 2.0}, "free": {"CPU": 2.0}}]})
    return cluster_view(row, reserved=reserved)


def test_job_needing_nodes_that_do_not_exist_yet_is_dispatched():
    spec = {"resources": {"workers": 2, "custom_resources": {"gpu_node": 1}}}
    d = schedule([queued_job("g", spec)], [_row()])[0]
    assert d.action == DISPATCH and d.cluster == "local"


def test_job_beyond_the_autoscaler_limits_is_rejected():
    spec = {"resources": {"workers": 3, "custom_resources": {"gpu_node": 1}}}
    d = schedule([queued_job("g", spec)], [_row()])[0]
    assert d.action == REJECT and "gpu_node" in d.reason


def test_reservations_use_up_the_maximum():
    spec = {"resources": {"workers": 2, "custom_resources": {"gpu_node": 1}}}
    d = schedule([queued_job("g", spec)], [_row(reserved={"CPU": 2.0, "gpu_node": 2.0})])[0]
    assert d.action == "wait"


def test_default_cluster_gets_its_limits_from_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRAINYARD_RAY_AUTOSCALING_CONFIG", str(LOCAL_YAML))
    (tmp_path / "admin.token").write_text(TOKEN)
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(tmp_path / "admin.token"),
                        ray_dashboard_url="http://ray.example:8265", storage=f"file://{tmp_path}/s")
    fakes = {}
    app = create_app(settings, client_factory=lambda n, u, t: fakes.setdefault(n, FakeRay(n, u, t)),
                     run_controller=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        app.state.ctx.controller.refresh_clusters()
        body = {"spec": {"name": "gpu", "workload": "cnn",
                         "resources": {"workers": 2, "custom_resources": {"gpu_node": 1}}}}
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        app.state.ctx.controller.tick()
        # the job, not the autoscaler demand job the controller also sends (trainyard.clusters.demand)
        jobs = [x for x in fakes["local"].submissions if not x["submission_id"].startswith("trainyard-demand-")]
        assert len(jobs) == 1
        listed = client.get("/v1/clusters").json()["clusters"][0]
        assert len(listed["max_resources"]["nodes"]) == 4
