"""Durable jobs over HTTP (``/api/v1/jobs``): every route and status, the same validation and
errors as the synchronous routes, cancel, the per-key scope, the queue bound and FIFO start
order. The event stream's resume is in test_job_events.py; restarts in test_jobs_durability.py."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from clinvk_lib import execute
from tests.conftest import records
from tests.serverutil import (  # noqa: F401 (fixtures)
    fresh_backend_probe, pid_alive, read_pid, start_server, wait_for)

FINAL = ("succeeded", "failed", "cancelled", "interrupted")
ALICE, BOB, ADMIN = "sk-alice-4f1d2c", "sk-bob-9a8e7d", "sk-admin-5b6c7d"
KEYED = {"server.api_keys": [ALICE, BOB], "server.admin_api_keys": [ADMIN]}

pytestmark = pytest.mark.usefixtures("fresh_backend_probe")


def submit(srv, kind="prompt", key=None, expect=202, **request):
    body = {"kind": kind, "request": request or {"backend": "claude", "prompt": "hello"}}
    reply = srv.post("/api/v1/jobs", body, headers=as_key(key))
    assert reply.status == expect, reply
    return reply.json()


def as_key(key):
    return {"X-Api-Key": key} if key else {}


def job(srv, job_id, key=None):
    reply = srv.get("/api/v1/jobs/" + job_id, headers=as_key(key))
    assert reply.status == 200, reply
    return reply.json()


def wait_status(srv, job_id, statuses=FINAL, seconds=20.0, key=None):
    found = {}

    def reached():
        found.update(job(srv, job_id, key))
        return found["status"] in statuses
    assert wait_for(reached, seconds, 0.05), found
    return found


def slow(seconds, text="hello"):
    """A prompt the fake CLIs answer after ``seconds``."""
    return "FAKE_SLEEP: %s\n%s" % (seconds, text)


@pytest.fixture
def srv(start_server):
    return start_server()


@pytest.fixture
def pidfile(monkeypatch, tmp_path):
    path = str(tmp_path / "fake.pid")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", path)
    return path


# -- POST, GET: the job and its result -------------------------------------------------------------


def test_a_job_is_accepted_with_202_its_location_and_the_queued_job(srv):
    reply = srv.post("/api/v1/jobs", {"kind": "prompt", "metadata": {"ticket": "OPS-1"},
                                      "request": {"backend": "claude", "prompt": "hi"}})
    assert reply.status == 202
    body = reply.json()
    assert reply.headers["Location"] == "/api/v1/jobs/" + body["id"]
    assert body["status"] == "queued" and body["kind"] == "prompt"
    assert body["metadata"] == {"ticket": "OPS-1"}
    assert body["result"] is None and body["error"] is None and body["started_at"] is None
    assert body["request"]["prompt"] == "hi"


def test_a_prompt_jobs_result_is_the_synchronous_routes_answer(srv):
    done = wait_status(srv, submit(srv)["id"])
    sync = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hello"}).json()
    assert done["status"] == "succeeded"
    assert list(done["result"]) == list(sync)
    assert done["result"]["output"] == sync["output"] == "echo: hello"
    assert done["started_at"] <= done["finished_at"]


@pytest.mark.parametrize("kind,request_body", [
    ("parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                            {"backend": "codex", "prompt": "b", "id": "t2"}]}),
    ("chain", {"steps": [{"backend": "claude", "prompt": "a"},
                         {"backend": "gemini", "prompt": "then {{previous}}"}]}),
    ("compare", {"prompt": "a", "backends": ["claude", "codex"]}),
])
def test_a_fan_out_jobs_result_is_the_synchronous_routes_answer(srv, kind, request_body):
    done = wait_status(srv, submit(srv, kind, **request_body)["id"])
    sync = srv.post("/api/v1/" + kind, request_body).json()
    assert done["status"] == "succeeded"
    assert set(done["result"]) == set(sync)
    assert [r["output"] for r in done["result"]["results"]] == \
        [r["output"] for r in sync["results"]]


def test_a_prompt_whose_run_exits_non_zero_is_failed_with_the_routes_answer_as_result(
        srv, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    done = wait_status(srv, submit(srv)["id"])
    assert done["status"] == "failed"
    assert done["result"]["exit_code"] != 0 and done["result"]["error"]
    assert done["error"]["error"] == "run_failed"


def test_a_parallel_job_with_one_failed_task_is_failed_and_keeps_every_result(srv, tmp_path):
    done = wait_status(srv, submit(srv, "parallel", tasks=[
        {"backend": "claude", "prompt": "a"},
        {"backend": "claude", "prompt": "b", "workdir": str(tmp_path / "missing")}])["id"])
    assert done["status"] == "failed"
    assert [r["exit_code"] == 0 for r in done["result"]["results"]] == [True, False]
    assert done["error"]["message"] == "1 of 2 tasks failed or were cancelled"


def test_a_chain_job_that_stops_at_a_failed_step_is_failed_and_says_what_did_not_run(
        srv, tmp_path):
    done = wait_status(srv, submit(srv, "chain", stop_on_failure=True, steps=[
        {"backend": "claude", "prompt": "a", "workdir": str(tmp_path / "missing")},
        {"backend": "claude", "prompt": "b"}])["id"])
    assert done["status"] == "failed" and done["result"]["failed_step"] == 1
    assert done["error"]["message"] == "1 of 2 steps failed or were cancelled; 1 did not run"


def test_a_job_the_route_answers_with_an_error_is_failed_with_that_error(start_server):
    srv = start_server(**{"server.request_timeout_secs": 1})
    done = wait_status(srv, submit(srv, backend="claude", prompt=slow(10))["id"])
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"]["status"] == 504 and done["error"]["error"] == "timeout"


def test_a_dry_run_job_succeeds_with_the_command_and_runs_nothing(srv, record):
    done = wait_status(srv, submit(srv, backend="codex", prompt="x", dry_run=True)["id"])
    assert done["status"] == "succeeded" and done["result"]["dry_run"] is True
    assert records(record) == []


def test_a_prompt_job_continues_a_session(srv):
    first = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "one"}).json()
    done = wait_status(srv, submit(srv, backend="claude", prompt="two",
                                   session_id=first["session_id"])["id"])
    assert done["result"]["session_id"] == first["session_id"]
    assert done["result"]["output"].startswith("[history: 1 turns]")


# -- what the synchronous route refuses, a job refuses --------------------------------------------


def test_a_bad_field_gets_the_synchronous_routes_400_named_from_the_jobs_body(srv):
    bad = {"tasks": [{"backend": "gpt", "prompt": "x"}]}
    sync = srv.post("/api/v1/parallel", bad).json()
    reply = srv.post("/api/v1/jobs", {"kind": "parallel", "request": bad})
    assert reply.status == 400
    assert reply.json()["message"] == "request." + sync["message"]
    assert srv.get("/api/v1/jobs").json()["total"] == 0


@pytest.mark.parametrize("body,field", [
    ({"kind": "stream", "request": {}}, "kind"),
    ({"kind": "prompt"}, "request"),
    ({"kind": "prompt", "request": []}, "request"),
    ({"kind": "prompt", "request": {"backend": "claude"}}, "request.prompt"),
    ({"kind": "prompt", "request": {"backend": "claude", "prompt": "x"}, "metadata": {"a": 1}},
     "metadata.a"),
])
def test_a_malformed_job_is_400_naming_the_field(srv, body, field):
    reply = srv.post("/api/v1/jobs", body)
    assert reply.status == 400 and reply.json()["field"] == field, reply


@pytest.mark.parametrize("kind,request_body", [
    ("prompt", {"backend": "codex", "prompt": "x"}),
    ("compare", {"prompt": "x", "backends": ["codex"]}),
])
def test_a_job_that_cannot_start_gets_the_synchronous_routes_error(start_server, kind,
                                                                   request_body):
    srv = start_server(**{"backends.codex.enabled": False})
    sync = srv.post("/api/v1/" + kind, request_body)
    reply = srv.post("/api/v1/jobs", {"kind": kind, "request": request_body})
    assert sync.status == 503 and (reply.status, reply.json()) == (sync.status, sync.json())
    assert srv.get("/api/v1/jobs").json()["total"] == 0


def test_a_job_with_a_refused_workdir_gets_the_synchronous_routes_400(srv):
    body = {"backend": "claude", "prompt": "x", "workdir": "/etc"}
    sync = srv.post("/api/v1/prompt", body)
    reply = srv.post("/api/v1/jobs", {"kind": "prompt", "request": body})
    assert sync.status == 400 and reply.json() == sync.json()


def test_a_job_continuing_an_unknown_session_is_404(srv):
    reply = srv.post("/api/v1/jobs", {"kind": "prompt", "request": {
        "backend": "claude", "prompt": "x", "session_id": "0123456789abcdef"}})
    assert reply.status == 404 and reply.json()["error"] == "session_not_found"


def test_a_webhook_url_is_refused_while_webhooks_are_not_allowed(srv):
    reply = srv.post("/api/v1/jobs", {"kind": "prompt", "webhook_url": "http://127.0.0.1:9/x",
                                      "request": {"backend": "claude", "prompt": "x"}})
    assert reply.status == 400 and reply.json()["field"] == "webhook_url"
    assert srv.get("/api/v1/jobs").json()["total"] == 0


# -- GET /api/v1/jobs -----------------------------------------------------------------------------


def test_the_list_is_newest_first_without_request_and_result(srv):
    ids = [wait_status(srv, submit(srv, backend="claude", prompt="n%d" % i)["id"])["id"]
           for i in range(3)]
    listed = srv.get("/api/v1/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == ids[::-1]
    assert (listed["total"], listed["limit"], listed["offset"]) == (3, 100, 0)
    assert "request" not in listed["jobs"][0] and "result" not in listed["jobs"][0]


def test_the_list_filters_by_status_and_kind_and_pages(srv):
    ok = wait_status(srv, submit(srv)["id"])["id"]
    chain = wait_status(srv, submit(srv, "chain", steps=[{"backend": "claude",
                                                          "prompt": "a"}])["id"])["id"]
    assert [j["id"] for j in srv.get("/api/v1/jobs?kind=chain").json()["jobs"]] == [chain]
    assert srv.get("/api/v1/jobs?status=failed").json()["total"] == 0
    page = srv.get("/api/v1/jobs?limit=1&offset=1").json()
    assert [j["id"] for j in page["jobs"]] == [ok] and page["total"] == 2


@pytest.mark.parametrize("query", ["status=done", "kind=batch", "limit=-1", "offset=x"])
def test_a_bad_list_query_is_400(srv, query):
    assert srv.get("/api/v1/jobs?" + query).status == 400


@pytest.mark.parametrize("job_id", ["job_0000000000000000000000ff", "nope", "..%2f..%2fetc"])
def test_an_unknown_job_is_404_on_every_route(srv, job_id):
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/events")):
        reply = srv.request(method, "/api/v1/jobs/%s%s" % (job_id, path))
        assert reply.status == 404 and reply.json()["error"] == "job_not_found", reply


# -- DELETE: cancel and remove --------------------------------------------------------------------


def test_cancelling_a_running_job_kills_its_backend_and_ends_it_cancelled(srv, pidfile):
    job_id = submit(srv, backend="claude", prompt=slow(60))["id"]
    wait_status(srv, job_id, ("running",))
    pid = read_pid(pidfile)
    reply = srv.request("DELETE", "/api/v1/jobs/" + job_id)
    assert reply.status == 200 and reply.json()["status"] == "cancelled"
    assert reply.json()["error"]["error"] == "cancelled"
    assert wait_for(lambda: not pid_alive(pid), 5)


def test_cancelling_a_queued_job_ends_it_before_it_ever_runs(start_server, record):
    srv = start_server(**{"server.max_concurrent_runs": 1})
    first = submit(srv, backend="claude", prompt=slow(60, "first"))["id"]
    wait_status(srv, first, ("running",))
    queued = submit(srv, backend="claude", prompt="second")["id"]
    reply = srv.request("DELETE", "/api/v1/jobs/" + queued)
    assert reply.json()["status"] == "cancelled" and reply.json()["started_at"] is not None
    srv.request("DELETE", "/api/v1/jobs/" + first)
    assert all("second" not in r["stdin"] for r in records(record))


def test_deleting_a_finished_job_removes_it_and_its_events(srv, clinvk_home):
    job_id = wait_status(srv, submit(srv)["id"])["id"]
    reply = srv.request("DELETE", "/api/v1/jobs/" + job_id)
    assert reply.json() == {"id": job_id, "deleted": True}
    assert srv.get("/api/v1/jobs/" + job_id).status == 404
    assert not [n for n in os.listdir(str(clinvk_home / "jobs")) if n.startswith(job_id)]


# -- scope: another API key -----------------------------------------------------------------------


def test_another_key_can_neither_see_nor_cancel_nor_follow_a_job(start_server):
    srv = start_server(**KEYED)
    job_id = submit(srv, key=ALICE, backend="claude", prompt=slow(30))["id"]
    for method, path in (("GET", ""), ("GET", "/events"), ("DELETE", "")):
        reply = srv.request(method, "/api/v1/jobs/%s%s" % (job_id, path), headers=as_key(BOB))
        assert reply.status == 404, (method, path, reply)
    assert srv.get("/api/v1/jobs", headers=as_key(BOB)).json()["total"] == 0
    assert job(srv, job_id, ALICE)["status"] in ("queued", "running")
    assert srv.get("/api/v1/jobs", headers=as_key(ADMIN)).json()["total"] == 1
    srv.request("DELETE", "/api/v1/jobs/" + job_id, headers=as_key(ALICE))


def test_a_job_continues_only_its_own_keys_sessions(start_server):
    srv = start_server(**KEYED)
    alices = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "x"},
                      headers=as_key(ALICE)).json()["session_id"]
    reply = srv.post("/api/v1/jobs", {"kind": "prompt", "request": {
        "backend": "claude", "prompt": "y", "session_id": alices}}, headers=as_key(BOB))
    assert reply.status == 404


def test_a_job_needs_an_api_key_like_every_route(start_server):
    srv = start_server(**KEYED)
    assert srv.post("/api/v1/jobs", {"kind": "prompt", "request": {}}).status == 401
    assert srv.get("/api/v1/jobs").status == 401


# -- the queue ------------------------------------------------------------------------------------


def test_a_job_waits_for_a_run_slot_where_a_request_gets_503(start_server):
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 0})
    first = submit(srv, backend="claude", prompt=slow(1.5))["id"]
    wait_status(srv, first, ("running",))
    assert srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "x"}).status == 503
    second = submit(srv)["id"]
    assert wait_status(srv, second)["status"] == "succeeded"


def test_past_max_queued_jobs_a_job_is_503_with_retry_after(start_server):
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.max_queued_jobs": 1})
    running = submit(srv, backend="claude", prompt=slow(60))["id"]
    wait_status(srv, running, ("running",))
    queued = submit(srv)["id"]
    reply = srv.post("/api/v1/jobs", {"kind": "prompt",
                                      "request": {"backend": "claude", "prompt": "x"}})
    assert reply.status == 503 and reply.json()["error"] == "job_queue_full"
    assert int(reply.headers["Retry-After"]) >= 1
    for job_id in (queued, running):
        srv.request("DELETE", "/api/v1/jobs/" + job_id)


def test_a_retry_with_the_same_idempotency_key_gets_the_same_job(srv):
    body = {"kind": "prompt", "request": {"backend": "claude", "prompt": "x"}}
    first = srv.post("/api/v1/jobs", body, headers={"Idempotency-Key": "job-1"})
    again = srv.post("/api/v1/jobs", body, headers={"Idempotency-Key": "job-1"})
    assert again.status == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert srv.get("/api/v1/jobs").json()["total"] == 1


def test_200_jobs_on_4_run_slots_all_finish_started_in_the_order_submitted(start_server):
    srv = start_server(**{"server.max_concurrent_runs": 4})
    # Four clients submit 50 jobs each at once: each client knows the order of its own.
    batches = [[] for _ in range(4)]

    def client(n):
        for i in range(50):
            batches[n].append(submit(srv, backend="claude", prompt="job %d.%d" % (n, i))["id"])
    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    deadline = time.monotonic() + 120
    while srv.get("/api/v1/jobs?status=succeeded&limit=1").json()["total"] < 200:
        assert time.monotonic() < deadline, "not every job finished"
        time.sleep(0.2)
    for n, ids in enumerate(batches):
        done = [job(srv, i) for i in ids]
        assert [j["result"]["output"] for j in done] == \
            ["echo: job %d.%d" % (n, i) for i in range(50)]
        started = [j["started_at"] for j in done]
        assert started == sorted(started)
    assert srv.get("/api/v1/jobs?limit=0").json()["total"] == 200


def test_jobs_start_in_the_order_submitted(start_server, record):
    srv = start_server(**{"server.max_concurrent_runs": 1})
    ids = [submit(srv, backend="claude", prompt="job %d" % i)["id"] for i in range(8)]
    for job_id in ids:
        wait_status(srv, job_id)
    assert [r["stdin"] for r in records(record)] == ["job %d" % i for i in range(8)]


def test_a_fan_out_job_records_each_item_as_an_event(srv):
    job_id = submit(srv, "compare", prompt="a", backends=["claude", "codex"])["id"]
    wait_status(srv, job_id)
    lines = [json.loads(x) for x in srv.get("/api/v1/jobs/%s/events" % job_id).body.splitlines()]
    types = [e["type"] for e in lines]
    assert types[0] == "job" and types[-1] == "job"
    assert types.count("item_started") == types.count("item_finished") == 2
    finished = [e["content"] for e in lines if e["type"] == "item_finished"]
    assert sorted(f["output"] for f in finished) == ["echo: a", "echo: a"]


@pytest.mark.parametrize("kind, request_body", [
    ("compare", {"prompt": "a", "backends": ["claude", "codex"]}),
    ("parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                            {"backend": "gemini", "prompt": "a"}]}),
    ("chain", {"steps": [{"backend": "claude", "prompt": "a"},
                         {"backend": "codex", "prompt": "a"}]})])
def test_a_fan_out_job_records_each_backends_unified_events_tagged_with_its_item(
        srv, kind, request_body):
    job_id = submit(srv, kind, **request_body)["id"]
    assert wait_status(srv, job_id)["status"] == "succeeded"
    lines = [json.loads(x) for x in srv.get("/api/v1/jobs/%s/events" % job_id).body.splitlines()]
    for index in (0, 1):
        mine = [e for e in lines if e.get("index") == index or
                (e["type"].startswith("item_") and e["content"]["index"] == index)]
        types = [e["type"] for e in mine]
        assert types[0] == "item_started" and types[1] == "init"
        assert types[-2] == "done" and types[-1] == "item_finished"
        text = "".join(e["content"]["text"] for e in mine if e["type"] == "message")
        assert text == "echo: a"
        assert {e["backend"] for e in mine} == {mine[0]["backend"]}
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))


def test_a_dry_run_fan_out_job_shows_the_commands_of_the_synchronous_route(srv):
    body = {"tasks": [{"backend": "claude", "prompt": "a"}, {"backend": "codex", "prompt": "b"}],
            "dry_run": True}
    done = wait_status(srv, submit(srv, "parallel", **body)["id"])
    direct = srv.post("/api/v1/parallel", body).json()
    commands = [r["output"] for r in done["result"]["results"]]
    assert commands == [r["output"] for r in direct["results"]]
    assert all("stream" not in c for c in commands)


def test_a_job_that_starts_at_once_is_prepared_once_even_when_it_continues_a_session(
        srv, monkeypatch):
    calls = []
    real = execute.prepare
    monkeypatch.setattr(execute, "prepare", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first = wait_status(srv, submit(srv)["id"])
    assert first["status"] == "succeeded" and len(calls) == 1
    again = wait_status(srv, submit(srv, backend="claude", prompt="again",
                                    session_id=first["result"]["session_id"])["id"])
    assert again["status"] == "succeeded" and len(calls) == 2


class HeldSession:
    """Another turn holding a session's lock (in a thread of its own) until ``release()``."""

    def __init__(self, store, session_id):
        self._held, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(store, session_id))
        self._thread.start()
        assert self._held.wait(10)

    def _hold(self, store, session_id):
        with store.lock(session_id):
            self._held.set()
            self._release.wait(30)

    def release(self):
        self._release.set()
        self._thread.join(10)


