"""Endpoint keys: the pure check the replicas run, and how the manager keeps keys in user_config."""
from __future__ import annotations

import copy
import hashlib
import hmac

import httpx
import pytest

from trainyard.errors import ConflictError, NotFoundError, SpecError
from trainyard.serving import keys as K
from trainyard.serving.config import auth_of, build_app_config
from trainyard.serving.keys import EndpointAuth
from trainyard.serving.traffic import Traffic
from trainyard.specs import EndpointSpec, parse_endpoint_spec


def test_a_new_key_is_shown_once_and_only_its_hash_is_kept():
    key, record = K.new_key("ci")
    assert K.looks_like_key(key) and key.startswith(f"tye_{record['id']}_")
    assert set(record) == {"id", "name", "sha256", "created_at"} and record["name"] == "ci"
    assert record["sha256"] == hashlib.sha256(key.encode()).hexdigest() != key
    assert key not in repr(record)
    other, _ = K.new_key("ci")
    assert other != key


def test_the_check_accepts_a_stored_key_and_refuses_any_other():
    keys = [K.new_key(f"k{i}") for i in range(3)]
    hashes = [r["sha256"] for _, r in keys]
    assert all(K.matches(k, hashes) for k, _ in keys)
    assert not K.matches(keys[0][0] + "x", hashes)
    assert not K.matches(keys[0][0], hashes[1:])  # revoked: its hash is gone
    assert not K.matches(keys[0][1]["sha256"], hashes)  # the hash is not the key
    assert not K.matches("", hashes) and not K.matches(keys[0][0], [])


