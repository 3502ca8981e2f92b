"""The web console in a real browser (Debian's Chromium, driven by Playwright) against a real
local stack (`trainyard up`: Ray head, MLflow, the server) that runs a tiny job, a tiny sweep
whose `promote:` block deploys its winner, and a job cancelled from the page.

Every page loads with no console error and no serious or critical axe-core violation; the job
page shows the final metric, its chart and the log streamed; the sweep page shows every trial; the
queue page shows a job held by its project's quota with that reason; the submit page shows the
server's check of a spec; Roll back on the endpoint page serves the version from before the last
promotion; a viewer sees no action button. TRAINYARD_CONSOLE_SHOTS=DIR saves a screenshot of every page at 1280x800 and
390x844 into DIR (docs/console/ holds the committed ones). One stack for the module.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
if CHROMIUM is None:
    pytest.skip("needs Debian's chromium (`make test` installs it as root)", allow_module_level=True)

JOB_SPEC = """\
name: console-job
workload: cnn
data: {train_limit: 128}
hyperparameters: {channels: 8, hidden: 32}
resources: {workers: 1, cpus_per_worker: 1}
deepspeed: {zero_stage: 1}
training: {epochs: 2, max_steps: 8, batch_size: 32, log_every_steps: 2}
tracking: {experiment: console-e2e}
"""
# waits behind the others (a second CPU is taken), and is cancelled from its page
CANCEL_SPEC = JOB_SPEC.replace("console-job", "console-cancel").replace("epochs: 2, max_steps: 8", "epochs: 100")
# a project whose quota allows no CPU: its job waits, with the reason `quota`, and takes nothing
HELD_SPEC = JOB_SPEC.replace("console-job", "console-held") + "project: held\n"
SWEEP_SPEC = """\
name: console-sweep
workload: cnn
data: {train_limit: 128}
hyperparameters: {channels: 8, hidden: 32}
resources: {workers: 1, cpus_per_worker: 1}
deepspeed: {zero_stage: 1}
training: {epochs: 2, batch_size: 32, log_every_steps: 100}
tracking: {experiment: console-e2e-sweeps, model_name: console-cnn}
sweep:
  search_space:
    training.lr: {loguniform: [1.0e-3, 1.0e-2]}
  algorithm: random
  scheduler: asha
  metric: accuracy
  mode: max
  num_trials: 2
  max_concurrent_trials: 1
  seed: 0
  asha: {grace_period: 1, reduction_factor: 2}
promote:
  metric: accuracy
  window_s: 5
  max_wait_s: 30
