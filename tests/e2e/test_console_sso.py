"""The console signs in through an OpenID Connect issuer (authorization code + PKCE), in a real
browser (Debian's Chromium, Playwright), against a real server process and the issuer stand-in
of tests/support/oidc_issuer.py (the code flow, PKCE checked, signed tokens).

The server runs alone (no Ray, no MLflow: jobs stay queued), which is all the Jobs page and the
sign-on need. The console gets the issuer from GET /v1/auth/config, goes to its authorize
endpoint, comes back to /auth/callback, exchanges the code with its PKCE verifier, and calls the
API with the ID token as Bearer.
"""
from __future__ import annotations

import re
import shutil
import sys

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
if CHROMIUM is None:
    pytest.skip("needs Debian's chromium (`make test` installs it as root)", allow_module_level=True)

from support.oidc_issuer import Issuer  # noqa: E402

CLIENT = "trainyard-console-e2e"  # also the audience: the console sends the ID token
DEAD = "http://127.0.0.1:1"


@pytest.fixture(scope="module")
def sso(tmp_path_factory):
    import httpx

    from trainyard.auth.oidc import user_name_for
    from trainyard.local.processes import free_port, start_process, stop_process

    issuer = Issuer(api_audience=CLIENT)
    issuer.add_key("rsa-1")
    root = tmp_path_factory.mktemp("console-sso")
    admin = "sso-admin-" + root.name
    (root / "admin.token").write_text(admin + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    issuer.clients[CLIENT] = {f"{url}/auth/callback"}
    env = {"TRAINYARD_HOME": str(root), "TRAINYARD_DB_URL": f"sqlite:///{root / 'trainyard.db'}",
           "TRAINYARD_ADMIN_TOKEN_FILE": str(root / "admin.token"), "TRAINYARD_RAY_DASHBOARD_URL": DEAD,
           "TRAINYARD_MLFLOW_URI": "", "MLFLOW_TRACKING_URI": "", "TRAINYARD_OIDC_ISSUER": issuer.url,
           "TRAINYARD_OIDC_AUDIENCE": CLIENT, "TRAINYARD_OIDC_CLIENT_ID": CLIENT,
           "TRAINYARD_OIDC_GROUP_ROLES": "ml-team=vision:member"}
    proc = start_process("server", [sys.executable, "-m", "trainyard.api", "--host", "127.0.0.1", "--port",
                                    str(port)], url=url, health_url=f"{url}/healthz",
                         log_file=root / "server.log", env=env, timeout=60)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:
            assert http.post("/v1/projects", json={"name": "vision"}).status_code == 201
            job = http.post("/v1/jobs", json={"spec": {"name": "sso-visible", "workload": "cnn", "project": "vision",
                                                       "resources": {"workers": 1}}})
            assert job.status_code == 201, job.text
        yield {"url": url, "issuer": issuer, "user": user_name_for(issuer.user["email"]), "root": root}
    finally:
        stop_process(proc.pid)
        issuer.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _tab(browser, sso):
    context = browser.new_context(base_url=sso["url"])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, errors


def test_the_console_signs_in_through_the_issuer(browser, sso):
    import jwt

    issuer = sso["issuer"]
    before = issuer.tokens_issued
    context, page, errors = _tab(browser, sso)
    try:
        page.goto("/jobs")
        page.wait_for_url(re.compile(r"/login"))
        button = page.wait_for_selector("[data-testid=sso]")
        assert button.inner_text() == f"Sign in with {issuer.url.split('//')[1]}"
        button.click()
        page.wait_for_url(re.compile(r"/jobs$"))  # issuer -> /auth/callback -> where the user was going
        page.wait_for_selector("[data-testid=job-row]")
        assert page.inner_text("[data-testid=whoami]") == sso["user"]
        assert "sso-visible" in page.inner_text("main")  # the job of the project their group maps to
        token = page.evaluate("sessionStorage.getItem('trainyard.token')")
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == CLIENT and claims["iss"] == issuer.url and claims["nonce"]
        # nothing else is kept: the library's state and user are gone, and nothing went to localStorage
        assert page.evaluate("Object.keys(sessionStorage)") == ["trainyard.token"]
        assert page.evaluate("localStorage.length") == 0
        assert issuer.tokens_issued == before + 1
        assert errors == []
    finally:
        context.close()
    assert token not in (sso["root"] / "server.log").read_text()


def test_a_wrong_code_verifier_or_a_forged_state_signs_nobody_in(browser, sso):
    issuer = sso["issuer"]
    context, page, errors = _tab(browser, sso)
    tampered: list[str] = []

    def swap_verifier(route):
        body = route.request.post_data or ""
        changed = re.sub(r"code_verifier=[^&]+", "code_verifier=" + "x" * 64, body)
        tampered.append(changed)
        route.continue_(post_data=changed)

    try:
        page.route(f"{issuer.url}/token", swap_verifier)
        refusals = len(issuer.refusals)
        page.goto("/login?next=/jobs")
        page.click("[data-testid=sso]")
        page.wait_for_selector("[data-testid=sso-error]")
        assert tampered and "code_verifier=" in tampered[0]
        assert issuer.refusals[refusals:] == ["code_verifier does not match the code_challenge"]
        assert page.evaluate("sessionStorage.getItem('trainyard.token')") is None
        # Chromium logs the refused exchange (400) as a console error; nothing else may fail
        assert all("status of 400" in e for e in errors), errors
        # a callback whose state this tab never sent is refused before any exchange
        page.unroute(f"{issuer.url}/token")
        issued = issuer.tokens_issued
        page.goto("/auth/callback?code=made-up&state=" + "f" * 32)
        assert "state" in page.wait_for_selector("[data-testid=sso-error]").inner_text()
        assert issuer.tokens_issued == issued and page.evaluate("sessionStorage.getItem('trainyard.token')") is None
    finally:
        context.close()
