"""An API node (`clinvk serve` with server.role: api on a Redis store) runs nothing itself:
every synchronous route that runs a backend becomes a job a `clinvk worker` runs, and the
client sees the same answer as from a single process. Real processes (the API node, the
worker and a single `clinvk serve` to compare with, all driving the fake CLIs), a real
redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.redisutil import RedisServer, WorkerProcess
from tests.serveproc import CLINVK, ServeProcess, fake_cli_env, started_by
from tests.serverutil import HttpClient, encode_body, sse_events, wait_for

pytestmark = pytest.mark.slow

PROMPT = {"backend": "claude", "prompt": "hello"}
CHAT = {"model": "claude", "messages": [{"role": "user", "content": "hello"}]}
MESSAGES = {"model": "claude", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hello"}]}
RESPONSES = {"model": "claude", "input": "hello"}

# (path, body, how the answer is read): every route that runs a backend.
ROUTES = {
    "prompt": ("/api/v1/prompt", PROMPT, "json"),
    "prompt-stream": ("/api/v1/prompt", dict(PROMPT, output_format="stream-json"), "ndjson"),
    "parallel": ("/api/v1/parallel", {"tasks": [PROMPT, dict(PROMPT, backend="codex")]},
                 "json"),
    "chain": ("/api/v1/chain", {"steps": [PROMPT, dict(PROMPT, prompt="on {{previous}}")]},
              "json"),
    "compare": ("/api/v1/compare", {"prompt": "hello", "backends": ["claude", "codex"]},
                "json"),
    "chat": ("/openai/v1/chat/completions", CHAT, "json"),
    "chat-stream": ("/openai/v1/chat/completions", dict(CHAT, stream=True), "sse"),
    "messages": ("/anthropic/v1/messages", MESSAGES, "json"),
    "messages-stream": ("/anthropic/v1/messages", dict(MESSAGES, stream=True), "sse"),
    "responses": ("/openai/v1/responses", RESPONSES, "json"),
    "responses-stream": ("/openai/v1/responses", dict(RESPONSES, stream=True), "sse"),
}


def settings(redis=None, **server):
    base = {"job_visibility_timeout_secs": 5}
    if redis is not None:
        base["store"] = redis.url
    base.update(server)
    return {"server": base}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A redis-server, an API node on it (without any agent CLI on its PATH: it needs
    none), one worker, and a single process on its own disk."""
    root = str(tmp_path_factory.mktemp("role-api"))
    with RedisServer(os.path.join(root, "redis")) as redis:
        api = ServeProcess(os.path.join(root, "api"), env={"PATH": "/usr/bin:/bin"},
                           config=settings(redis, role="api", queue_timeout_secs=5,
                                           metrics_enabled=True))
        worker = WorkerProcess(os.path.join(root, "worker"), settings(redis))
        single = ServeProcess(os.path.join(root, "single"), config=settings())
        try:
            yield api, worker, single
        finally:
            for proc in (api, worker, single):
                proc.stop()


def shape(value):
    """``value`` with every leaf replaced by its type: what must not differ between nodes."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def texts(value, key=""):
    """The text values in an answer (a reply's text, a stream's deltas), in order."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in texts(v, k)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in texts(v, key)]
    return [value] if key in ("text", "content", "output") and isinstance(value, str) else []


def answer(node, path, body, kind):
    reply = node.post(path, body, timeout=60)
    assert reply.status == 200, (path, reply.status, reply.body[:400])
    if kind == "json":
        return reply.json()
    if kind == "ndjson":
        return [json.loads(line) for line in reply.body.decode().splitlines() if line]
    return sse_events(reply.body)


def comparable(data, kind):
    if kind == "json":
        return shape(data)
    if kind == "ndjson":
        return [(e["type"], sorted(e["content"])) for e in data]
    return [(name, shape(payload)) for name, payload in data]


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_route_answers_through_an_api_node_as_a_single_process_does(cluster, route):
    api, worker, single = cluster
    path, body, kind = ROUTES[route]
    remote = answer(api, path, body, kind)
    local = answer(single, path, body, kind)
    assert comparable(remote, kind) == comparable(local, kind)
    assert texts(remote) == texts(local) and "hello" in "".join(texts(remote))
    assert api.children() == []          # the API node never started a backend


def test_the_api_node_counts_the_runs_its_workers_ran_in_its_metrics(cluster):
    api, _, _ = cluster
    before = runs_counted(api, "gemini")
    body = {"tasks": [dict(PROMPT, backend="gemini"), dict(PROMPT, backend="gemini")]}
    assert api.post("/api/v1/parallel", body).status == 200
    assert api.post("/api/v1/prompt", dict(PROMPT, backend="gemini")).status == 200
    assert runs_counted(api, "gemini") == before + 3


def runs_counted(node, backend):
    needle = 'clinvk_backend_runs_total{backend="%s",outcome="success"} ' % backend
    for line in node.get("/metrics").body.decode().splitlines():
        if line.startswith(needle):
            return float(line[len(needle):])
    return 0.0