"""
# path -> what shows once the page is ready (the submit page: the server's check of its example)
PAGES = {"/queue": "main h1", "/jobs": "main h1", "/sweeps": "main h1", "/models": "main h1", "/clusters": "main h1",
         "/submit": "[data-testid=server-ok]"}
SHOTS = os.environ.get("TRAINYARD_CONSOLE_SHOTS")
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "trainyard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainyard.cli.main"]


class Stack:
    def __init__(self, home: Path):
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        for var in ("TRAINYARD_URL", "TRAINYARD_TOKEN", "TRAINYARD_ADMIN_TOKEN_FILE", "TRAINYARD_SECRET_KEY"):
            self.env.pop(var, None)
        self.env["TRAINYARD_HOME"] = str(home)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*_cli(), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        import httpx

        proc = self.cli("up", "--num-cpus", "2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        self.url = json.loads((self.home / "stack.json").read_text())["server"]["url"].rstrip("/")
        self.admin = (self.home / "admin.token").read_text().strip()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.admin}"}, timeout=60)

    def api(self, method: str, path: str, **kw):
        resp = self.http.request(method, path, **kw)
        assert resp.status_code < 400, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def wait(self, path: str, done, *, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.api("GET", path)
            if done(body):
                return body
            assert time.monotonic() < deadline, f"{path} not done after {timeout} s: {json.dumps(body)[:2000]}"
            time.sleep(1.0)


TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("console") / "home")
    try:
        stack.start()
        stack.api("POST", "/v1/users", json={"name": "vera"})
        stack.api("PUT", "/v1/projects/default/members/vera", json={"role": "viewer"})
        stack.viewer = stack.api("POST", "/v1/tokens", json={"name": "console", "user": "vera"})["token"]
        stack.job = stack.api("POST", "/v1/jobs", json={"spec": JOB_SPEC})["id"]
        stack.sweep = stack.api("POST", "/v1/sweeps", json={"spec": SWEEP_SPEC})["id"]
        stack.doomed = stack.api("POST", "/v1/jobs", json={"spec": CANCEL_SPEC})["id"]
        stack.api("POST", "/v1/projects", json={"name": "held"})
        stack.api("PUT", "/v1/projects/held/quota", json={"nominal": {"CPU": 0}, "borrowing_limit": {"CPU": 0}})
        stack.held = stack.api("POST", "/v1/jobs", json={"spec": HELD_SPEC})["id"]
        yield stack
    finally:
        if hasattr(stack, "http"):
            stack.http.close()
        stack.cli("down")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


# Playwright waits 30 s by default; a loaded machine (the suite runs on two workers beside Ray
# trainings) once took longer than that to load a page, so waits allow more
PAGE_TIMEOUT_MS = 90_000


class Page:
    """A signed-in tab that records console errors and failed requests."""

    def __init__(self, browser, stack: Stack, token: str, size: str = "desktop"):
        width, height = SIZES[size]
        self.context = browser.new_context(viewport={"width": width, "height": height}, base_url=stack.url)
        self.context.set_default_timeout(PAGE_TIMEOUT_MS)
        self.context.add_init_script(f"sessionStorage.setItem('trainyard.token', {json.dumps(token)})")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.size = size

    def open(self, path: str, ready: str = "main h1", *, idle: bool = True):
        """`idle=False` for the page of a job that has not ended: its log stream stays open, so
        the network never goes idle."""
        self.page.goto(path)
        self.page.wait_for_selector(ready)
        if idle:
            self.page.wait_for_load_state("networkidle")
        return self.page

    def check(self, name: str) -> None:
        """No console error, no serious/critical accessibility violation; a screenshot on demand."""
        from axe_playwright_python.sync_playwright import Axe

        assert self.errors == [], f"{name}: {self.errors}"
        results = Axe().run(self.page)
        bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
        assert bad == [], f"{name}: " + "; ".join(f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: "
                                                   f"{v['nodes'][0]['html'][:200]})" for v in bad)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}-{self.size}.png"), full_page=False)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def admin_page(browser, stack):
    page = Page(browser, stack, stack.admin)
    yield page
    page.close()


def test_login_page_takes_a_token_and_refuses_a_bad_one(browser, stack):
    context = browser.new_context(base_url=stack.url)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto("/jobs")
        page.wait_for_url(re.compile(r"/login"))
        page.fill("#token", "tyk_not-a-real-token")
        page.click("button[type=submit]")
        page.wait_for_selector("[role=alert]")
        assert "refused" in page.inner_text("[role=alert]")
        page.fill("#token", stack.viewer)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/jobs$"))
        page.wait_for_selector("[data-testid=whoami]")
        assert page.inner_text("[data-testid=whoami]") == "vera"
        assert page.evaluate("sessionStorage.getItem('trainyard.token')") == stack.viewer
    finally:
        context.close()


def test_a_viewer_sees_no_action_button(browser, stack):
    page = Page(browser, stack, stack.viewer)
    try:
        p = page.open(f"/jobs/{stack.doomed}", "[data-testid=job-state]", idle=False)
        p.wait_for_selector("[data-testid=whoami]")  # the roles are known: no button is the answer
        assert p.locator("[data-testid=cancel]").count() == 0
        p = page.open("/submit", "#spec")
        assert p.locator("[data-testid=submit]").count() == 0 and p.locator("[data-testid=no-submit]").count() == 1
        assert page.errors == []
    finally:
        page.close()


def test_the_queue_page_shows_a_waiting_job_and_why(admin_page, stack):
    stack.wait(f"/v1/jobs/{stack.held}", lambda j: (j.get("pending") or {}).get("reason", {}).get("code") == "quota",
               timeout=60)
    p = admin_page.open("/queue", f"[data-testid=queue-row][data-job='{stack.held}']")
    row = p.inner_text(f"[data-testid=queue-row][data-job='{stack.held}']")
    assert "console-held" in row and "held" in row and "(quota)" in row and "quota allows 0" in row, row
    assert admin_page.errors == []


def test_the_submit_page_shows_the_servers_check(admin_page, stack):
    before = stack.api("GET", "/v1/jobs", params={"limit": 1})["total"]
    p = admin_page.open("/submit", "#spec")
    p.wait_for_selector("[data-testid=server-ok]")  # the page's example spec
    p.fill("#spec", JOB_SPEC.replace("workers: 1,", "workers: 8,"))  # the schema allows it, the cluster never will
    p.wait_for_selector("[data-testid=server-problems]")
    assert "resources.workers" in p.inner_text("[data-testid=server-problems]")
    assert p.locator("[data-testid=spec-ok]").count() == 1 and p.locator("[data-testid=submit]").is_disabled()
    assert stack.api("GET", "/v1/jobs", params={"limit": 1})["total"] == before
    # Chromium logs every 4xx answer as a console error: the refusal asked for is the only one
    assert admin_page.errors and all("status of 422" in e for e in admin_page.errors), admin_page.errors


def test_cancel_works_from_the_job_page(admin_page, stack):
    p = admin_page.open(f"/jobs/{stack.doomed}", "[data-testid=job-state]", idle=False)
    p.click("[data-testid=cancel]")
    p.wait_for_function("document.querySelector('[data-testid=job-state]').textContent.trim() === 'CANCELLED'",
                        timeout=120_000)
    assert stack.api("GET", f"/v1/jobs/{stack.doomed}")["state"] == "CANCELLED"
    assert admin_page.errors == []


def test_the_job_page_shows_the_final_metric_and_its_chart(admin_page, stack):
    job = stack.wait(f"/v1/jobs/{stack.job}", lambda j: j["state"] in TERMINAL, timeout=480)
    assert job["state"] == "SUCCEEDED", job
    p = admin_page.open(f"/jobs/{stack.job}", "[data-testid=final-metrics]")
    shown = p.inner_text("[data-testid=final-metrics]")
    for key, value in job["metrics"].items():
        if isinstance(value, float):
            assert key in shown
    assert "accuracy" in shown
    p.wait_for_selector("[data-testid=metric-chart] svg")
    legend = p.locator("[data-testid=metric-chart] svg text").all_text_contents()
    assert "accuracy" in legend and "loss" in legend, legend
    assert p.locator("[data-testid=events] li").count() >= 3  # PENDING -> ... -> SUCCEEDED
    # the log came through the event stream, which ends with the job
    p.wait_for_selector("[data-testid=log-mode][data-mode=ended]")
    assert "(empty)" not in p.inner_text("[data-testid=log]")
    admin_page.check("job")


def test_the_sweep_page_shows_every_trial(admin_page, stack):
    sweep = stack.wait(f"/v1/sweeps/{stack.sweep}", lambda s: s["state"] in TERMINAL, timeout=300)
    assert sweep["state"] == "SUCCEEDED", sweep.get("message")
    p = admin_page.open(f"/sweeps/{stack.sweep}", "[data-testid=leaderboard]")
    trials = sorted(r["trial"] for r in sweep["leaderboard"]["rows"])
    assert len(trials) == 2
    rows = p.locator("[data-testid=trial-row]")
    assert rows.count() == 2
    assert sorted(rows.nth(i).locator("td").nth(1).inner_text() for i in range(2)) == trials
    assert p.locator(".chart svg").count() >= 2  # learning curves, parallel coordinates
    admin_page.check("sweep")


def test_the_endpoint_page_shows_the_promotion_and_its_buttons(browser, admin_page, stack):
    history = stack.wait("/v1/models/console-cnn/history",
                         lambda h: any(e.get("kind") in ("promoted", "rejected", "failed") for e in h["events"]),
                         timeout=240)
    assert any(e["kind"] == "promoted" for e in history["events"]), history
    p = admin_page.open("/models/console-cnn", "[data-testid=history]")
    assert "promoted" in p.inner_text("[data-testid=history]")
    assert p.locator("[data-testid=promote]").count() == 1
    admin_page.check("endpoint")
    viewer = Page(browser, stack, stack.viewer)
    try:
        p = viewer.open("/models/console-cnn", "[data-testid=history]")
        assert p.locator("[data-testid=promote]").count() == 0 and p.locator("[data-testid=rollback]").count() == 0
        assert viewer.errors == []
    finally:
        viewer.close()


def test_roll_back_from_the_endpoint_page(admin_page, stack, monkeypatch):
    """A second version is promoted over the sweep's winner (which stops being champion first, so
    the promotion is direct, over a version served by hand); Roll back on the page serves the
    winner again, from the promotion history, and then there is nothing left to roll back."""
    from mlflow import MlflowClient

    url = json.loads((stack.home / "stack.json").read_text())["mlflow"]["url"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "trainyard")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", (stack.home / "mlflow.password").read_text().strip())
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    first = stack.api("GET", "/v1/models/console-cnn/history")["champion"]
    assert first is not None
    second = str(client.copy_model_version(f"models:/console-cnn/{first}", "console-cnn").version)
    client.delete_registered_model_alias("console-cnn", "champion")
    done = stack.api("POST", "/v1/models/console-cnn/promote", timeout=300,
                     json={"candidate": second, "wait": True, "policy": {"metric": "accuracy", "mode": "max"}})
    assert done["state"] == "promoted", done
    p = admin_page.open("/models/console-cnn", "[data-testid=rollback]")
    assert p.inner_text("[data-testid=rollback]") == f"Roll back to v{first}"
    p.click("[data-testid=rollback]")
    note = p.wait_for_selector("[role=status]:has-text('Rolled back')", timeout=240_000).inner_text()
    assert f"serves v{first} again (was v{second})" in note
    weights = {v["version"]: v["weight"] for v in stack.api("GET", "/v1/endpoints/console-cnn")["versions"]}
    assert weights == {first: 1.0}, weights
    history = stack.api("GET", "/v1/models/console-cnn/history")
    assert history["champion"] == first and history["events"][-1]["kind"] == "reverted"
    assert history["rollback_to"] is None
    p.wait_for_selector("[data-testid=rollback]", state="detached")
    again = stack.http.post("/v1/models/console-cnn/rollback", json={})
    assert again.status_code == 409 and "nothing served model 'console-cnn'" in again.json()["message"]
    assert admin_page.errors == []


@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_loads_clean(browser, stack, size):
    page = Page(browser, stack, stack.admin, size)
    try:
        for path, ready in PAGES.items():
            page.open(path, ready)
            page.check(path.strip("/"))
        if SHOTS:  # the detail pages, at this size too
            for name, path, ready in (("job", f"/jobs/{stack.job}", "[data-testid=final-metrics]"),
                                      ("sweep", f"/sweeps/{stack.sweep}", "[data-testid=leaderboard]"),
                                      ("endpoint", "/models/console-cnn", "[data-testid=history]")):
                page.open(path, ready)
                page.check(name)
            login = browser.new_context(viewport=dict(zip(("width", "height"), SIZES[size])), base_url=stack.url)
            lp = login.new_page()
            lp.goto("/login")
            lp.wait_for_selector("#token")
            lp.screenshot(path=str(Path(SHOTS) / f"login-{size}.png"))
            login.close()
    finally:
        page.close()
