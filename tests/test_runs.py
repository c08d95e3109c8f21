"""The runs in flight (``/api/v1/runs``: list, watch, cancel) and ``/api/v1/usage``: every
request that runs a backend is listed while it runs, an operator can watch its events and
stop it (its process group dies), a key sees only its own runs, an admin key every run."""

from __future__ import annotations

import json
import os
import threading

import pytest

from clinvk_lib.server.keys import key_id
from clinvk_lib.server.runs import EVENTS_KEPT, TEXT_KEPT, RunRegistry
from tests.serverutil import pid_alive, read_pid, start_server, wait_for  # noqa: F401

KEY, OTHER, ADMIN = "key-one-0123456789", "key-two-0123456789", "admin-key-0123456789"


def as_key(key):
    return {"X-Api-Key": key}


def register(registry, key="", cancel=lambda: None):
    return registry.register("POST", "/api/v1/prompt", "127.0.0.1", key, "req1", cancel)


# -- the registry -------------------------------------------------------------------------------


def test_a_key_sees_only_its_own_runs_and_none_means_every_run():
    runs = RunRegistry()
    mine, theirs = register(runs, "k1"), register(runs, "k2")
    assert runs.list("k1") == [mine]
    assert runs.find(theirs.id, "k1") is None
    assert runs.list(None) == [mine, theirs]


def test_an_unregistered_run_is_no_longer_listed():
    runs = RunRegistry()
    run = register(runs)
    runs.unregister(run)
    assert runs.list() == [] and runs.find(run.id) is None and run.ended


def test_cancel_fires_the_runs_cancel_token():
    fired = []
    runs = RunRegistry()
    run = register(runs, cancel=lambda: fired.append(True))
    runs.cancel(run)
    assert fired == [True] and run.to_dict()["cancel_requested"] is True


def test_a_run_keeps_only_its_latest_events_and_cuts_long_texts():
    runs = RunRegistry()
    run = register(runs)
    for i in range(EVENTS_KEPT + 5):
        runs.record(run, {"type": "message", "content": {"text": "x" * (TEXT_KEPT + 10)}})
    assert len(run.events) == EVENTS_KEPT and run.seq == EVENTS_KEPT + 5
    assert len(run.events[-1][1]["content"]["text"]) == TEXT_KEPT + 3


def test_follow_gives_the_kept_events_then_new_ones_then_run_ended():
    runs = RunRegistry()
    run = register(runs)
    runs.record(run, {"type": "init"})
    seen = []
    follower = threading.Thread(target=lambda: seen.extend(runs.follow(run, lambda: False)))
    follower.start()
    assert wait_for(lambda: len(seen) == 1)
    runs.record(run, {"type": "message"})
    runs.unregister(run)
    follower.join(5)
    assert [(e["seq"], e["type"]) for e in seen] == [(1, "init"), (2, "message"),
                                                      (3, "run_ended")]


# -- over HTTP ----------------------------------------------------------------------------------


class SlowRun:
    """A prompt that runs (by default the fake sleeps a minute before it answers) in a thread
    of its own; ``reply`` is its answer once it came."""

    def __init__(self, srv, headers=None, stream=False, backend="claude",
                 prompt="FAKE_SLEEP: 60\nhello"):
        self.reply = None
        body = {"backend": backend, "prompt": prompt, "ephemeral": True}
        if stream:
            body["output_format"] = "stream-json"
        self.thread = threading.Thread(target=self._send, args=(srv, body, headers))
        self.thread.start()

    def _send(self, srv, body, headers):
        self.reply = srv.post("/api/v1/prompt", body, headers=headers, timeout=90)


def running(srv, headers=None, count=1):
    """The runs listed once ``count`` of them run a backend."""
    listed = []

    def enough():
        listed[:] = srv.get("/api/v1/runs", headers=headers).json()["runs"]
        return sum(r["state"] == "running" for r in listed) >= count
    assert wait_for(enough, 20), listed
    return listed


@pytest.fixture
def pidfile(tmp_path, monkeypatch):
    path = tmp_path / "fake.pid"
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(path))
    return path


def test_a_running_prompt_is_listed_with_backend_route_client_and_kind(start_server):
    srv = start_server()
    slow = SlowRun(srv, stream=True, backend="codex")
    (run,) = running(srv)
    assert (run["backends"], run["route"], run["method"], run["kind"], run["client"],
            run["key_id"]) == (["codex"], "/api/v1/prompt", "POST", "stream", "127.0.0.1", "")
    assert run["elapsed_ms"] >= 0 and run["id"].startswith("run_")
    srv.request("DELETE", "/api/v1/runs/" + run["id"])
    slow.thread.join(30)
    assert srv.get("/api/v1/runs").json() == {"runs": [], "total": 0}


