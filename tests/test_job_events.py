"""A job's event stream (``GET /api/v1/jobs/{id}/events``): NDJSON or SSE, every event with its
seq, resumable after any seq with and without disconnects, open while the job runs, bounded."""

from __future__ import annotations

import json
from typing import List, Tuple

import pytest

from clinvk_lib.job_store import JobStore
from tests.serverutil import (  # noqa: F401 (fixtures)
    fresh_backend_probe, start_server, wait_for)
from tests.test_jobs import submit, wait_status

pytestmark = pytest.mark.usefixtures("fresh_backend_probe")


@pytest.fixture
def slow_stream(monkeypatch):
    """The fake CLIs print ~35 lines, one every 40 ms."""
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.04")
    monkeypatch.setenv("FAKE_CLI_CHUNKS", "30")


LONG = "a prompt long enough to be answered in many pieces " * 10


@pytest.fixture
def srv(start_server):
    return start_server()


def events(srv, job_id, query="", headers=None):
    reply = srv.get("/api/v1/jobs/%s/events%s" % (job_id, query), headers=headers)
    assert reply.status == 200, reply
    return [json.loads(line) for line in reply.body.splitlines()]


def sse_events(body: bytes) -> List[Tuple[int, str, dict]]:
    out = []
    for block in body.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return out


def read_some(srv, job_id, after, count, sse=False):
    """Connect, read ``count`` events after ``after`` (fewer if the stream ends), then drop
    the connection."""
    conn = srv.connection()
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)} if sse else {}
    conn.request("GET", "/api/v1/jobs/%s/events%s" % (job_id, "" if sse else
                                                       "?after=%d" % after), headers=headers)
    resp = conn.getresponse()
    got = []
    while len(got) < count:
        line = resp.readline()
        if not line:
            break
        if sse:
            if line.startswith(b"data: "):
                got.append(json.loads(line[6:]))
        else:
            got.append(json.loads(line))
    conn.close()
    return got


def test_every_event_has_the_next_seq_from_the_first_job_event_to_the_final_one(srv):
    job_id = wait_status(srv, submit(srv)["id"])["id"]
    got = events(srv, job_id)
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert got[0]["type"] == "job" and got[0]["content"]["status"] == "running"
    assert [e["type"] for e in got[1:-1]][0] == "init" and got[-2]["type"] == "done"
    assert got[-1] == dict(got[-1], type="job", content={"status": "succeeded"})
    assert srv.get("/api/v1/jobs/" + job_id).json()["event_count"] == len(got)


@pytest.mark.parametrize("after", [0, 1, 3, 6, 7, 50])
def test_after_n_gives_exactly_the_events_after_n(srv, after):
    job_id = wait_status(srv, submit(srv)["id"])["id"]
    everything = events(srv, job_id)
    assert events(srv, job_id, "?after=%d" % after) == everything[after:]


@pytest.mark.parametrize("after", [0, 2, 5])
def test_sse_resumes_after_last_event_id(srv, after):
    job_id = wait_status(srv, submit(srv)["id"])["id"]
    everything = events(srv, job_id)
    reply = srv.get("/api/v1/jobs/%s/events" % job_id,
                    headers={"Accept": "text/event-stream", "Last-Event-ID": str(after)})
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    got = sse_events(reply.body)
    assert [d for _, _, d in got] == everything[after:]
    assert all(i == d["seq"] and name == d["type"] for i, name, d in got)


def test_a_malformed_last_event_id_is_400(srv):
    job_id = wait_status(srv, submit(srv)["id"])["id"]
    reply = srv.get("/api/v1/jobs/%s/events" % job_id,
                    headers={"Accept": "text/event-stream", "Last-Event-ID": "x"})
    assert reply.status == 400 and reply.json()["field"] == "Last-Event-ID"


