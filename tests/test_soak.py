"""Soak: 2,000 requests mixed across every route (the server's own /openapi.json says which),
64 at a time, against `clinvk serve` as a child process driving the fake CLIs.

Promises checked: no 5xx except the designed 503 of a full server, no request lost, and once
the load is gone the server holds no more threads, open files or children than before it.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from clinvk_lib.redisclient import Client
from tests.redisutil import RedisServer
from tests.serveproc import ServeProcess
from tests.serverutil import wait_for

pytestmark = pytest.mark.slow

TOTAL = 2000
CONCURRENCY = 64
# How often each route comes up, relative to the others: requests that run a backend cost a
# process spawn each, so they are a quarter of the mix, which keeps the run around 30 s.
RUN_WEIGHT, CHEAP_WEIGHT = 3, 8

Request = Tuple[str, str, Optional[Dict[str, Any]]]
MESSAGES = [{"role": "user", "content": "hi"}]


class Mix:
    """Request builders per operationId. Sessions made before the load give the session
    routes real ids: ``sessions`` are read and continued, ``doomed`` ones deleted (a second
    delete of one answers 404, which is fine)."""

    def __init__(self) -> None:
        self.sessions: List[str] = []
        self.doomed: List[str] = []
        self.responses: List[str] = []          # stored responses, read and continued
        self.doomed_responses: List[str] = []
        self.jobs: List[str] = []               # jobs read and followed
        self.doomed_jobs: List[str] = []
        self.rng = random.Random(8)

    def session(self) -> str:
        return self.rng.choice(self.sessions)

    def response(self) -> str:
        return self.rng.choice(self.responses)

    def new_response(self, backend: str) -> Dict[str, Any]:
        body: Dict[str, Any] = {"model": backend, "input": "soak"}
        shape = self.rng.choice(("plain", "stream", "background", "unstored", "continued"))
        if shape == "stream":
            body["stream"] = True
        elif shape == "background":
            body["background"] = True
        elif shape == "unstored":
            body["store"] = False
        elif shape == "continued":
            body.update(model="claude", previous_response_id=self.response())
        return body

    def builders(self) -> Dict[str, Tuple[int, Callable[[], Request]]]:
        backend = lambda: self.rng.choice(("claude", "codex", "gemini"))  # noqa: E731
        return {
            "executePrompt": (RUN_WEIGHT * 3, lambda: self.rng.choice([
                ("POST", "/api/v1/prompt", {"backend": backend(), "prompt": "soak"}),
                ("POST", "/api/v1/prompt", {"backend": backend(), "prompt": "soak",
                                            "ephemeral": True, "output_format": "stream-json"}),
                ("POST", "/api/v1/prompt", {"backend": "claude", "prompt": "again",
                                            "session_id": self.session()}),
                ("POST", "/api/v1/prompt", {"backend": backend(), "prompt": "x",
                                            "dry_run": True}),
            ])),
            "executeParallel": (RUN_WEIGHT, lambda: ("POST", "/api/v1/parallel", {"tasks": [
                {"backend": backend(), "prompt": "a"}, {"backend": backend(), "prompt": "b"}]})),
            "executeChain": (RUN_WEIGHT, lambda: ("POST", "/api/v1/chain", {"steps": [
                {"backend": backend(), "prompt": "a"},
                {"backend": backend(), "prompt": "then {{previous}}"}]})),
            "executeCompare": (RUN_WEIGHT, lambda: ("POST", "/api/v1/compare", {
                "prompt": "which", "backends": ["claude", "codex", "gemini"]})),
            "openaiChatCompletions": (RUN_WEIGHT * 2, lambda: (
                "POST", "/openai/v1/chat/completions",
                {"model": backend(), "messages": MESSAGES, "stream": self.rng.random() < 0.5})),
            "anthropicCreateMessage": (RUN_WEIGHT * 2, lambda: (
                "POST", self.rng.choice(["/anthropic/v1/messages",
                                         "/anthropic/v1/v1/messages"]),
                {"model": backend(), "max_tokens": 64, "messages": MESSAGES,
                 "stream": self.rng.random() < 0.5})),
            "anthropicCountTokens": (CHEAP_WEIGHT, lambda: (
                "POST", "/anthropic/v1/messages/count_tokens",
                {"model": "claude", "messages": MESSAGES})),
            "listBackends": (CHEAP_WEIGHT, lambda: ("GET", "/api/v1/backends", None)),
            "listSessions": (CHEAP_WEIGHT, lambda: ("GET", "/api/v1/sessions?limit=5", None)),
            "getSession": (CHEAP_WEIGHT, lambda: ("GET", "/api/v1/sessions/" + self.session(),
                                                  None)),
            "deleteSession": (1, lambda: ("DELETE", "/api/v1/sessions/"
                                                 + self.rng.choice(self.doomed), None)),
            "openaiCreateResponse": (RUN_WEIGHT * 2, lambda: (
                "POST", "/openai/v1/responses", self.new_response(backend()))),
            "openaiGetResponse": (CHEAP_WEIGHT, lambda: (
                "GET", "/openai/v1/responses/" + self.response(), None)),
            "openaiListInputItems": (CHEAP_WEIGHT, lambda: (
                "GET", "/openai/v1/responses/%s/input_items?limit=2" % self.response(), None)),
            "openaiCancelResponse": (1, lambda: (
                "POST", "/openai/v1/responses/%s/cancel" % self.response(), None)),
            "openaiDeleteResponse": (1, lambda: (
                "DELETE", "/openai/v1/responses/" + self.rng.choice(self.doomed_responses),
                None)),
            "createJob": (RUN_WEIGHT, lambda: ("POST", "/api/v1/jobs", {
                "kind": "prompt", "request": {"backend": backend(), "prompt": "soak"}})),
            "listJobs": (CHEAP_WEIGHT, lambda: ("GET", "/api/v1/jobs?limit=5", None)),
            "getJob": (CHEAP_WEIGHT, lambda: ("GET", "/api/v1/jobs/" + self.rng.choice(self.jobs),
                                              None)),
            "getJobEvents": (CHEAP_WEIGHT, lambda: (
                "GET", "/api/v1/jobs/%s/events" % self.rng.choice(self.jobs), None)),
            "deleteJob": (1, lambda: ("DELETE", "/api/v1/jobs/"
                                      + self.rng.choice(self.doomed_jobs), None)),
            "listRuns": (CHEAP_WEIGHT, lambda: ("GET", "/api/v1/runs", None)),
            # A run that has ended (or never was) by the time the request lands: a 404 is fine.
            "getRunEvents": (1, lambda: ("GET", "/api/v1/runs/run_gone/events", None)),
            "cancelRun": (1, lambda: ("DELETE", "/api/v1/runs/run_gone", None)),
            "getUsage": (CHEAP_WEIGHT, lambda: ("GET", "/api/v1/usage", None)),
            "getConsole": (CHEAP_WEIGHT, lambda: ("GET", "/", None)),
            "getConsoleAsset": (CHEAP_WEIGHT, lambda: ("GET", "/console/core.js", None)),
            "healthCheck": (CHEAP_WEIGHT, lambda: ("GET", "/health", None)),
            "getMetrics": (CHEAP_WEIGHT, lambda: ("GET", "/metrics", None)),
            "getOpenAPI": (CHEAP_WEIGHT, lambda: ("GET", "/openapi.json", None)),
            "getDocs": (CHEAP_WEIGHT, lambda: ("GET", "/docs", None)),
            "openaiListModels": (CHEAP_WEIGHT, lambda: ("GET", "/openai/v1/models", None)),
            "openaiGetModel": (CHEAP_WEIGHT, lambda: ("GET", "/openai/v1/models/" + backend(),
                                                      None)),
        }

    def plan(self, operations: List[str], count: int) -> List[Request]:
        """``count`` requests over ``operations`` (each at least once), shuffled."""
        builders = self.builders()
        missing = [op for op in operations if op not in builders]
        assert not missing, "the soak mix has no request for %s: add one" % missing
        weights = [builders[op][0] for op in operations]
        chosen = list(operations) + self.rng.choices(operations, weights, k=count - len(operations))
        self.rng.shuffle(chosen)
        return [builders[op][1]() for op in chosen]


def send(port: int, req: Request) -> Tuple[int, bytes]:
    method, path, body = req
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data,
                     {"Content-Type": "application/json"} if method == "POST" else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def hammer(port: int, requests: List[Request]) -> List[Tuple[Request, Any]]:
    """Send ``requests`` from CONCURRENCY threads; (request, (status, body) or exception)."""
    results: List[Tuple[Request, Any]] = []
    jobs = iter(requests)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                req = next(jobs, None)
            if req is None:
                return
            try:
                outcome: Any = send(port, req)
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                outcome = exc
            with lock:
                results.append((req, outcome))
    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def is_designed_503(status: int, body: bytes) -> bool:
    # The full server's 503 (in any API style) names the setting that limits it.
    return status == 503 and b"max_concurrent_runs" in body


def failures(results: List[Tuple[Request, Any]]) -> List[Tuple[Request, Any]]:
    """The requests that failed (an exception or a 5xx other than the designed 503), each
    with its error or status and the start of its body."""
    return [(req, o if isinstance(o, Exception) else (o[0], o[1][:300]))
            for req, o in results
            if isinstance(o, Exception) or (o[0] >= 500 and not is_designed_503(*o))]


def trouble(srv: ServeProcess) -> List[str]:
    """The server's log lines that say something went wrong (the last 20)."""
    pattern = re.compile(r' 5\d\d [\d.]+ms|Traceback|ERROR|error|warning')
    return [line for line in list(srv.log_lines) if pattern.search(line)][-20:]