def test_cancelling_a_run_kills_its_process_group_and_its_client_is_told(start_server, pidfile):
    srv = start_server()
    slow = SlowRun(srv)
    (run,) = running(srv)
    pid = read_pid(str(pidfile))
    group = os.getpgid(pid)
    answer = srv.request("DELETE", "/api/v1/runs/" + run["id"])
    assert answer.status == 200
    assert answer.json() == {"id": run["id"], "cancelled": True, "ended": True}
    slow.thread.join(30)
    assert slow.reply.status == 503 and slow.reply.json()["error"] == "cancelled"
    assert not pid_alive(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)


def test_watching_a_stream_gives_its_events_and_ends_with_run_ended(start_server):
    srv = start_server()
    slow = SlowRun(srv, stream=True)
    (run,) = running(srv)
    canceller = threading.Timer(1.0, lambda: srv.request("DELETE", "/api/v1/runs/" + run["id"]))
    canceller.start()
    reply = srv.get("/api/v1/runs/%s/events" % run["id"], timeout=60)
    canceller.join()
    slow.thread.join(30)
    assert reply.headers["Content-Type"] == "application/x-ndjson"
    events = [json.loads(line) for line in reply.body.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "init" and types[-1] == "run_ended" and "done" in types
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["content"] == {"cancelled": True}


def test_an_unknown_run_is_404_in_the_native_shape(start_server):
    srv = start_server()
    for method, path in (("DELETE", "/api/v1/runs/run_nope"),
                         ("GET", "/api/v1/runs/run_nope/events")):
        reply = srv.request(method, path)
        assert reply.status == 404 and reply.json()["error"] == "run_not_found", reply


def test_a_key_sees_and_cancels_only_its_own_runs_and_an_admin_key_every_run(start_server):
    srv = start_server(**{"server.api_keys": [KEY, OTHER], "server.admin_api_keys": [ADMIN]})
    slow = SlowRun(srv, as_key(KEY))
    (run,) = running(srv, as_key(KEY))
    assert run["key_id"] == key_id(KEY)
    assert srv.get("/api/v1/runs", headers=as_key(OTHER)).json()["runs"] == []
    assert srv.request("DELETE", "/api/v1/runs/" + run["id"],
                       headers=as_key(OTHER)).status == 404
    assert [r["id"] for r in srv.get("/api/v1/runs", headers=as_key(ADMIN)).json()["runs"]] \
        == [run["id"]]
    assert srv.request("DELETE", "/api/v1/runs/" + run["id"], headers=as_key(ADMIN)).json()[
        "ended"] is True
    slow.thread.join(30)
    assert slow.reply.status == 503


def test_the_runs_api_needs_a_key_when_keys_are_set(start_server):
    srv = start_server(**{"server.api_keys": [KEY]})
    for method, path in (("GET", "/api/v1/runs"), ("DELETE", "/api/v1/runs/run_x"),
                         ("GET", "/api/v1/runs/run_x/events"), ("GET", "/api/v1/usage")):
        assert srv.request(method, path).status == 401, path


def test_a_page_on_another_origin_cannot_cancel_a_run(start_server):
    srv = start_server()
    reply = srv.request("DELETE", "/api/v1/runs/run_x",
                        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert reply.status == 403


def test_a_run_waiting_for_a_slot_is_listed_as_queued(start_server):
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 60})
    first, second = SlowRun(srv), SlowRun(srv)
    assert wait_for(lambda: sorted(r["state"] for r in srv.get("/api/v1/runs").json()["runs"])
                    == ["queued", "running"], 20)
    for run in srv.get("/api/v1/runs").json()["runs"]:
        srv.request("DELETE", "/api/v1/runs/" + run["id"])
    for slow in (first, second):
        slow.thread.join(30)
        assert slow.reply.status == 503


def test_usage_counts_runs_and_tokens_per_backend_and_per_key(start_server):
    srv = start_server(**{"server.metrics_enabled": True, "server.api_keys": [KEY, OTHER]})
    for key in (KEY, OTHER):
        assert srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                        headers=as_key(key)).status == 200
    usage = srv.get("/api/v1/usage", headers=as_key(KEY)).json()
    assert usage["enabled"] is True and usage["runs_in_flight"] == 0
    assert usage["backends"]["claude"]["runs"] == 2
    assert usage["backends"]["claude"]["output_tokens"] > 0
    assert list(usage["keys"]) == [key_id(KEY)] and usage["keys"][key_id(KEY)]["runs"] == 1
    assert usage["http_requests"] >= 2


def test_usage_says_nothing_is_counted_when_metrics_are_off(start_server):
    usage = start_server().get("/api/v1/usage").json()
    assert (usage["enabled"], usage["backends"], usage["keys"]) == (False, {}, {})


def test_a_quiet_runs_event_stream_carries_blank_keep_alive_lines(start_server):
    srv = start_server(**{"server.sse_keepalive_secs": 1})
    slow = SlowRun(srv)                     # no event for a minute
    (run,) = running(srv)
    conn = srv.connection()
    try:
        conn.request("GET", "/api/v1/runs/%s/events" % run["id"])
        reply = conn.getresponse()
        assert reply.readline() == b"\n"
    finally:
        conn.close()
    srv.request("DELETE", "/api/v1/runs/" + run["id"])
    slow.thread.join(30)
