"""Sessions on a shared server: each API key sees only its own sessions, a busy session is a
409 after a bounded wait, damaged files can be deleted, error bodies and /health name no
server path, and a session store that cannot be written is a 503 (and /health says so)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

from clinvk_lib import config
from clinvk_lib.server.keys import ApiKeys, KeyIdentity, key_id
from tests.conftest import records
from tests.serverutil import (  # noqa: F401 (fixtures)
    fresh_backend_probe, read_pid, server, start_server)

ALICE, BOB, ADMIN = "sk-alice-4f1d2c", "sk-bob-9a8e7d", "sk-admin-5b6c7d"
KEYED = {"server.api_keys": [ALICE, BOB], "server.admin_api_keys": [ADMIN]}


pytestmark = pytest.mark.usefixtures("fresh_backend_probe")


@pytest.fixture
def keyed(start_server):
    return start_server(**KEYED)


@pytest.fixture
def pidfile(monkeypatch, tmp_path):
    path = str(tmp_path / "fake.pid")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", path)
    return path


def as_key(key):
    return {"X-Api-Key": key} if key else {}


def prompt(srv, key=None, **fields):
    body = dict({"backend": "claude", "prompt": "hello"}, **fields)
    return srv.post("/api/v1/prompt", body, headers=as_key(key))


def new_session(srv, key=None, **fields):
    reply = prompt(srv, key, **fields)
    assert reply.status == 200, reply
    return reply.json()["session_id"]


def session_ids(srv, key):
    return [s["id"] for s in srv.get("/api/v1/sessions", headers=as_key(key)).json()["sessions"]]


def openai_turn(srv, key, session_id, model="claude", stream=False):
    return srv.post("/openai/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": "and now?"}],
        "stream": stream}, headers=dict(as_key(key), **{"X-Clinvk-Session-Id": session_id}))


def anthropic_turn(srv, key, session_id):
    return srv.post("/anthropic/v1/messages", {
        "model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "and?"}]},
        headers=dict(as_key(key), **{"X-Clinvk-Session-Id": session_id}))


def write_session_file(home, sid, owner="", backend_session_id="b-1"):
    """A session file put in the store directly (as another clinvk or an older one would)."""
    sessions_dir = os.path.join(str(home), "sessions")
    os.makedirs(sessions_dir, exist_ok=True)
    data = {"id": sid, "backend": "claude", "working_dir": str(home),
            "backend_session_id": backend_session_id, "status": "active"}
    if owner:
        data["api_key_id"] = owner
    with open(os.path.join(sessions_dir, sid + ".json"), "w") as f:
        json.dump(data, f)


# -- item: sessions belong to the key that created them -------------------------------------------


def test_key_id_is_the_documented_hmac_and_never_the_key():
    expected = hmac.new(b"clinvk-key-id", ALICE.encode(), hashlib.sha256).hexdigest()[:16]
    assert key_id(ALICE) == expected and key_id(ALICE) == key_id(ALICE)
    assert key_id(ALICE) != key_id(BOB)
    assert ALICE not in key_id(ALICE)
    assert key_id(ALICE) != hashlib.sha256(ALICE.encode()).hexdigest()[:16]


def test_admin_keys_are_accepted_and_known_as_admin_keys():
    keys = ApiKeys([ALICE], admin_keys=[ADMIN])
    assert keys.identify(ADMIN) == KeyIdentity(key_id(ADMIN), True)
    assert keys.identify(ALICE) == KeyIdentity(key_id(ALICE), False)
    assert keys.identify(BOB) is None and keys.matches(ADMIN)
    assert bool(ApiKeys(admin_keys=[ADMIN]))          # admin keys alone switch auth on


def test_admin_keys_come_from_the_environment_and_are_masked(tmp_path):
    cfg = config.load(None, env={"CLINVK_HOME": str(tmp_path),
                                 "CLINVK_ADMIN_API_KEYS": ADMIN + ",sk-ops-2"})
    assert cfg.get("server.admin_api_keys") == [ADMIN, "sk-ops-2"]
    shown = dict((key, value) for key, value, _, _ in cfg.rows())
    assert shown["server.admin_api_keys"] == ["****", "****"]


def test_a_session_records_the_id_of_the_key_that_created_it_never_the_key(keyed, clinvk_home):
    sid = new_session(keyed, ALICE)
    with open(str(clinvk_home / "sessions" / (sid + ".json"))) as f:
        text = f.read()
    assert json.loads(text)["api_key_id"] == key_id(ALICE)
    assert ALICE not in text


def test_another_keys_sessions_are_not_listed(keyed):
    mine = new_session(keyed, ALICE)
    theirs = new_session(keyed, BOB)
    assert session_ids(keyed, ALICE) == [mine]
    assert session_ids(keyed, BOB) == [theirs]
    assert keyed.get("/api/v1/sessions", headers=as_key(BOB)).json()["total"] == 1


@pytest.mark.parametrize("length", [32, 8, 1])
def test_another_keys_session_is_404_by_id_and_by_prefix(keyed, length):
    sid = new_session(keyed, ALICE)
    reply = keyed.get("/api/v1/sessions/" + sid[:length], headers=as_key(BOB))
    assert reply.status == 404 and reply.json()["error"] == "session_not_found"
    assert keyed.get("/api/v1/sessions/" + sid[:length], headers=as_key(ALICE)).status == 200


def test_another_keys_session_cannot_be_deleted(keyed):
    sid = new_session(keyed, ALICE)
    reply = keyed.request("DELETE", "/api/v1/sessions/" + sid[:4], headers=as_key(BOB))
    assert reply.status == 404 and reply.json()["error"] == "session_not_found"
    assert keyed.get("/api/v1/sessions/" + sid, headers=as_key(ALICE)).status == 200


@pytest.mark.parametrize("length", [32, 1])
def test_another_keys_session_cannot_be_continued(keyed, record, length):
    sid = new_session(keyed, ALICE)
    for output_format in ("json", "stream-json"):
        reply = prompt(keyed, BOB, session_id=sid[:length], output_format=output_format)
        assert reply.status == 404 and reply.json()["error"] == "session_not_found"
    assert len(records(record)) == 1                  # only Alice's first turn ever ran
    assert keyed.get("/api/v1/sessions/" + sid, headers=as_key(ALICE)).json()["turn_count"] == 1


def test_another_keys_session_cannot_be_continued_through_the_compatible_apis(keyed, record):
    sid = new_session(keyed, ALICE)
    reply = openai_turn(keyed, BOB, sid)
    assert reply.status == 404 and reply.json()["error"]["code"] == "session_not_found"
    reply = anthropic_turn(keyed, BOB, sid[:6])
    assert reply.status == 404 and reply.json()["error"]["type"] == "not_found_error"
    assert len(records(record)) == 1
    assert openai_turn(keyed, ALICE, sid).status == 200


def test_another_keys_session_does_not_make_a_prefix_ambiguous(keyed, clinvk_home):
    mine, theirs = "abc1" + "0" * 28, "abc2" + "0" * 28
    write_session_file(clinvk_home, mine, owner=key_id(ALICE))
    write_session_file(clinvk_home, theirs, owner=key_id(BOB))
    reply = keyed.get("/api/v1/sessions/abc", headers=as_key(ALICE))
    assert reply.status == 200 and reply.json()["id"] == mine
    assert keyed.get("/api/v1/sessions/abc", headers=as_key(BOB)).json()["id"] == theirs
    ambiguous = keyed.get("/api/v1/sessions/abc", headers=as_key(ADMIN))
    assert ambiguous.status == 404 and theirs in ambiguous.json()["message"]


def test_admin_key_lists_reads_continues_and_deletes_every_session(keyed, clinvk_home):
    alices = new_session(keyed, ALICE)
    nobodys = "ee" * 16
    write_session_file(clinvk_home, nobodys)            # made by the command line
    assert set(session_ids(keyed, ADMIN)) == {alices, nobodys}
    assert prompt(keyed, ADMIN, session_id=alices).status == 200
    assert keyed.request("DELETE", "/api/v1/sessions/" + nobodys, headers=as_key(ADMIN)
                         ).status == 200
    assert session_ids(keyed, ADMIN) == [alices]


def test_sessions_made_without_a_key_are_seen_only_by_admin_keys(keyed, clinvk_home, record):
    nobodys = "ee" * 16
    write_session_file(clinvk_home, nobodys)            # CLI session, or from a keyless server
    assert session_ids(keyed, ALICE) == []
    assert keyed.get("/api/v1/sessions/ee", headers=as_key(ALICE)).status == 404
    assert prompt(keyed, ALICE, session_id=nobodys).status == 404
    assert records(record) == []
    assert session_ids(keyed, ADMIN) == [nobodys]


def test_session_created_by_an_admin_key_is_not_shown_to_other_keys(keyed):
    sid = new_session(keyed, ADMIN)
    assert session_ids(keyed, ALICE) == []
    assert keyed.get("/api/v1/sessions/" + sid, headers=as_key(ALICE)).status == 404


def test_without_keys_every_session_is_everyones(server, clinvk_home):
    nobodys = "ee" * 16
    write_session_file(clinvk_home, nobodys)
    sid = new_session(server)
    assert set(session_ids(server, None)) == {sid, nobodys}
    assert server.get("/api/v1/sessions/" + sid).json()["id"] == sid


# -- item: a busy session is a 409 after a bounded wait ------------------------------------------


@contextlib.contextmanager
def turn_in_progress(srv, monkeypatch, pidfile, key=None, **fields):
    """A turn whose fake CLI hangs, held open on a raw connection until the block ends
    (closing the connection stops it)."""
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    if os.path.exists(pidfile):
        os.unlink(pidfile)                              # left by an earlier turn
    body = json.dumps(dict({"backend": "claude", "prompt": "long turn"}, **fields)).encode()
    head = ("POST /api/v1/prompt HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
            "application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), "".join("%s: %s\r\n" % kv for kv in as_key(key).items())))
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.sendall(head.encode() + body)
        pid = read_pid(pidfile)
        os.unlink(pidfile)
        monkeypatch.setenv("FAKE_CLI_MODE", "ok")
        yield pid
    finally:
        s.close()


def test_second_turn_on_a_busy_session_is_409_after_a_bounded_wait(start_server, monkeypatch,
                                                                    pidfile):
    srv = start_server(**{"server.session_busy_wait_secs": 1})
    sid = new_session(srv)
    with turn_in_progress(srv, monkeypatch, pidfile, session_id=sid):
        reply = prompt(srv, session_id=sid)
    assert reply.status == 409, reply
    body = reply.json()
    assert body["error"] == "session_busy" and sid in body["message"]
    assert "waited 1s" in body["message"]
    assert not os.path.exists(pidfile)                  # the second turn started nothing


def test_streamed_turn_on_a_busy_session_is_409_before_the_stream_starts(
        start_server, monkeypatch, pidfile):
    srv = start_server(**{"server.session_busy_wait_secs": 0})
    sid = new_session(srv, backend="gemini")
    with turn_in_progress(srv, monkeypatch, pidfile, backend="gemini", session_id=sid):
        reply = prompt(srv, backend="gemini", session_id=sid, output_format="stream-json")
        compat = openai_turn(srv, None, sid, model="gemini", stream=True)
    assert reply.status == 409 and reply.json()["error"] == "session_busy"
    assert compat.status == 409 and compat.json()["error"]["code"] == "session_busy"


def test_waiting_for_a_busy_session_holds_no_run_slot(start_server, monkeypatch, pidfile):
    srv = start_server(**{"server.session_busy_wait_secs": 4,
                          "server.max_concurrent_runs": 2, "server.queue_timeout_secs": 0})
    sid = new_session(srv)
    with turn_in_progress(srv, monkeypatch, pidfile, session_id=sid):
        waiting = []
        waiter = threading.Thread(target=lambda: waiting.append(prompt(srv, session_id=sid)))
        waiter.start()
        time.sleep(1)                                   # the second turn is waiting by now
        other = prompt(srv, backend="codex")            # needs the one slot still free
        waiter.join(30)
    assert other.status == 200, other
    assert waiting[0].status == 409


def test_deleting_a_busy_session_is_409_after_the_bounded_wait(start_server, monkeypatch,
                                                               pidfile):
    srv = start_server(**{"server.session_busy_wait_secs": 0})
    sid = new_session(srv)
    with turn_in_progress(srv, monkeypatch, pidfile, session_id=sid):
        reply = srv.request("DELETE", "/api/v1/sessions/" + sid)
    assert reply.status == 409 and reply.json()["error"] == "session_busy"


# -- item: damaged files, and no server paths in answers ------------------------------------------


def damage(home, sid):
    with open(os.path.join(str(home), "sessions", sid + ".json"), "w") as f:
        f.write("{not json")


def test_damaged_session_file_can_be_deleted_through_the_api(server, clinvk_home):
    sid = new_session(server)
    damage(clinvk_home, sid)
    assert server.get("/api/v1/sessions/" + sid).status == 409
    reply = server.request("DELETE", "/api/v1/sessions/" + sid[:10])
    assert reply.status == 200 and reply.json() == {"deleted": True, "id": sid}
    assert not (clinvk_home / "sessions" / (sid + ".json")).exists()
    assert server.get("/api/v1/sessions/" + sid).status == 404


def test_only_an_admin_key_may_delete_a_damaged_session(keyed, clinvk_home):
    sid = new_session(keyed, ALICE)
    damage(clinvk_home, sid)                            # whose it was cannot be read now
    assert keyed.request("DELETE", "/api/v1/sessions/" + sid, headers=as_key(ALICE)
                         ).status == 404
    assert keyed.request("DELETE", "/api/v1/sessions/" + sid, headers=as_key(ADMIN)
                         ).status == 200


def test_error_bodies_about_a_damaged_session_name_no_server_path(server, clinvk_home):
    sid = new_session(server)
    damage(clinvk_home, sid)
    for reply in (server.get("/api/v1/sessions/" + sid), prompt(server, session_id=sid),
                  openai_turn(server, None, sid)):
        assert reply.status == 409, reply
        assert str(clinvk_home) not in reply.body.decode() and sid in reply.body.decode()


def test_health_names_no_server_path_when_the_store_is_unusable(start_server, clinvk_home):
    (clinvk_home / "sessions").write_text("a file where the directory should be")
    reply = start_server(**KEYED).get("/health")
    assert reply.status == 503
    error = reply.json()["session_store"]["error"]
    assert "session store" in error and "Not a directory" in error
    assert str(clinvk_home) not in reply.body.decode()


# -- store: a store that cannot be written is a 503, and /health says so --------------------------


def replace_by_file(path):
    """Put a regular file where the directory ``path`` is: root cannot write through it
    either (ENOTDIR), unlike a chmod."""
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory")


def assert_store_unavailable(reply):
    assert reply.status == 503, reply
    body = reply.json()
    assert body["error"] == "session_store_unavailable"
    assert "session store" in body["message"] and "CLINVK_HOME" in body["message"]


def test_new_session_on_a_store_that_cannot_be_written_is_503_and_runs_nothing(
        server, clinvk_home, record):
    replace_by_file(clinvk_home / "sessions")
    assert_store_unavailable(prompt(server))
    assert_store_unavailable(prompt(server, output_format="stream-json"))
    assert records(record) == []
    assert prompt(server, ephemeral=True).status == 200      # no session needed: runs


def test_continuing_on_a_store_whose_locks_cannot_be_made_is_503_and_runs_nothing(
        server, clinvk_home, record):
    sid = new_session(server)
    replace_by_file(clinvk_home / "sessions" / "locks")
    assert_store_unavailable(prompt(server, session_id=sid))
    assert len(records(record)) == 1
    assert server.get("/api/v1/sessions/" + sid).status == 200     # reading still works


def test_listing_an_unreadable_store_is_503_not_500(server, clinvk_home):
    replace_by_file(clinvk_home / "sessions")
    assert_store_unavailable(server.get("/api/v1/sessions"))
    assert_store_unavailable(server.get("/api/v1/sessions/" + "ab" * 16))


def test_compatible_api_on_an_unwritable_store_is_503_in_its_own_shape(server, clinvk_home):
    replace_by_file(clinvk_home / "sessions")
    reply = server.post("/openai/v1/chat/completions", {
        "model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 503 and reply.json()["error"]["code"] == "session_store_unavailable"


def test_health_reports_a_store_where_no_file_can_be_made(server, clinvk_home):
    new_session(server)
    assert server.get("/health").status == 200
    replace_by_file(clinvk_home / "sessions" / "locks")
    reply = server.get("/health")
    assert reply.status == 503
    body = reply.json()
    assert body["status"] == "unhealthy"
    assert body["session_store"]["available"] is False
    assert body["session_store"]["session_count"] == 1
    assert body["session_store"]["error"]


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)``: a fresh tmpfs of ``size`` bytes mounted for this test (needs root or
    CAP_SYS_ADMIN; skipped otherwise). Returns its path."""
    mounted = []

    def mount(size):
        where = tmp_path / ("tmpfs-" + uuid.uuid4().hex[:8])
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % size,
                               "tmpfs", str(where)], stderr=subprocess.PIPE)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here: %s" % done.stderr.decode().strip())
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)])


