"""``clinvk jobs list|show|events|cancel``: what a server sharing this CLINVK_HOME is doing, read
from the job store, and a cancel the server obeys."""

from __future__ import annotations

import json

import pytest

from clinvk_lib.cli import common
from clinvk_lib.job_store import Job, JobStore, new_job_id
from tests.serverutil import (  # noqa: F401 (fixtures)
    pid_alive, read_pid, start_server, wait_for)
from tests.test_cli import env, run  # noqa: F401 (env: a fixture)
from tests.test_jobs import submit, wait_status


@pytest.fixture
def srv(env, start_server):
    return start_server()


@pytest.fixture
def pidfile(monkeypatch, tmp_path):
    path = str(tmp_path / "fake.pid")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", path)
    return path


def finished(srv, **request):
    kind = request.pop("kind", "prompt")
    return wait_status(srv, submit(srv, kind, **request)["id"])


def test_list_shows_the_servers_jobs_newest_first(srv, capsys):
    first = finished(srv, backend="claude", prompt="first job")["id"]
    second = finished(srv, kind="chain", steps=[{"backend": "codex", "prompt": "a step"}])["id"]
    code, out, _ = run(capsys, "jobs", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "KIND", "STATUS", "CREATED", "EVENTS",
                                              "ASKED"]
    assert lines[1].startswith(second) and "chain" in lines[1] and "a step" in lines[1]
    assert lines[2].startswith(first) and "succeeded" in lines[2] and "first job" in lines[2]


def test_list_json_filters_by_kind_and_status(srv, capsys):
    finished(srv)
    chain = finished(srv, kind="chain", steps=[{"backend": "claude", "prompt": "a"}])["id"]
    code, out, _ = run(capsys, "jobs", "list", "--kind", "chain", "--json")
    listed = json.loads(out)
    assert code == 0 and [j["id"] for j in listed["jobs"]] == [chain] and listed["total"] == 1
    _, out, _ = run(capsys, "jobs", "list", "--status", "failed", "--json")
    assert json.loads(out)["total"] == 0


def test_list_shows_a_background_response_as_a_response_job_with_its_input(srv, capsys):
    made = srv.post("/openai/v1/responses", {"model": "claude", "input": "asked later",
                                             "background": True}).json()
    assert wait_for(lambda: srv.get("/openai/v1/responses/" + made["id"]).json()["status"]
                    == "completed", 10)
    code, out, _ = run(capsys, "jobs", "list", "--kind", "response")
    (line,) = out.splitlines()[1:]
    assert code == 0 and "response" in line.split() and line.endswith("asked later")


def test_show_by_prefix_gives_what_the_api_gives(srv, capsys):
    job = finished(srv)
    code, out, _ = run(capsys, "jobs", "show", job["id"][:20], "--json")
    assert code == 0 and json.loads(out) == job
    code, out, _ = run(capsys, "jobs", "show", job["id"])
    assert "status:   succeeded" in out and '"output":"echo: hello"' in out


def test_events_print_the_same_lines_as_the_api_after_a_seq(srv, capsys):
    job_id = finished(srv)["id"]
    api = srv.get("/api/v1/jobs/%s/events?after=2" % job_id).body.decode()
    code, out, _ = run(capsys, "jobs", "events", job_id, "--after", "2")
    assert code == 0 and [json.loads(x) for x in out.splitlines()] == \
        [json.loads(x) for x in api.splitlines()]


def test_events_follow_prints_until_the_job_ends(srv, capsys):
    job_id = submit(srv, backend="claude", prompt="FAKE_SLEEP: 1\nslow")["id"]
    code, out, _ = run(capsys, "jobs", "events", job_id, "--follow")
    last = json.loads(out.splitlines()[-1])
    assert code == 0 and last["type"] == "job" and last["content"]["status"] == "succeeded"


def test_cancel_of_a_running_job_is_obeyed_by_its_server(srv, capsys, pidfile):
    job_id = submit(srv, backend="claude", prompt="FAKE_SLEEP: 60\nlong")["id"]
    wait_status(srv, job_id, ("running",))
    pid = read_pid(pidfile)
    code, out, _ = run(capsys, "jobs", "cancel", job_id)
    assert (code, out) == (0, "job %s: cancelled\n" % job_id)
    assert srv.get("/api/v1/jobs/" + job_id).json()["status"] == "cancelled"
    assert wait_for(lambda: not pid_alive(pid), 5)


def test_cancel_of_a_queued_job_ends_it_at_once(env, start_server, capsys):
    srv = start_server(**{"server.max_concurrent_runs": 1})
    first = submit(srv, backend="claude", prompt="FAKE_SLEEP: 60\nlong")["id"]
    wait_status(srv, first, ("running",))
    queued = submit(srv)["id"]
    assert run(capsys, "jobs", "cancel", queued)[1] == "job %s: cancelled\n" % queued
    assert run(capsys, "jobs", "cancel", first)[0] == 0
    assert srv.get("/api/v1/jobs/" + queued).json()["started_at"] is not None


def test_cancel_of_a_running_job_whose_server_is_gone_ends_it_here(env, capsys):
    store = JobStore(str(env["home"]))
    job = Job(new_job_id(), "prompt", {"backend": "claude", "prompt": "x"}, status="running",
              runner="0123456789abcdef")
    store.create(job)
    code, out, _ = run(capsys, "jobs", "cancel", job.id)
    assert (code, out) == (0, "job %s: cancelled\n" % job.id)
    assert store.read(job.id).status == "cancelled"


def test_an_unknown_or_ambiguous_job_is_a_usage_error(env, capsys):
    store = JobStore(str(env["home"]))
    for _ in range(2):
        store.create(Job(new_job_id(), "prompt", {}))
    code, _, err = run(capsys, "jobs", "show", "job_ffff")
    assert code == common.EXIT_USAGE and "no job 'job_ffff'" in err
    code, _, err = run(capsys, "jobs", "show", "job_")
    assert code == common.EXIT_USAGE and "ambiguous" in err


def test_jobs_without_an_action_prints_its_help(env, capsys):
    code, out, _ = run(capsys, "jobs")
    assert code == common.EXIT_USAGE and "list" in out and "cancel" in out