@pytest.fixture
def busy_session(start_server):
    """A server with one run slot and a session another turn holds: (server, session id,
    the HeldSession)."""
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 0})
    sid = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "one"}).json()["session_id"]
    held = HeldSession(srv.app.store, sid)
    yield srv, sid, held
    held.release()


def test_a_job_waiting_for_its_session_holds_no_run_slot_and_jobs_behind_it_start(
        busy_session):
    srv, sid, held = busy_session
    waiting = submit(srv, backend="claude", prompt="two", session_id=sid)
    behind = submit(srv, backend="claude", prompt="not in that session")
    assert wait_status(srv, behind["id"])["status"] == "succeeded"
    assert srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "now"}).status == 200
    assert job(srv, waiting["id"])["status"] == "queued"
    held.release()
    done = wait_status(srv, waiting["id"])
    assert done["status"] == "succeeded" and done["result"]["session_id"] == sid


def test_a_job_waiting_for_its_session_can_be_cancelled(record, busy_session):
    srv, sid, _ = busy_session
    waiting = submit(srv, backend="claude", prompt="two", session_id=sid)
    assert wait_for(lambda: srv.app.jobs.counts() == (1, 0))
    reply = srv.request("DELETE", "/api/v1/jobs/" + waiting["id"])
    assert reply.status == 200 and reply.json()["status"] == "cancelled"
    assert [r["stdin"] for r in records(record)] == ["one"]