def test_the_stream_stays_open_while_the_job_runs_and_ends_when_it_ends(srv, slow_stream):
    job_id = submit(srv, backend="claude", prompt=LONG)["id"]
    assert srv.get("/api/v1/jobs/" + job_id).json()["status"] in ("queued", "running")
    got = events(srv, job_id)
    assert got[-1]["content"]["status"] == "succeeded"
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert "".join(e["content"]["text"] for e in got if e["type"] == "message") == \
        "echo: " + LONG


def test_a_fan_out_jobs_backend_events_stream_while_it_runs(srv, slow_stream):
    job_id = submit(srv, "parallel", tasks=[{"backend": "claude", "prompt": LONG},
                                            {"backend": "codex", "prompt": LONG}])["id"]
    conn = srv.connection()
    conn.request("GET", "/api/v1/jobs/%s/events" % job_id)
    resp = conn.getresponse()
    first = json.loads(resp.readline())
    while "index" not in first:
        first = json.loads(resp.readline())
    seen_while = srv.get("/api/v1/jobs/" + job_id).json()["status"]
    conn.close()
    assert first["type"] == "init" and first["index"] in (0, 1)
    assert seen_while == "running"


@pytest.mark.parametrize("sse", [False, True])
def test_reconnecting_again_and_again_while_it_runs_loses_and_repeats_nothing(
        srv, slow_stream, sse):
    job_id = submit(srv, backend="claude", prompt=LONG)["id"]
    seen: List[dict] = []
    while not seen or seen[-1]["type"] != "job" or seen[-1]["content"]["status"] == "running":
        seen += read_some(srv, job_id, seen[-1]["seq"] if seen else 0, 3, sse)
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    assert seen == events(srv, job_id)
    assert srv.get("/api/v1/jobs/" + job_id).json()["status"] == "succeeded"


def test_a_reader_of_a_queued_job_gets_its_events_once_it_runs(start_server):
    srv = start_server(**{"server.max_concurrent_runs": 1})
    first = submit(srv, backend="claude", prompt="FAKE_SLEEP: 1\nfirst")["id"]
    second = submit(srv)["id"]
    got = events(srv, second)
    assert got[-1]["content"]["status"] == "succeeded"
    assert srv.get("/api/v1/jobs/" + first).json()["status"] == "succeeded"


def test_the_event_log_is_bounded_but_always_ends_with_the_final_status(start_server,
                                                                       monkeypatch):
    monkeypatch.setenv("FAKE_CLI_CHUNKS", "400")
    srv = start_server(**{"server.job_events_max_bytes": 4096})
    job_id = wait_status(srv, submit(srv, backend="claude", prompt=LONG)["id"])["id"]
    got = events(srv, job_id)
    assert [e["type"] for e in got].count("events_truncated") == 1
    assert got[-1]["type"] == "job" and got[-1]["content"]["status"] == "succeeded"
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert len(b"".join(json.dumps(e).encode() for e in got)) < 4096 + 1024
    assert srv.get("/api/v1/jobs/" + job_id).json()["result"]["output"].startswith("echo:")


def test_the_stream_ends_as_the_server_starts_shutting_down_not_at_its_end(start_server,
                                                                         clinvk_home):
    srv = start_server()
    job_id = submit(srv, backend="claude", prompt="FAKE_SLEEP: 60\nx")["id"]
    assert wait_for(lambda: srv.get("/api/v1/jobs/" + job_id).json()["status"] == "running")
    conn = srv.connection(timeout=20)
    conn.request("GET", "/api/v1/jobs/%s/events" % job_id)
    resp = conn.getresponse()
    assert json.loads(resp.readline())["seq"] == 1
    srv.stop()
    rest = [json.loads(line) for line in resp.read().splitlines()]
    conn.close()
    # It ended before the grace period did (the client reconnects to another server), so
    # without the interrupted job's final event, which the log has.
    assert all(e["type"] != "job" for e in rest)
    assert JobStore(str(clinvk_home)).read(job_id).status == "interrupted"
