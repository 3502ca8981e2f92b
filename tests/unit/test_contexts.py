"""Saved contexts (trainyard.contexts) and how the SDK's Client() picks its server and token."""
from __future__ import annotations

import json
import os
import threading

import pytest

from trainyard import contexts, redact
from trainyard import errors as E
from trainyard.sdk import Client, resolve_target

TOKEN_A = "tyk_0123456789ab_" + "a" * 43
TOKEN_B = "tyk_ba9876543210_" + "b" * 43


@pytest.fixture(autouse=True)
def _clean_env(trainyard_home, monkeypatch):
    for var in ("TRAINYARD_URL", "TRAINYARD_TOKEN", "TRAINYARD_ADMIN_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    redact.clear()
    yield trainyard_home


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_save_writes_a_private_file_in_a_private_home(trainyard_home):
    assert contexts.save_context("prod", server="https://ty.example.com/", token=TOKEN_A) is False
    path = trainyard_home / "contexts.json"
    assert _mode(trainyard_home) == 0o700 and _mode(path) == 0o600
    assert json.loads(path.read_text()) == {
        "current": "prod", "contexts": {"prod": {"server": "https://ty.example.com", "token": TOKEN_A}}}
    # no temporary file is left beside it
    assert sorted(p.name for p in trainyard_home.iterdir()) == [".contexts.lock", "contexts.json"]


def test_a_loose_file_is_made_private_when_read(trainyard_home):
    contexts.save_context("prod", server="https://ty.example.com", token=TOKEN_A)
    path = trainyard_home / "contexts.json"
    path.chmod(0o644)
    assert contexts.current().server == "https://ty.example.com"
    assert _mode(path) == 0o600


def test_use_and_remove(trainyard_home):
    contexts.save_context("a", server="http://127.0.0.1:8080", token=TOKEN_A)
    contexts.save_context("b", server="https://b.example.com", token=TOKEN_B)
    assert contexts.current().name == "b"
    assert contexts.use_context("a").server == "http://127.0.0.1:8080"
    assert contexts.load().current == "a"
    assert contexts.remove_context("b") is False
    assert contexts.load().current == "a" and set(contexts.load().contexts) == {"a"}
    assert contexts.remove_context("a") is True
    assert contexts.load().current is None and contexts.current() is None
    with pytest.raises(E.NotFoundError) as info:
        contexts.use_context("a")
    assert info.value.exit_code == E.EXIT_NOT_FOUND and "trainyard login" in str(info.value)


def test_unknown_context_suggests_a_close_name():
    contexts.save_context("production", server="https://p.example.com", token=TOKEN_A)
    with pytest.raises(E.NotFoundError) as info:
        contexts.remove_context("prodution")
    assert "did you mean 'production'" in str(info.value)


def test_saving_again_replaces_and_keeps_the_others():
    contexts.save_context("a", server="https://a.example.com", token=TOKEN_A)
    contexts.save_context("b", server="https://b.example.com", token=TOKEN_B, make_current=False)
    assert contexts.load().current == "a"
    assert contexts.save_context("a", server="https://a2.example.com", token=TOKEN_B) is True
    data = contexts.load()
    assert data.contexts["a"].server == "https://a2.example.com" and set(data.contexts) == {"a", "b"}


def test_concurrent_saves_lose_nothing():
    threads = [threading.Thread(target=contexts.save_context, args=(f"c{i}",),
                                kwargs={"server": f"https://h{i}.example.com", "token": TOKEN_A})
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(contexts.load().contexts) == {f"c{i}" for i in range(8)}


BROKEN = [
    ("{not json", "is not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"current": "x", "contexts": {}}', "current: names no context"),
    ('{"curent": null, "contexts": {}}', "did you mean 'current'"),
    ('{"contexts": {"a": {"server": "ftp://h", "token": "%s"}}}' % TOKEN_A, "contexts.a.server: must be an http"),
    ('{"contexts": {"a": {"server": "https://h", "token": 5}}}', "contexts.a.token: must be text, got int"),
    ('{"contexts": {"a": {"server": "https://h"}}}', "contexts.a.token: is missing"),
    ('{"contexts": {"a": {"server": "https://h", "token": "t", "user": "x"}}}', "contexts.a.user: is not a known key"),
    ('{"contexts": {"a b": {"server": "https://h", "token": "t"}}}', "contexts.a b: must be 1 to 64"),
    ('{"contexts": {"a": {"server": "https://h", "token": "two words %s"}}}' % TOKEN_A, "holds spaces"),
    ('{"contexts": {"a": ["https://h"]}}', "must be an object with server and token"),
    ('{"contexts": {"a\\n": {"server": "https://h", "token": "t"}}}', "must be 1 to 64"),
]


@pytest.mark.parametrize("text,expected", BROKEN)
def test_a_broken_file_names_the_file_the_field_and_the_fix_never_the_token(trainyard_home, text, expected):
    trainyard_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = trainyard_home / "contexts.json"
    path.write_text(text)
    with pytest.raises(E.SpecError) as info:
        contexts.load()
    message = str(info.value)
    assert expected in message
    assert str(path) in message and "trainyard login" in message
    assert TOKEN_A not in message and info.value.exit_code == E.EXIT_USAGE


def test_a_broken_file_fails_the_cli_cleanly(trainyard_home, capsys, monkeypatch):
    from trainyard.cli import main as cli

    trainyard_home.mkdir(mode=0o700, parents=True)
    (trainyard_home / "contexts.json").write_text('{"current": "gone", "contexts": {}}')
    assert cli.main(["jobs", "list"]) == E.EXIT_USAGE
    err = capsys.readouterr().err
    assert "contexts.json" in err and "current" in err and "Traceback" not in err


def test_an_empty_or_missing_file_means_no_contexts(trainyard_home):
    assert contexts.load().contexts == {} and contexts.current() is None
    trainyard_home.mkdir(mode=0o700, parents=True)
    (trainyard_home / "contexts.json").write_text("")
    assert contexts.current() is None


@pytest.mark.parametrize("url,expected", [
    ("https://ty.example.com", "https://ty.example.com"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
])
def test_server_urls_that_are_kept(url, expected):
    assert contexts.check_server(url) == expected


@pytest.mark.parametrize("url,expected", [
    ("", "is empty"), ("ty.example.com", "http:// or https://"), ("ftp://h", "http:// or https://"),
    ("https://user:pw@h", "user name or password"), ("https://h/?token=sekret99", "query"),
    ("http://h:99999", "is not a URL"),
])
def test_server_urls_that_are_refused(url, expected):
    with pytest.raises(E.SpecError) as info:
        contexts.check_server(url)
    assert expected in str(info.value) and info.value.field == "--server"
    assert "sekret99" not in str(info.value) and "pw@" not in str(info.value)


def test_default_name_is_the_host_and_port():
    assert contexts.default_name("http://127.0.0.1:8080") == "127.0.0.1-8080"
    assert contexts.default_name("https://ty.example.com") == "ty.example.com"


def test_context_repr_never_shows_the_token():
    contexts.save_context("a", server="https://a.example.com", token=TOKEN_A)
    assert TOKEN_A not in repr(contexts.load())


# ----------------------------------------------------------------------------- Client() resolution


def _stack(home, url="http://127.0.0.1:8080", token="local-admin-token"):
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "stack.json").write_text(json.dumps({"server": {"url": url}}))
    (home / "admin.token").write_text(token + "\n")


def test_without_contexts_the_local_stack_and_its_admin_token(trainyard_home):
    _stack(trainyard_home)
    assert resolve_target() == ("http://127.0.0.1:8080", "local-admin-token", None)


def test_the_current_context_wins_over_the_local_stack(trainyard_home):
    _stack(trainyard_home)
    contexts.save_context("prod", server="https://ty.example.com", token=TOKEN_A)
    assert resolve_target() == ("https://ty.example.com", TOKEN_A, "prod")
    contexts.remove_context("prod")
    assert resolve_target()[0] == "http://127.0.0.1:8080"


def test_the_environment_wins_over_the_context(trainyard_home, monkeypatch):
    contexts.save_context("prod", server="https://ty.example.com", token=TOKEN_A)
    monkeypatch.setenv("TRAINYARD_TOKEN", TOKEN_B)
    assert resolve_target() == ("https://ty.example.com", TOKEN_B, "prod")
    monkeypatch.setenv("TRAINYARD_URL", "https://other.example.com")
    assert resolve_target()[:2] == ("https://other.example.com", TOKEN_B)


def test_arguments_win_over_everything(trainyard_home, monkeypatch):
    contexts.save_context("prod", server="https://ty.example.com", token=TOKEN_A)
    monkeypatch.setenv("TRAINYARD_URL", "https://env.example.com")
    monkeypatch.setenv("TRAINYARD_TOKEN", "env-token-123")
    assert resolve_target("https://arg.example.com", "arg-token-456") == (
        "https://arg.example.com", "arg-token-456", None)


def test_a_url_without_a_token_gets_only_that_servers_saved_token(trainyard_home):
    contexts.save_context("a", server="https://a.example.com", token=TOKEN_A)
    contexts.save_context("b", server="https://b.example.com", token=TOKEN_B, make_current=False)
    assert resolve_target("https://b.example.com/") == ("https://b.example.com", TOKEN_B, "b")
    # another server never gets a context's token
    url, token, name = resolve_target("https://c.example.com")
    assert (url, name) == ("https://c.example.com", None) and token not in (TOKEN_A, TOKEN_B)


def test_no_server_known_says_how_to_fix_it(trainyard_home):
    with pytest.raises(E.ClusterError) as info:
        resolve_target()
    assert "trainyard login" in str(info.value) and "trainyard up" in str(info.value)


def test_client_repr_and_errors_never_show_the_token(trainyard_home):
    contexts.save_context("prod", server="https://ty.example.com", token=TOKEN_A)
    client = Client()
    assert (client.url, client.context) == ("https://ty.example.com", "prod")
    assert TOKEN_A not in repr(client) and "prod" in repr(client)
    assert redact.redact(f"oops {TOKEN_A}") == "oops ***"
    with pytest.raises(E.SpecError) as info:
        Client(url="https://ty.example.com", token="line\nbreak-token")
    assert "break-token" not in str(info.value)


def test_the_file_is_replaced_atomically(trainyard_home, monkeypatch):
    contexts.save_context("a", server="https://a.example.com", token=TOKEN_A)
    before = (trainyard_home / "contexts.json").read_text()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        contexts.save_context("b", server="https://b.example.com", token=TOKEN_B)
    assert (trainyard_home / "contexts.json").read_text() == before
    assert not [p for p in trainyard_home.iterdir() if p.name.endswith(".tmp")]