# -- /metrics --------------------------------------------------------------------------------------


def test_jobs_are_counted_in_metrics_by_kind_and_final_status(start_server, monkeypatch):
    srv = start_server(**{"server.metrics_enabled": True})
    wait_status(srv, submit(srv)["id"])
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    wait_status(srv, submit(srv)["id"])
    # A job reads final a moment before its worker gives back the run slot it held.
    assert wait_for(lambda: srv.app.jobs.counts() == (0, 0))
    text = srv.get("/metrics").body.decode()
    assert 'clinvk_jobs_submitted_total{kind="prompt"} 2\n' in text
    assert 'clinvk_jobs_finished_total{kind="prompt",status="succeeded"} 1\n' in text
    assert 'clinvk_jobs_finished_total{kind="prompt",status="failed"} 1\n' in text
    assert "\nclinvk_jobs_queued 0\n" in text and "\nclinvk_jobs_running 0\n" in text


def test_metrics_show_a_running_and_a_queued_job(start_server, pidfile):
    srv = start_server(**{"server.metrics_enabled": True, "server.max_concurrent_runs": 1})
    running = submit(srv, backend="claude", prompt=slow(60))
    read_pid(pidfile)
    queued = submit(srv)
    assert wait_status(srv, running["id"], ("running",))["status"] == "running"
    text = srv.get("/metrics").body.decode()
    assert "\nclinvk_jobs_queued 1\n" in text and "\nclinvk_jobs_running 1\n" in text
    srv.request("DELETE", "/api/v1/jobs/" + running["id"])
    wait_status(srv, queued["id"])