def test_the_worker_runs_the_backend_and_the_api_node_none(cluster, tmp_path):
    api, worker, single = cluster
    path, body, _ = ROUTES["prompt-stream"]
    conn = api.connection()
    conn.request("POST", path, *encode_body(dict(body, prompt="slow one")))
    started = worker.log_lines[:]
    try:
        resp = conn.getresponse()
        assert resp.status == 200
        resp.readline()                  # init: the run has started on the worker
        assert api.children() == []
        resp.read()
    finally:
        conn.close()
    assert wait_for(lambda: any("(run) ended succeeded" in line     # the worker ran it
                                for line in worker.log_lines[len(started):]), 10)
    # Answered, the job is gone from the store: a synchronous request leaves nothing there.
    assert wait_for(lambda: api.get("/api/v1/jobs?kind=run").json()["jobs"] == [], 10)


def test_a_failed_run_fails_as_it_would_locally(cluster):
    api, worker, single = cluster
    body = dict(PROMPT, workdir="/nonexistent/dir")
    remote, local = api.post("/api/v1/prompt", body), single.post("/api/v1/prompt", body)
    assert remote.status == local.status == 400
    assert remote.json()["field"] == local.json()["field"] == "workdir"


def test_a_client_that_hangs_up_cancels_the_run_on_the_worker(tmp_path):
    """And while it runs, the API node's console lists it; a run killed by the API node's
    server.request_timeout_secs is its 504, as on a single process."""
    record = str(tmp_path / "runs.jsonl")
    with RedisServer(str(tmp_path / "redis")) as redis:
        api = ServeProcess(str(tmp_path / "api"), config=settings(redis, role="api"))
        timing = ServeProcess(str(tmp_path / "api2"), config=settings(
            redis, role="api", request_timeout_secs=2))
        worker = WorkerProcess(str(tmp_path / "w"), settings(redis),
                               env={"FAKE_CLI_MODE": "hang", "FAKE_CLI_RECORD": record,
                                    "FAKE_CLI_PIDFILE": str(tmp_path / "fake.pid")})
        try:
            conn = api.connection()
            conn.request("POST", "/api/v1/prompt",
                         *encode_body(dict(PROMPT, output_format="stream-json")))
            resp = conn.getresponse()
            assert resp.status == 200
            resp.readline()
            assert wait_for(lambda: os.path.exists(str(tmp_path / "fake.pid")), 20)
            with open(str(tmp_path / "fake.pid")) as f:
                pid = int(f.read().strip())
            assert _alive(pid)
            assert started_by(worker.proc.pid) and api.children() == []
            runs = api.get("/api/v1/runs").json()["runs"]
            assert [r["backends"] for r in runs] == [["claude"]]
            conn.close()                 # the client hangs up
            assert wait_for(lambda: not _alive(pid), 20)
            assert wait_for(lambda: any("(run) ended cancelled" in line
                                        for line in worker.log_lines), 20)
            reply = timing.post("/api/v1/prompt", PROMPT, timeout=60)
            assert reply.status == 504 and reply.json()["error"] == "timeout"
            assert "timed out after 2s" in reply.json()["message"]
        finally:
            api.stop()
            timing.stop()
            worker.stop()


def test_an_api_node_without_workers_answers_503_after_the_queue_timeout(tmp_path):
    with RedisServer(str(tmp_path / "redis")) as redis:
        api = ServeProcess(str(tmp_path / "api"),
                           config=settings(redis, role="api", queue_timeout_secs=1))
        try:
            reply = api.post("/api/v1/prompt", PROMPT)
            assert reply.status == 503 and reply.json()["error"] == "no_worker"
            assert "server.queue_timeout_secs" in reply.json()["message"]
            assert api.get("/api/v1/jobs?kind=run").json()["jobs"] == []   # nothing left
        finally:
            api.stop()


