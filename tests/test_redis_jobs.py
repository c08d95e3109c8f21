"""Durable jobs across nodes on one Redis: `clinvk serve` API nodes (server.role: api) queue
jobs, `clinvk worker` processes run them; a job's record and events are read from any node,
and a worker killed mid-job loses the job to the visibility timeout: it ends interrupted,
runs nowhere else, and the other worker keeps going. Real processes, a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.redisutil import WorkerProcess, store_settings as settings
from tests.serveproc import CLINVK, ServeProcess, fake_cli_env
from tests.serverutil import wait_for
from tests.test_jobs_durability import status, submit

pytestmark = pytest.mark.slow

FINAL = ("succeeded", "failed", "cancelled", "interrupted")




@pytest.fixture
def api_nodes(redis, tmp_path):
    nodes = [ServeProcess(str(tmp_path / name), config=settings(redis, role="api"))
             for name in ("a", "b")]
    yield nodes
    for node in nodes:
        node.stop()


def test_a_job_queued_on_one_node_runs_on_a_worker_and_is_read_on_another(
        redis, api_nodes, tmp_path):
    a, b = api_nodes
    worker = WorkerProcess(str(tmp_path / "w1"), settings(redis))
    try:
        job_id = submit(a, "hello from node a")
        assert wait_for(lambda: status(b, job_id) in FINAL, 30)
    finally:
        worker.stop()
    job = b.get("/api/v1/jobs/" + job_id).json()
    assert job["status"] == "succeeded" and "hello from node a" in json.dumps(job["result"])
    events = b.get("/api/v1/jobs/%s/events" % job_id).body.decode().splitlines()
    seqs = [json.loads(line)["seq"] for line in events if line.strip()]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3
    assert any(job_id in line and "succeeded" in line for line in worker.log_lines)
    assert not any(job_id in line for node in api_nodes for line in node.log_lines
                   if "ended" in line)       # the API nodes ran nothing


def test_an_api_node_alone_keeps_the_job_queued(redis, api_nodes):
    job_id = submit(api_nodes[0], "nobody runs this")
    assert not wait_for(lambda: status(api_nodes[1], job_id) != "queued", 2)


def test_a_killed_workers_job_ends_interrupted_and_the_other_worker_goes_on(
        redis, api_nodes, tmp_path):
    a, b = api_nodes
    record = str(tmp_path / "runs.jsonl")
    hanging = WorkerProcess(str(tmp_path / "w1"), settings(redis),
                            env={"FAKE_CLI_MODE": "hang", "FAKE_CLI_RECORD": record})
    try:
        stuck = submit(a, "the stuck one")
        assert wait_for(lambda: status(b, stuck) == "running", 30)
        healthy = WorkerProcess(str(tmp_path / "w2"), settings(redis),
                                env={"FAKE_CLI_RECORD": record})
    finally:
        hanging.kill()
    try:
        assert wait_for(lambda: status(b, stuck) in FINAL, 30)
        after = submit(b, "after the kill")
        assert wait_for(lambda: status(a, after) in FINAL, 30)
    finally:
        healthy.stop()
    ended = b.get("/api/v1/jobs/" + stuck).json()
    assert ended["status"] == "interrupted"
    assert "job_visibility_timeout_secs" in ended["error"]["message"] or \
        "ended" in ended["error"]["message"]
    assert status(a, after) == "succeeded"
    with open(record) as f:
        prompts = [json.dumps(json.loads(line)) for line in f]
    assert sum("the stuck one" in p for p in prompts) == 1      # never run a second time


def test_a_worker_without_a_store_is_refused_saying_how_to_give_one(tmp_path):
    done = clinvk(str(tmp_path / "home"), "worker")
    assert done.returncode == 2 and b"--store redis://" in done.stderr


def test_clinvk_jobs_reads_the_shared_store(redis, api_nodes, tmp_path):
    job_id = submit(api_nodes[0], "listed from anywhere")
    done = clinvk(str(tmp_path / "operator"), "jobs", "show", job_id, "--json",
                  CLINVK_SERVER_STORE=redis.url)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["id"] == job_id and shown["status"] == "queued"


def test_a_worker_told_to_stop_finishes_its_job_and_gives_the_waiting_one_back(
        redis, api_nodes, tmp_path):
    a, b = api_nodes
    one_slot = settings(redis, max_concurrent_runs=1)
    worker = WorkerProcess(str(tmp_path / "w1"), one_slot,
                           env={"FAKE_CLI_MODE": "slow", "FAKE_CLI_DELAY": "0.3"})
    running = submit(a, "finish me")
    assert wait_for(lambda: status(b, running) == "running", 30)
    waiting = submit(a, "give me back")
    assert worker.stop() == 0
    assert status(b, running) == "succeeded" and status(b, waiting) == "queued"
    successor = WorkerProcess(str(tmp_path / "w2"), one_slot)
    try:
        assert wait_for(lambda: status(b, waiting) in FINAL, 30)
    finally:
        successor.stop()
    assert status(b, waiting) == "succeeded"


def test_health_shows_the_store_and_the_workers_on_it(redis, api_nodes, tmp_path):
    worker = WorkerProcess(str(tmp_path / "w1"), settings(redis, max_concurrent_runs=3))
    try:
        health = api_nodes[0].get("/health").json()
    finally:
        worker.stop()
    shared = health["shared_store"]
    assert health["status"] == "ok" and shared["available"] and shared["error"] == ""
    assert shared["url"] == redis.url
    capacities = sorted(r["capacity"] for r in shared["runners"])
    assert capacities == [0, 0, 3]          # two API nodes, one worker
    worker_row = [r for r in shared["runners"] if r["capacity"] == 3][0]
    assert "claude" in worker_row["backends"] and worker_row["busy"] == 0


def test_health_is_degraded_while_the_store_is_down(redis, api_nodes):
    redis.stop()
    reply = api_nodes[0].get("/health")
    shared = reply.json()["shared_store"]
    assert reply.status == 200 and reply.json()["status"] == "degraded"
    assert not shared["available"] and "redis://127.0.0.1" in shared["error"]


def clinvk(home, *argv, **env):
    os.makedirs(home, exist_ok=True)
    return subprocess.run([sys.executable, CLINVK] + list(argv), capture_output=True,
                          timeout=60, env=fake_cli_env(home, home, env))


def test_clinvk_workers_lists_each_worker_with_its_backends_and_slots(redis, tmp_path):
    worker = WorkerProcess(str(tmp_path / "w1"), settings(redis, max_concurrent_runs=2))
    try:
        listed = clinvk(str(tmp_path / "op"), "workers", "--store", redis.url, "--json")
        table = clinvk(str(tmp_path / "op"), "workers", "--store", redis.url)
    finally:
        worker.stop()
    assert listed.returncode == 0, listed.stderr
    row, = json.loads(listed.stdout)["workers"]
    assert row["capacity"] == 2 and "claude" in row["backends"] and row["worker"]
    assert any(row["id"] in line for line in worker.log_lines)
    header, line = table.stdout.decode().splitlines()
    assert header.split() == ["ID", "WORKER", "CAPACITY", "BUSY", "SEEN", "BACKENDS"]
    assert line.startswith(row["id"])


def test_clinvk_workers_without_a_store_says_how_to_give_one(tmp_path):
    done = clinvk(str(tmp_path / "op"), "workers")
    assert done.returncode == 2 and b"--store redis://" in done.stderr


def test_while_redis_is_down_jobs_get_503_and_after_a_restart_they_run_again(
        redis, api_nodes, tmp_path):
    a, b = api_nodes
    worker = WorkerProcess(str(tmp_path / "w1"), settings(redis))
    try:
        redis.stop()
        down = a.post("/api/v1/jobs", {"kind": "prompt",
                                       "request": {"backend": "claude", "prompt": "lost"}})
        assert down.status == 503     # its session, then the job, are stored in Redis
        assert down.json()["error"] in ("session_store_unavailable", "job_store_unavailable")
        assert "redis://127.0.0.1" in down.json()["message"]
        redis.start()
        accepted = []
        assert wait_for(lambda: accepted.append(a.post("/api/v1/jobs", {
            "kind": "prompt", "request": {"backend": "claude", "prompt": "after"}})) or
            accepted[-1].status == 202, 15, 0.2)     # once the client's back-off has passed
        job_id = accepted[-1].json()["id"]
        assert wait_for(lambda: status(b, job_id) in FINAL, 30)
    finally:
        worker.stop()
    assert status(b, job_id) == "succeeded"


def test_a_worker_started_while_redis_is_down_runs_jobs_once_it_is_up(
        redis, api_nodes, tmp_path):
    redis.stop()
    worker = WorkerProcess(str(tmp_path / "w1"), settings(redis))
    try:
        redis.start()
        accepted = []
        assert wait_for(lambda: accepted.append(api_nodes[0].post("/api/v1/jobs", {
            "kind": "prompt", "request": {"backend": "claude", "prompt": "late"}})) or
            accepted[-1].status == 202, 15, 0.2)
        job_id = accepted[-1].json()["id"]
        assert wait_for(lambda: status(api_nodes[1], job_id) in FINAL, 30)
    finally:
        worker.stop()
    assert status(api_nodes[1], job_id) == "succeeded"
    assert any("jobs run once it is back" in line for line in worker.log_lines)
