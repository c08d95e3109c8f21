"""Sessions and routing across real processes on one Redis: a session started through one
`clinvk serve` is resumed through another (the fake CLI recalls turn one); a job continuing a
session runs on the worker whose fake CLI holds the transcript, and is refused with 409
naming that worker once it is gone; workers advertising different backends (their PATH holds
different fakes) each get only the jobs they can run. A real redis-server per test."""

from __future__ import annotations

import json
import os

import pytest

from clinvk_lib.redisclient import Client
from tests.redisutil import WorkerProcess, store_settings as settings
from tests.serveproc import FAKE_BIN, ServeProcess
from tests.serverutil import wait_for
from tests.test_jobs_durability import status
from tests.test_redis_jobs import clinvk

pytestmark = pytest.mark.slow

FINAL = ("succeeded", "failed", "cancelled", "interrupted")
RECALL = {"FAKE_CLI_RECALL": "1"}




@pytest.fixture
def api(redis, tmp_path):
    node = ServeProcess(str(tmp_path / "api"), config=settings(redis, role="api"))
    yield node
    node.stop()


def only(tmp_path, *backends) -> dict:
    """An environment whose PATH holds just these fake CLIs."""
    bin_dir = str(tmp_path / ("bin-" + "-".join(backends)))
    os.makedirs(bin_dir)
    for name in backends:
        os.symlink(os.path.join(FAKE_BIN, name), os.path.join(bin_dir, name))
    return dict(RECALL, PATH=bin_dir + os.pathsep + "/usr/local/bin:/usr/bin:/bin")


def run_job(node, request) -> dict:
    reply = node.post("/api/v1/jobs", {"kind": "prompt", "request": request})
    assert reply.status == 202, reply
    job_id = reply.json()["id"]
    assert wait_for(lambda: status(node, job_id) in FINAL, 30, 0.05)
    return node.get("/api/v1/jobs/" + job_id).json()


def ran_on(worker, job_id, seconds=5.0) -> bool:
    """True once the worker has logged the job's end (which may follow the end's record)."""
    return wait_for(lambda: any(job_id in line and "ended" in line
                                for line in worker.log_lines), seconds, 0.02)


def test_a_session_started_through_one_node_is_resumed_through_another(redis, tmp_path):
    state = str(tmp_path / "cli-home")          # one machine: both nodes' CLIs share it
    a, b = [ServeProcess(str(tmp_path / n), config=settings(redis), env=RECALL,
                         state_dir=state) for n in ("a", "b")]
    try:
        first = a.post("/api/v1/prompt", {"backend": "claude", "prompt": "the code is 7"})
        assert first.status == 200, first
        sid = first.json()["session_id"]
        second = b.post("/api/v1/prompt", {"backend": "claude", "prompt": "which code?",
                                           "session_id": sid[:8]})
        assert second.status == 200, second
        assert "[recalled: the code is 7" in second.json()["output"]
        listed = a.get("/api/v1/sessions").json()
        assert [s["turn_count"] for s in listed["sessions"] if s["id"] == sid] == [2]
    finally:
        a.stop()
        b.stop()


def test_a_sessions_later_turns_run_on_its_worker_and_fail_clearly_once_it_is_gone(
        redis, api, tmp_path):
    workers = {name: WorkerProcess(str(tmp_path / name), settings(redis, worker_name=name),
                                   env=RECALL) for name in ("gpu-1", "gpu-2")}
    try:
        first = run_job(api, {"backend": "claude", "prompt": "remember 42"})
        assert first["status"] == "succeeded", first
        sid = first["result"]["session_id"]
        assert wait_for(lambda: any(ran_on(w, first["id"], 0) for w in workers.values()), 5)
        home = [n for n, w in workers.items() if ran_on(w, first["id"], 0)]
        assert len(home) == 1
        for turn in range(3):                   # on the other worker the CLI has no transcript
            later = run_job(api, {"backend": "claude", "prompt": "turn %d" % turn,
                                  "session_id": sid})
            assert later["status"] == "succeeded", later
            assert "[recalled: remember 42" in later["result"]["output"]
            assert ran_on(workers[home[0]], later["id"])
        workers.pop(home[0]).stop()
        gone = api.post("/api/v1/jobs", {"kind": "prompt", "request": {
            "backend": "claude", "prompt": "again", "session_id": sid}})
        assert gone.status == 409 and gone.json()["error"] == "session_worker_gone"
        assert repr(home[0]) in gone.json()["message"]
    finally:
        for worker in workers.values():
            worker.stop()


def test_workers_with_different_backends_each_get_only_the_jobs_they_can_run(
        redis, api, tmp_path):
    claude = WorkerProcess(str(tmp_path / "wc"), settings(redis, worker_name="wc"),
                           env=only(tmp_path, "claude"))
    codex = WorkerProcess(str(tmp_path / "wx"), settings(redis, worker_name="wx"),
                          env=only(tmp_path, "codex"))
    try:
        ids = {}
        for backend in ("claude", "codex") * 3:
            reply = api.post("/api/v1/jobs", {"kind": "prompt", "request": {
                "backend": backend, "prompt": "hi", "ephemeral": True}})
            assert reply.status == 202, reply
            ids[reply.json()["id"]] = backend
        assert wait_for(lambda: all(status(api, j) in FINAL for j in ids), 30, 0.1)
        assert {status(api, j) for j in ids} == {"succeeded"}
        for job_id, backend in ids.items():
            assert ran_on(claude if backend == "claude" else codex, job_id), job_id
    finally:
        claude.stop()
        codex.stop()


