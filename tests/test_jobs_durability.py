"""Jobs outlive the server process: SIGTERM drains running jobs for the grace period and
leaves the queued ones for the next server; a server killed with SIGKILL leaves jobs the next
one marks interrupted (running) or runs (queued). Every job answered 202 ends in a final status
that GET returns. ``clinvk serve`` runs as a real process (``serveproc.ServeProcess``)."""

from __future__ import annotations

import os
import signal

import pytest

from clinvk_lib.job_store import FINAL, JobStore
from tests.serveproc import ServeProcess
from tests.serverutil import pid_alive, read_pid, wait_for


def start(home, tmp_path, grace=1, slots=1, **env):
    config = {"server": {"shutdown_grace_secs": grace, "max_concurrent_runs": slots}}
    return ServeProcess(str(home), env=dict({"FAKE_CLI_PIDFILE": str(tmp_path / "fake.pid")},
                                            **env),
                        config=config, state_dir=str(tmp_path / "fake-state"))


def submit(srv, prompt):
    reply = srv.post("/api/v1/jobs", {"kind": "prompt",
                                      "request": {"backend": "claude", "prompt": prompt}})
    assert reply.status == 202, reply
    return reply.json()["id"]


def status(srv, job_id):
    return srv.get("/api/v1/jobs/" + job_id).json()["status"]


def final_status(srv, job_id, seconds=20.0):
    assert wait_for(lambda: status(srv, job_id) in FINAL, seconds, 0.05), status(srv, job_id)
    return status(srv, job_id)


@pytest.fixture
def servers():
    started = []
    yield started
    for srv in started:
        srv.stop()


def test_sigterm_lets_a_job_finish_within_the_grace_period(tmp_path, servers):
    home = tmp_path / "home"
    srv = start(home, tmp_path, grace=20)
    servers.append(srv)
    job_id = submit(srv, "FAKE_SLEEP: 1\ndone soon")
    assert wait_for(lambda: status(srv, job_id) == "running")
    assert srv.stop() == 0
    job = JobStore(str(home)).read(job_id)
    assert job.status == "succeeded" and job.result["output"].endswith("done soon")


def test_sigterm_interrupts_running_jobs_after_the_grace_period_and_keeps_queued_ones(
        tmp_path, servers):
    home = tmp_path / "home"
    srv = start(home, tmp_path, grace=1)
    servers.append(srv)
    running = submit(srv, "FAKE_SLEEP: 60\nlong")
    assert wait_for(lambda: status(srv, running) == "running")
    pid = read_pid(str(tmp_path / "fake.pid"))
    queued = submit(srv, "next")
    assert srv.stop() == 0
    assert not pid_alive(pid)
    store = JobStore(str(home))
    assert store.read(running).status == "interrupted"
    assert store.read(running).error["error"] == "interrupted"
    assert store.read(queued).status == "queued"
    again = start(home, tmp_path)
    servers.append(again)
    assert final_status(again, queued) == "succeeded"
    assert status(again, running) == "interrupted"


def test_after_sigkill_the_next_server_interrupts_running_jobs_and_runs_queued_ones(
        tmp_path, servers):
    home = tmp_path / "home"
    srv = start(home, tmp_path)
    servers.append(srv)
    running = submit(srv, "FAKE_SLEEP: 60\nlong")
    assert wait_for(lambda: status(srv, running) == "running")
    pid = read_pid(str(tmp_path / "fake.pid"))
    queued = [submit(srv, "queued %d" % i) for i in range(3)]
    srv.signal(signal.SIGKILL)
    srv.proc.wait(10)
    assert wait_for(lambda: not pid_alive(pid), 10)     # the backend died with its server
    again = start(home, tmp_path, slots=2)
    servers.append(again)
    assert final_status(again, running) == "interrupted"
    assert [final_status(again, j) for j in queued] == ["succeeded"] * 3
    events = [line for line in again.get("/api/v1/jobs/%s/events" % running).body.splitlines()]
    assert events[-1].endswith(b'"content":{"status":"interrupted"}}')


def test_every_accepted_job_ends_in_a_final_status_across_a_sigkill(tmp_path, servers):
    home = tmp_path / "home"
    srv = start(home, tmp_path, slots=2)
    servers.append(srv)
    ids = [submit(srv, "FAKE_SLEEP: 0.3\njob %d" % i) for i in range(12)]
    assert wait_for(lambda: status(srv, ids[3]) in FINAL, 20)
    srv.signal(signal.SIGKILL)
    srv.proc.wait(10)
    again = start(home, tmp_path, slots=4)
    servers.append(again)
    ended = [final_status(again, j) for j in ids]
    assert set(ended) <= {"succeeded", "interrupted"}
    assert ended.count("interrupted") <= 2 and ended[-1] == "succeeded"
    assert again.get("/api/v1/jobs?limit=0").json()["total"] == 12


def test_a_server_takes_over_nothing_from_a_live_server_on_the_same_home(tmp_path, servers):
    home = tmp_path / "home"
    first = start(home, tmp_path)
    servers.append(first)
    running = submit(first, "FAKE_SLEEP: 3\nmine")
    assert wait_for(lambda: status(first, running) == "running")
    second = start(home, tmp_path)
    servers.append(second)
    assert status(second, running) == "running"
    assert final_status(first, running) == "succeeded"
    assert os.path.isdir(str(home / "jobs" / "runners"))


# -- background responses (the Responses API's background: true runs as a job) ---------------


def respond_in_background(srv, text):
    reply = srv.post("/openai/v1/responses", {"model": "claude", "input": text,
                                              "background": True})
    assert reply.status == 200, reply
    return reply.json()["id"]


def response_status(srv, response_id):
    return srv.get("/openai/v1/responses/" + response_id).json()["status"]


def test_background_responses_outlive_a_sigkill_running_one_failed_queued_one_run(
        tmp_path, servers):
    home = tmp_path / "home"
    srv = start(home, tmp_path)
    servers.append(srv)
    running = respond_in_background(srv, "FAKE_SLEEP: 60\nlong")
    assert wait_for(lambda: response_status(srv, running) == "in_progress")
    pid = read_pid(str(tmp_path / "fake.pid"))
    queued = respond_in_background(srv, "later")
    assert response_status(srv, queued) == "queued"
    srv.signal(signal.SIGKILL)
    srv.proc.wait(10)
    assert wait_for(lambda: not pid_alive(pid), 10)
    again = start(home, tmp_path)
    servers.append(again)
    assert wait_for(lambda: response_status(again, running) == "failed", 20)
    failed = again.get("/openai/v1/responses/" + running).json()
    assert "the server process running it ended" in failed["error"]["message"]
    assert wait_for(lambda: response_status(again, queued) == "completed", 20)
    done = again.get("/openai/v1/responses/" + queued).json()
    assert done["output"][0]["content"][0]["text"] == "echo: later"


def test_a_background_response_interrupted_by_sigterm_reads_failed_saying_so(
        tmp_path, servers):
    home = tmp_path / "home"
    srv = start(home, tmp_path, grace=0)
    servers.append(srv)
    running = respond_in_background(srv, "FAKE_SLEEP: 60\nlong")
    assert wait_for(lambda: response_status(srv, running) == "in_progress")
    assert srv.stop() == 0
    again = start(home, tmp_path)
    servers.append(again)
    failed = again.get("/openai/v1/responses/" + running).json()
    assert failed["status"] == "failed" and "shut down" in failed["error"]["message"]