@pytest.fixture(params=["disk", "redis"])
def soak_server(request, tmp_path):
    """The server on its own disk, and on a Redis store (server.store: sessions, jobs,
    stored responses, idempotency keys and rate-limit buckets there; rate limits high enough
    never to refuse)."""
    settings = {"metrics_enabled": True, "max_concurrent_runs": 16, "queue_timeout_secs": 30}
    redis = None
    if request.param == "redis":
        redis = RedisServer(str(tmp_path / "redis"))
        settings.update(store=redis.url, rate_limit_enabled=True, rate_limit_rps=100000,
                        rate_limit_burst=100000)
    srv = ServeProcess(str(tmp_path / "home"), config={"server": settings})
    # Open files the server may keep after the load: on Redis, the client's pool keeps the
    # connections it opened for reuse, up to its bound.
    srv.kept_fds = Client.MAX_CONNECTIONS if redis is not None else 0
    srv.responses_dir = os.path.join(str(tmp_path / "home"), "responses")
    srv.on_redis = redis is not None
    yield srv
    srv.stop()
    if redis is not None:
        redis.stop()


def test_two_thousand_mixed_requests_leave_no_5xx_threads_files_or_children(soak_server):
    srv = soak_server
    operations = [op["operationId"] for ops in srv.get("/openapi.json").json()["paths"].values()
                  for op in ops.values()]
    mix = Mix()
    seeds = hammer(srv.port, [("POST", "/api/v1/prompt", {"backend": "claude",
                                                          "prompt": "seed"})] * 40)
    ids = [json.loads(o[1])["session_id"] for _, o in seeds]
    mix.sessions, mix.doomed = ids[:16], ids[16:]
    stored = hammer(srv.port, [("POST", "/openai/v1/responses", {"model": "claude",
                                                                 "input": "seed"})] * 24)
    ids = [json.loads(o[1])["id"] for _, o in stored]
    mix.responses, mix.doomed_responses = ids[:12], ids[12:]
    submitted = hammer(srv.port, [("POST", "/api/v1/jobs", {
        "kind": "prompt", "request": {"backend": "claude", "prompt": "seed"}})] * 16)
    ids = [json.loads(o[1])["id"] for _, o in submitted]
    mix.jobs, mix.doomed_jobs = ids[:8], ids[8:]
    warm = failures(hammer(srv.port, mix.plan(operations, 2 * CONCURRENCY)))
    assert warm == [], "%d failures warming up, first: %r; server log: %s" % (
        len(warm), warm[:3], trouble(srv))
    assert wait_for(lambda: not srv.children(), 10)
    threads, fds = srv.threads(), srv.open_fds()

    results = hammer(srv.port, mix.plan(operations, TOTAL))

    assert len(results) == TOTAL
    failed = failures(results)
    assert failed == [], "%d failures, first: %r; server log: %s" % (
        len(failed), failed[:3], trouble(srv))
    # Once the load is gone: handler, stream and reaper threads end, sockets and pipes close,
    # every backend is reaped.
    assert wait_for(lambda: not srv.children(), 10), srv.children()
    assert wait_for(lambda: srv.threads() <= threads, 10), (srv.threads(), threads)
    assert wait_for(lambda: srv.open_fds() <= fds + srv.kept_fds, 10), (srv.open_fds(), fds)
    assert srv.get("/health").status == 200
    if srv.on_redis:        # the stored responses went to Redis, none to the node's disk
        assert not os.path.exists(srv.responses_dir)
    if srv.on_redis:        # the shared usage counters kept up with the load
        assert wait_for(lambda: cluster_requests(srv) >= TOTAL, 10), cluster_requests(srv)


def cluster_requests(srv: ServeProcess) -> int:
    usage = srv.get("/api/v1/usage").json()
    assert usage["scope"] == "cluster", usage
    return usage["http_requests"]