def error_code(body):
    """The error code of an error body in any dialect (None for an answer)."""
    error = body.get("error")
    if isinstance(error, dict):
        return error.get("code") or error.get("type")
    return error if isinstance(error, str) else None


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def test_role_and_store_from_the_command_line(tmp_path):
    """clinvk serve --role api --store URL is an API node: alone, it answers no_worker."""
    with RedisServer(str(tmp_path / "redis")) as redis:
        env = fake_cli_env(str(tmp_path), str(tmp_path / "state"),
                           {"CLINVK_SERVER_QUEUE_TIMEOUT_SECS": "1"})
        proc = subprocess.Popen([sys.executable, CLINVK, "serve", "--role", "api", "--store",
                                 redis.url, "--port", "0"], env=env, cwd=str(tmp_path),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            first = proc.stderr.readline().decode()
            node = HttpClient()
            node.port = int(first.split("listening on http://127.0.0.1:")[1].split()[0])
            reply = node.post("/api/v1/prompt", PROMPT)
            assert reply.status == 503 and reply.json()["error"] == "no_worker"
        finally:
            proc.terminate()
            proc.wait(30)


def test_role_api_without_a_store_is_refused_at_start(tmp_path):
    done = subprocess.run([sys.executable, CLINVK, "serve", "--role", "api", "--port", "0"],
                          env=fake_cli_env(str(tmp_path), str(tmp_path / "state")),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"server.role: api" in done.stderr and b"--store" in done.stderr


def test_a_session_continues_through_an_api_node_sharing_the_workers_home(tmp_path):
    """Until sessions live in Redis, an API node and its worker share CLINVK_HOME: then a
    session started through the API node is continued there, and the model sees turn 1."""
    home = str(tmp_path / "shared")
    with RedisServer(str(tmp_path / "redis")) as redis:
        api = ServeProcess(home, config=settings(redis, role="api"))
        worker = WorkerProcess(home, settings(redis), env={"FAKE_CLI_RECALL": "1"})
        try:
            reply = api.post("/api/v1/prompt", dict(PROMPT, prompt="the fact is 42"))
            first = reply.json()
            assert reply.status == 200 and first["exit_code"] == 0, reply.body
            assert first["session_id"]
            reply = api.post("/api/v1/prompt", dict(PROMPT, session_id=first["session_id"],
                                                     prompt="what is the fact?"))
            second = reply.json()
            assert reply.status == 200, (second, worker.log_lines[-5:])
            assert second["session_id"] == first["session_id"]
            assert "the fact is 42" in second["output"]
            session = api.get("/api/v1/sessions/" + first["session_id"]).json()
            assert session["turn_count"] == 2
        finally:
            api.stop()
            worker.stop()


def test_an_api_node_shutting_down_lets_its_runs_finish_on_the_workers(tmp_path):
    """SIGTERM on the API node mid-run: the request gets the grace period, as a local run
    does; its run is not cancelled on the worker."""
    with RedisServer(str(tmp_path / "redis")) as redis:
        api = ServeProcess(str(tmp_path / "api"), config=settings(redis, role="api"))
        worker = WorkerProcess(str(tmp_path / "w"), settings(redis),
                               env={"FAKE_CLI_MODE": "slow", "FAKE_CLI_DELAY": "0.3"})
        try:
            conn = api.connection()
            conn.request("POST", "/api/v1/prompt",
                         *encode_body(dict(PROMPT, output_format="stream-json")))
            resp = conn.getresponse()
            assert resp.status == 200
            resp.readline()              # init: running on the worker
            api.signal()                 # SIGTERM: drain
            lines = [json.loads(line) for line in resp.read().decode().splitlines() if line]
            conn.close()
            assert lines[-1]["type"] == "done" and lines[-1]["content"]["exit_code"] == 0
            assert not any(e["type"] == "error" for e in lines)
            assert api.proc.wait(30) == 0
            assert wait_for(lambda: any("(run) ended succeeded" in line
                                        for line in worker.log_lines), 20)
        finally:
            api.stop()
            worker.stop()


@pytest.mark.parametrize("mode", ["fail", "rate_limited"])
def test_a_backend_that_fails_on_the_worker_is_answered_as_a_local_failure(tmp_path, mode):
    """The backend's failure (exit 1; its model API's 429) has the same status and body
    shape through an API node as on a single process, in each dialect."""
    env = {"FAKE_CLI_MODE": mode}
    with RedisServer(str(tmp_path / "redis")) as redis:
        api = ServeProcess(str(tmp_path / "api"), config=settings(redis, role="api"))
        worker = WorkerProcess(str(tmp_path / "w"), settings(redis), env=env)
        single = ServeProcess(str(tmp_path / "single"), env=env, config=settings())
        try:
            statuses = set()
            for route in ("prompt", "chat", "messages", "responses"):
                path, body, _ = ROUTES[route]
                remote, local = api.post(path, body), single.post(path, body)
                assert remote.status == local.status, (route, remote.body, local.body)
                assert shape(remote.json()) == shape(local.json()), route
                assert error_code(remote.json()) == error_code(local.json()), route
                statuses.add(remote.status)
            assert statuses - {200}          # the failure is an error status somewhere
        finally:
            for proc in (api, worker, single):
                proc.stop()


def test_a_backend_not_installed_on_the_worker_is_the_same_503(tmp_path):
    with RedisServer(str(tmp_path / "redis")) as redis:
        api = ServeProcess(str(tmp_path / "api"), config=settings(redis, role="api"))
        worker = WorkerProcess(str(tmp_path / "w"), settings(redis),
                               env={"PATH": "/usr/bin:/bin"})
        try:
            reply = api.post("/api/v1/prompt", PROMPT)
            assert reply.status == 503
            assert reply.json()["error"] == "backend_not_installed"
            assert reply.json()["field"] == "backend"
        finally:
            api.stop()
            worker.stop()