def test_the_check_compares_with_every_hash_whatever_matched(monkeypatch):
    """No early exit: the time depends on how many keys there are, not on which one (or none) matched."""
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(K.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    keys = [K.new_key(f"k{i}") for i in range(5)]
    hashes = [r["sha256"] for _, r in keys]
    for presented in (keys[0][0], keys[4][0], "tye_nope"):
        calls.clear()
        K.matches(presented, hashes)
        assert len(calls) == 5


@pytest.mark.parametrize("header, want", [
    (None, None), ("", None), ("Bearer", None), ("Bearer   ", None), ("Basic abc", None),
    ("Bearer tye_x", "tye_x"), ("bearer tye_x ", "tye_x"), ("BEARER  tye_x", "tye_x"),
])
def test_bearer_header_parsing(header, want):
    assert K.bearer_of(header) == want


def _auth(public=False):
    key, record = K.new_key("app")
    internal = K.internal_key(b"s" * 32, "ep")
    return key, internal, EndpointAuth(public=public, internal=K.hash_key(internal), keys=(record,))


def test_a_private_endpoint_answers_401_without_a_key_403_with_a_wrong_one():
    key, internal, auth = _auth()
    status, body = auth.check(None, endpoint="ep", open_path=True)
    assert status == 401 and "Authorization: Bearer <endpoint key>" in body["fix"]
    assert "/v1/endpoints/ep/keys" in body["fix"] and "{name}" not in body["fix"]
    status, body = auth.check("Bearer tye_000000000000_wrong", endpoint="ep", open_path=True)
    assert status == 403 and "revoked" in body["message"] and "tye_000000000000_wrong" not in str(body)
    assert auth.check(f"Bearer {key}", endpoint="ep", open_path=True) is None
    assert auth.check(f"Bearer {internal}", endpoint="ep", open_path=False) is None  # the server's own
    assert auth.check(f"Basic {key}", endpoint="ep", open_path=True)[0] == 401


def test_a_public_endpoint_serves_anyone_but_its_stats_still_need_a_key():
    key, _, auth = _auth(public=True)
    assert auth.check(None, endpoint="ep", open_path=True) is None
    assert auth.check(None, endpoint="ep", open_path=False)[0] == 401
    assert auth.check(f"Bearer {key}", endpoint="ep", open_path=False) is None


def test_a_config_without_auth_is_closed_and_lists_never_show_hashes():
    closed = EndpointAuth.from_user_config(None)
    assert not closed.public and closed.hashes() == ()
    assert closed.check(None, endpoint="ep", open_path=True)[0] == 401
    key, internal, auth = _auth()
    again = EndpointAuth.from_user_config(auth.to_user_config())
    assert again == auth
    assert EndpointAuth.from_user_config({"public": "yes"}).public is False  # only a real true opens it
    listed = again.listed()
    assert listed == [{"id": auth.keys[0]["id"], "name": "app", "created_at": auth.keys[0]["created_at"]}]
    assert auth.keys[0]["sha256"] not in str(listed) and K.hash_key(internal) not in str(listed)


def test_the_internal_key_is_derived_per_endpoint_and_per_secret():
    a = K.internal_key(b"secret-1" * 4, "ep")
    assert a == K.internal_key(b"secret-1" * 4, "ep")
    assert a != K.internal_key(b"secret-1" * 4, "ep2") and a != K.internal_key(b"secret-2" * 4, "ep")
    assert a.startswith("tye_")


def test_spec_project_and_public_are_strict():
    spec = parse_endpoint_spec({"model": "m"})
    assert (spec.project, spec.public) == ("default", False)
    assert parse_endpoint_spec({"model": "m", "project": "team-a", "public": True}).public is True
    with pytest.raises(SpecError) as err:
        parse_endpoint_spec({"model": "m", "public": "yes"})
    assert err.value.issues[0].field == "public"
    with pytest.raises(SpecError) as err:
        parse_endpoint_spec({"model": "m", "project": "Team A"})
    assert err.value.issues[0].field == "project"


@pytest.mark.parametrize("split", ["replica", "deployments"])
def test_app_config_carries_auth_next_to_the_traffic(split):
    spec = EndpointSpec(model="m", split=split, public=True)
    app = build_app_config(spec, traffic=Traffic.single("1"), tracking_uri="x",
                           auth={"internal": "ab" * 32, "keys": [{"id": "1", "sha256": "cd" * 32}]})
    assert auth_of(app) == {"public": True, "internal": "ab" * 32, "keys": [{"id": "1", "sha256": "cd" * 32}]}
    assert app["args"]["spec"]["public"] is True and "keys" not in str(app["args"])


# ----------------------------------------------------------------------------- the manager, on a fake Serve


class FakeServe:
    """Serve's dashboard REST API, as far as PUT/GET of the declarative config go."""

    def __init__(self):
        self.config = {"applications": []}
        self.puts = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        import json

        if request.method == "PUT":
            self.config = json.loads(request.content)
            self.puts += 1
            return httpx.Response(200, json={})
        apps = {a["name"]: {"status": "RUNNING", "deployed_app_config": copy.deepcopy(a), "deployments": {}}
                for a in self.config["applications"]}
        return httpx.Response(200, json={"applications": apps})

    def endpoint(self, name="ep") -> dict:
        return next(a for a in self.config["applications"] if a["name"] == name)


@pytest.fixture()
def manager():
    from trainyard.serving.client import ServeClient
    from trainyard.serving.endpoints import EndpointManager

    fake = FakeServe()
    serve = ServeClient("http://ray.example:8265", transport=httpx.MockTransport(fake.handler))
    mgr = EndpointManager(serve, tracking_uri="http://mlflow", key_secret=b"k" * 32)
    spec = EndpointSpec(model="m", name="ep", project="team-a")
    mgr._put_endpoint(spec, Traffic.single("1"), "cnn", keys=[])
    mgr.fake = fake
    yield mgr
    serve.close()


def test_keys_are_added_and_revoked_in_user_config_without_touching_args(manager):
    fake = manager.fake
    args_before = copy.deepcopy(fake.endpoint()["args"])
    stale = manager.get("ep")  # e.g. a promotion holding the state from before
    made = manager.create_key("ep", "ci", wait=False)
    assert set(made) == {"id", "name", "key", "created_at"} and K.looks_like_key(made["key"])
    auth = auth_of(fake.endpoint())
    assert [k["sha256"] for k in auth["keys"]] == [K.hash_key(made["key"])]
    assert auth["internal"] == K.hash_key(manager.internal_key("ep")) and auth["public"] is False
    assert made["key"] not in str(fake.config)
    assert fake.endpoint()["args"] == args_before  # no restart: only user_config changed
    assert manager.keys("ep") == [{"id": made["id"], "name": "ci", "created_at": made["created_at"]}]

    # a traffic change computed before the key existed keeps the key, and moves the generation on
    gen = fake.endpoint()["deployments"][1]["user_config"]["traffic"]["generation"]
    state = manager.apply(stale, stale.traffic.with_canary("2", 0.5), wait=False)
    deployed = fake.endpoint()["deployments"][1]["user_config"]
    assert [k["id"] for k in deployed["auth"]["keys"]] == [made["id"]]
    assert deployed["traffic"]["generation"] == state.traffic.generation > gen

    with pytest.raises(ConflictError):
        manager.create_key("ep", "ci", wait=False)
    with pytest.raises(NotFoundError):
        manager.revoke_key("ep", "0123456789ab", wait=False)
    manager.revoke_key("ep", made["id"], wait=False)
    assert auth_of(fake.endpoint())["keys"] == [] and manager.keys("ep") == []
    with pytest.raises(NotFoundError):
        manager.create_key("nope", "ci", wait=False)


def test_an_endpoint_never_changes_project_in_place(manager):
    class Registry:
        tracking_uri = "http://mlflow"

        def resolve(self, model, version=None, alias=None):
            return "1"

        def family(self, model, version):
            return "cnn"

    manager.registry = Registry()
    with pytest.raises(ConflictError) as err:
        manager.deploy({"model": "m", "name": "ep"}, wait=False)  # the spec's project: default
    assert err.value.field == "project" and "team-a" in str(err.value)
    manager._put_endpoint(EndpointSpec(model="m", project="team-a"), Traffic.single("1"), "cnn", keys=[])
    with pytest.raises(ConflictError):
        manager.deploy(model="m", project="other", wait=False)
    # without a spec, the endpoint keeps its own; public given alone opens it
    manager.deploy(model="m", public=True, wait=False)
    spec = manager.get("m").spec
    assert (spec.project, spec.public) == ("team-a", True)
    assert auth_of(manager.fake.endpoint("m"))["public"] is True


# ----------------------------------------------------------------------------- the REST routes' bounds

from test_api import server  # noqa: E402,F401  (fixture: the app on a fake Ray, no cluster)


@pytest.mark.parametrize("method,path,body,field", [
    ("POST", "/v1/endpoints", {"model": "m", "public": "yes"}, "public"),
    ("POST", "/v1/endpoints", {"model": "m", "public": 1}, "public"),
    ("POST", "/v1/endpoints", {"model": "m", "project": "Team A"}, "project"),
    ("POST", "/v1/endpoints", {"model": "m", "project": "a", "spec": {"model": "m", "project": "b"}}, "project"),
    ("POST", "/v1/endpoints", {"model": "m", "public": True, "spec": {"model": "m", "public": False}}, "public"),
    ("POST", "/v1/endpoints/ep/keys", {"name": ""}, "name"),
    ("POST", "/v1/endpoints/ep/keys", {"name": "a b"}, "name"),
    ("POST", "/v1/endpoints/ep/keys", {"name": "ok", "key": "mine"}, "key"),
    ("DELETE", "/v1/endpoints/ep/keys/ZZ", None, "key_id"),
    ("GET", "/v1/endpoints/UPPER/keys", None, "name"),
])
def test_key_and_access_fields_are_bounded(server, method, path, body, field):  # noqa: F811
    client, _, _ = server
    resp = client.request(method, path, json=body)
    assert resp.status_code == 422, resp.text
    assert field in [i["field"] for i in resp.json()["issues"]], resp.json()