def test_read_only_store_is_503_for_new_and_continued_sessions(start_server, tmpfs,
                                                                monkeypatch, record):
    home = tmpfs(1 << 20)
    monkeypatch.setenv("CLINVK_HOME", str(home))
    srv = start_server()
    sid = new_session(srv)
    subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
    assert_store_unavailable(prompt(srv))
    reply = prompt(srv, session_id=sid)
    assert_store_unavailable(reply)
    assert "Read-only file system" in reply.json()["message"]
    assert len(records(record)) == 1
    assert srv.get("/api/v1/sessions").json()["total"] == 1
    health = srv.get("/health")
    assert health.status == 503 and health.json()["session_store"]["available"] is False
    assert "Read-only file system" in health.json()["session_store"]["error"]


def test_full_store_is_503_before_the_backend_runs_and_health_says_so(start_server, tmpfs,
                                                                      monkeypatch, record):
    home = tmpfs(256 * 1024)
    monkeypatch.setenv("CLINVK_HOME", str(home))
    srv = start_server()
    sid = new_session(srv)
    with open(str(home / "filler"), "wb", buffering=0) as f:
        with pytest.raises(OSError, match="No space left"):
            while True:
                f.write(b"\0" * 4096)
    assert_store_unavailable(prompt(srv))
    reply = prompt(srv, session_id=sid)
    assert_store_unavailable(reply)
    assert "No space left on device" in reply.json()["message"]
    assert len(records(record)) == 1
    health = srv.get("/health")
    assert health.status == 503 and health.json()["session_store"]["available"] is False