def test_the_command_line_on_the_store_shares_the_sessions_of_the_servers(redis, tmp_path):
    state = str(tmp_path / "cli-home")          # the CLI and the node on one machine
    env = dict(RECALL, CLINVK_SERVER_STORE=redis.url, FAKE_CLI_STATE_DIR=state)
    made = clinvk(str(tmp_path / "op"), "-b", "claude", "-o", "json", "the code is 9", **env)
    assert made.returncode == 0, made.stderr
    sid = json.loads(made.stdout)["session_id"]
    listed = clinvk(str(tmp_path / "other"), "sessions", "list", "--json", **env)
    assert sid in listed.stdout.decode(), listed.stderr
    node = ServeProcess(str(tmp_path / "a"), config=settings(redis), env=RECALL,
                        state_dir=state)
    try:
        later = node.post("/api/v1/prompt", {"backend": "claude", "prompt": "which code?",
                                             "session_id": sid})
    finally:
        node.stop()
    assert later.status == 200 and "[recalled: the code is 9" in later.json()["output"]


def submit(node, request) -> str:
    reply = node.post("/api/v1/jobs", {"kind": "prompt", "request": request})
    assert reply.status == 202, reply
    return reply.json()["id"]


def queue_held_by_its_worker(redis, tmp_path, api, **worker_settings):
    """A session whose last turn ran on worker gpu-1 (one run slot, busy), and a job
    continuing it, queued for gpu-1: the job's id and the worker."""
    worker = WorkerProcess(str(tmp_path / "gpu-1"), settings(
        redis, worker_name="gpu-1", max_concurrent_runs=1, **worker_settings),
        env=dict(RECALL, FAKE_CLI_STATE_DIR=str(tmp_path / "cli-homes")))
    first = run_job(api, {"backend": "claude", "prompt": "remember 42"})
    assert first["status"] == "succeeded", first
    blocker = submit(api, {"backend": "claude", "prompt": "FAKE_SLEEP: 600", "ephemeral": True})
    assert wait_for(lambda: status(api, blocker) == "running", 30, 0.05)
    later = submit(api, {"backend": "claude", "prompt": "which number?",
                         "session_id": first["result"]["session_id"]})
    return later, worker


def queues(redis) -> set:
    return {n.decode() for n in Client(redis.url).execute("SMEMBERS", "clinvk:jobs:queues")}


def test_a_job_queued_for_a_worker_that_is_gone_fails_naming_it_and_its_queue_goes(
        redis, api, tmp_path):
    later, worker = queue_held_by_its_worker(redis, tmp_path, api)
    try:
        assert "jobs:queue:worker:gpu-1" in queues(redis)
        worker.kill()
        assert wait_for(lambda: status(api, later) in FINAL, 60, 0.1)
    finally:
        worker.stop()
    job = api.get("/api/v1/jobs/" + later).json()
    assert job["status"] == "failed", job
    error = job["error"]
    assert (error["error"], error["status"], error["field"]) == (
        "session_worker_gone", 409, "session_id")
    assert "'gpu-1'" in error["message"] and "server.shared_cli_homes" in error["message"]
    events = api.get("/api/v1/jobs/%s/events" % later).body.splitlines()
    assert json.loads(events[-1])["content"]["status"] == "failed"
    assert wait_for(lambda: "jobs:queue:worker:gpu-1" not in queues(redis), 10, 0.1)
    assert any("worker 'gpu-1' is gone" in line for line in api.log_lines), api.log_lines


def test_with_shared_cli_homes_a_gone_workers_job_runs_on_another_worker(redis, tmp_path):
    """The operator declares the CLIs' homes shared (on every node from now on) after a job
    was queued for a worker that then died: the job moves to the backends' queue and runs on
    another worker, and the model still sees the session's first turn."""
    api = ServeProcess(str(tmp_path / "api"), config=settings(redis, role="api"))
    try:
        later, worker = queue_held_by_its_worker(redis, tmp_path, api)
        worker.kill()
    finally:
        api.stop()
    other = WorkerProcess(str(tmp_path / "gpu-2"), settings(
        redis, worker_name="gpu-2", shared_cli_homes=True),
        env=dict(RECALL, FAKE_CLI_STATE_DIR=str(tmp_path / "cli-homes")))
    reader = ServeProcess(str(tmp_path / "reader"), config=settings(
        redis, role="api", shared_cli_homes=True))
    try:
        assert wait_for(lambda: status(reader, later) in FINAL, 60, 0.1)
        job = reader.get("/api/v1/jobs/" + later).json()
        assert job["status"] == "succeeded", job
        assert "[recalled: remember 42" in job["result"]["output"]
        assert ran_on(other, later)
        assert "jobs:queue:worker:gpu-1" not in queues(redis)
    finally:
        reader.stop()
        other.stop()
