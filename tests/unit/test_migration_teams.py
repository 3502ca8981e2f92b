"""An install from before teams (revision 0002, one admin token, jobs) upgrades: its jobs become
admin's, project `default` exists, and the old admin token is admin's token."""
from __future__ import annotations

from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import text

from trainyard.api.app import create_app
from trainyard.config import Settings
from trainyard.store import Database
from trainyard.store.db import HEAD_REVISION, MIGRATIONS_DIR

OLD_TOKEN = "pre-teams-admin-token-42"


def _upgrade_to(db: Database, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_a_0002_install_upgrades_and_keeps_its_token(tmp_path):
    url = f"sqlite:///{tmp_path / 'ty.db'}"
    db = Database(url)
    _upgrade_to(db, "0002")
    with db.engine.begin() as conn:
        for job_id, project in (("old-1", "default"), ("old-2", "vision")):
            conn.execute(text("INSERT INTO jobs (id, kind, name, project, priority, spec, phase, attempt, created_at, "
                              "cancel_requested, version) VALUES (:id, 'job', 'old', :p, 0, '{}', 'SUCCEEDED', 1, "
                              "'2026-01-01 00:00:00', 0, 1)"), {"id": job_id, "p": project})
    db.dispose()
    (tmp_path / "admin.token").write_text(OLD_TOKEN + "\n")
    settings = Settings(db_url=url, admin_token_file=str(tmp_path / "admin.token"),
                        ray_dashboard_url="http://127.0.0.1:1")
    with TestClient(create_app(settings, run_controller=False), headers={"Authorization": f"Bearer {OLD_TOKEN}"}) as api:
        assert api.get("/v1/me").json()["user"] == "admin"
        jobs = {j["id"]: j for j in api.get("/v1/jobs").json()["jobs"]}
        assert {(j["owner"], j["project"]) for j in jobs.values()} == {("admin", "default"), ("admin", "vision")}
        assert {p["name"] for p in api.get("/v1/projects").json()["projects"]} == {"default", "vision"}
        tokens = api.get("/v1/tokens").json()["tokens"]
        assert [t["name"] for t in tokens] == ["admin-token"]
    db = Database(url)
    try:
        assert db.current_revision() == HEAD_REVISION == "0008"
    finally:
        db.dispose()
