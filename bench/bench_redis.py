"""Issue 21 benchmark: clinvk on Redis (run: python3 bench/bench_redis.py).

Debian's redis-server on a free loopback port (nothing saved), the zero-work fake claude:
- jobs through Redis: JOBS jobs submitted to an API node (server.role: api) and run by two
  `clinvk worker` processes, from the first submission to the last job's end, against the
  same jobs on one `clinvk serve` on its own disk (recorded: jobs per second each);
- first event across the hop: from sending `POST /api/v1/jobs` to reading the job's
  ``init`` event from the API node, a worker running it, against one `clinvk serve` running
  it itself; median of PAIRS alternating pairs, target at most +10 ms (as a job's own, issue
  18);
- per-request overhead of an API node: one `POST /api/v1/prompt` (JSON answer, keep-alive)
  to an API node (server.role: api), which hands the run to a worker and waits on it, against
  one `clinvk serve` running it itself; median of PAIRS alternating pairs, target at most
  +15 ms;
- the shared rate limit: one `GET /api/v1/backends` on a keep-alive connection with rate limiting on,
  buckets in Redis against buckets in the process; median of PAIRS alternating pairs, target
  at most +2 ms.

``--before OLD.pyz``: instead, this build's job queue against OLD's, side by side on one
redis-server (each under a key prefix of its own: an API node and two workers each): JOBS
jobs through each, ROUNDS alternating rounds (median jobs per second), and job submission to
its first event, median of PAIRS alternating pairs. Then the queue alone (QUEUE_SCRIPT, each
build's ``RoutedQueues`` in a process of its own, alternating ROUNDS times): QUEUE_JOBS jobs
pushed across three backend queues and pulled (and acknowledged) by one process serving
them, its worker's own queue and the shared one (jobs per second); and from a push to the
pull of a process blocked waiting returning it (median of PAIRS).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (PY, PYZ, Server, fake_env, need_pyz, paired, post, post_ok,  # noqa: E402
                    record, report_value)

ISSUE = "21"
JOBS = 100
PAIRS = 40
ROUNDS = 5
QUEUE_JOBS = 300
# Run with: python3 -c QUEUE_SCRIPT PYZ URL PREFIX; prints "<jobs/s> <median wake-up ms>".
QUEUE_SCRIPT = """
import statistics, sys, threading, time
sys.path.insert(0, sys.argv[1])
try:
    from clinvk_lib.job_routes_redis import RoutedQueues
except ImportError:                                 # before the routing had a module
    from clinvk_lib.job_queue_redis import RoutedQueues
from clinvk_lib.redisclient import Client
client = Client(sys.argv[2], prefix=sys.argv[3])
backends = ["claude", "codex", "gemini"]
api = RoutedQueues(client, "api", 60, "api", lambda: ())
puller = RoutedQueues(client, "w", 60, "w1", lambda: backends)
for n in range(%(jobs)d):
    api.push("job-%%d" %% n, [backends[n %% 3]])
start, pulled = time.perf_counter(), 0
while pulled < %(jobs)d:
    for d in puller.pull(0.5):
        puller.queue(d.queue).done(d.entry)
        pulled += 1
rate = %(jobs)d / (time.perf_counter() - start)
waits = []
for n in range(%(pairs)d):
    got = []
    def wait():
        while not got:
            got.extend((time.perf_counter(), d) for d in puller.pull(0.5))
    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)                                # blocked by now
    pushed = time.perf_counter()
    api.push("wake-%%d" %% n, [backends[n %% 3]])
    thread.join()
    puller.queue(got[0][1].queue).done(got[0][1].entry)
    waits.append(got[0][0] - pushed)
print(rate, statistics.median(waits) * 1000)
""" % {"jobs": QUEUE_JOBS, "pairs": PAIRS}
PROMPT = {"backend": "claude", "prompt": "hi", "ephemeral": True}
LIMITED = {"CLINVK_SERVER_RATE_LIMIT_ENABLED": "true", "CLINVK_SERVER_RATE_LIMIT_RPS": "100000",
           "CLINVK_SERVER_RATE_LIMIT_BURST": "100000"}


class Redis:
    """redis-server on a free loopback port in a temporary directory, nothing saved."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="clinvk-bench-redis-")
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", self.dir, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Worker:
    """``clinvk worker`` on ``store``, with a fresh CLINVK_HOME (and ``env``), of ``pyz``."""

    def __init__(self, store: str, pyz: str = PYZ, env: Optional[Dict[str, str]] = None
                 ) -> None:
        self.home = tempfile.mkdtemp(prefix="clinvk-bench-worker-")
        self.log = open(os.path.join(self.home, "worker.log"), "w+b")
        self.proc = subprocess.Popen([PY, pyz, "worker", "--store", store],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     env=fake_env(dict({"CLINVK_HOME": self.home}, **(env or {}))),
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.log.seek(0)
            if b" worker " in self.log.read():
                return
            time.sleep(0.05)
        raise RuntimeError("clinvk worker did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def submit(server: Server) -> str:
    status, raw = post(server.connect(), "/api/v1/jobs", {"kind": "prompt", "request": PROMPT})
    if status != 202:
        raise RuntimeError("POST /api/v1/jobs answered %d: %r" % (status, raw[:300]))
    return json.loads(raw)["id"]


def finished(server: Server) -> int:
    conn = server.connect()
    total = 0
    for status in ("succeeded", "failed", "cancelled", "interrupted"):
        conn.request("GET", "/api/v1/jobs?limit=1&status=" + status)
        total += json.loads(conn.getresponse().read())["total"]
    return total


def throughput(server: Server) -> float:
    """Jobs per second: JOBS submitted, from the first submission to the last end."""
    done = finished(server) + JOBS
    start = time.perf_counter()
    for _ in range(JOBS):
        submit(server)
    while finished(server) < done:
        time.sleep(0.05)
    return JOBS / (time.perf_counter() - start)


def first_event(server: Server) -> float:
    """Seconds from sending a job to reading its init event; waits for the job to end."""
    follow = server.connect()
    start = time.perf_counter()
    job_id = submit(server)
    follow.request("GET", "/api/v1/jobs/%s/events" % job_id)
    resp = follow.getresponse()
    elapsed = None
    for line in resp:
        if elapsed is None and json.loads(line)["type"] == "init":
            elapsed = time.perf_counter() - start
    if elapsed is None:
        raise RuntimeError("job %s ended without an init event" % job_id)
    return elapsed


def prompt(conn) -> float:
    """Seconds of one POST /api/v1/prompt with its JSON answer."""
    start = time.perf_counter()
    post_ok(conn, "/api/v1/prompt", PROMPT)
    return time.perf_counter() - start


def backends(conn) -> float:
    """Seconds of one GET /api/v1/backends (a cheap route: the CLI probe is cached)."""
    start = time.perf_counter()
    conn.request("GET", "/api/v1/backends")
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError("/api/v1/backends answered %d" % resp.status)
    return time.perf_counter() - start


def compare(before: str) -> None:
    """This build's job queue against ``before``'s (see the module docstring)."""
    redis = Redis()
    started: List = []
    try:
        apis = {}
        for label, pyz in (("before", before), ("after", PYZ)):
            prefix = {"CLINVK_SERVER_STORE_KEY_PREFIX": label + ":"}
            apis[label] = Server(dict(prefix, CLINVK_SERVER_STORE=redis.url,
                                      CLINVK_SERVER_ROLE="api"), pyz=pyz)
            started.append(apis[label])
            started += [Worker(redis.url, pyz, prefix) for _ in range(2)]
        rates: Dict[str, List[float]] = {"before": [], "after": []}
        for _ in range(ROUNDS):
            for label in rates:
                rates[label].append(throughput(apis[label]))
        record(ISSUE, "%d jobs, zero-work fake, API node + 2 workers: this build vs %s "
               "(median of %d alternating rounds)" % (JOBS, os.path.basename(before), ROUNDS),
               "%.1f vs %.1f jobs/s (%.2fx)" % (statistics.median(rates["after"]),
                                               statistics.median(rates["before"]),
                                               statistics.median(rates["after"]) /
                                               statistics.median(rates["before"])))
        r = paired(lambda: first_event(apis["after"]), lambda: first_event(apis["before"]),
                   PAIRS)
        record(ISSUE, "job submission to its first event, API node + worker: this build vs %s"
               % os.path.basename(before), "%.1f ms vs %.1f ms (median of %d pairs, %+.1f ms)"
               % (r["a_ms"], r["b_ms"], PAIRS, r["diff_ms"]))
        while started:                  # the queue alone runs on a quiet redis-server
            started.pop().stop()
        queue_only(redis, before)
    finally:
        for process in reversed(started):
            process.stop()
        redis.stop()


def queue_only(redis: Redis, before: str) -> None:
    """The queue alone, this build's against ``before``'s (see the module docstring)."""
    found: Dict[str, List[List[float]]] = {"before": [], "after": []}
    for _ in range(ROUNDS):
        for label, pyz in (("before", before), ("after", PYZ)):
            out = subprocess.run([PY, "-c", QUEUE_SCRIPT, pyz, redis.url, "q-%s:" % label],
                                 check=True, stdout=subprocess.PIPE, env=fake_env()).stdout
            found[label].append([float(x) for x in out.split()])
    rate = {k: statistics.median(r[0] for r in v) for k, v in found.items()}
    wake = {k: statistics.median(r[1] for r in v) for k, v in found.items()}
    record(ISSUE, "the queue alone: %d jobs over 3 backend queues, one process pulling 5 "
           "queues: this build vs %s (median of %d alternating rounds)"
           % (QUEUE_JOBS, os.path.basename(before), ROUNDS),
           "%.0f vs %.0f jobs/s (%.2fx)" % (rate["after"], rate["before"],
                                           rate["after"] / rate["before"]))
    record(ISSUE, "the queue alone: a push to the return of the pull waiting for it: this "
           "build vs %s" % os.path.basename(before), "%.2f ms vs %.2f ms" % (
               wake["after"], wake["before"]))


def main() -> None:
    need_pyz()
    if not shutil.which("redis-server") and not os.path.exists("/usr/bin/redis-server"):
        print("SKIP | %s | redis-server is not installed (apt-get install redis-server)"
              % ISSUE)
        return
    if sys.argv[1:2] == ["--before"]:
        compare(sys.argv[2])
        return
    redis = Redis()
    started: List = []
    try:
        api = Server({"CLINVK_SERVER_STORE": redis.url, "CLINVK_SERVER_ROLE": "api"})
        started.append(api)
        started += [Worker(redis.url), Worker(redis.url)]
        local = Server()
        started.append(local)
        rates: Dict[str, float] = {"redis": throughput(api), "local": throughput(local)}
        record(ISSUE, "%d jobs, zero-work fake: API node + 2 workers on Redis vs one serve"
               % JOBS, "%.1f vs %.1f jobs/s" % (rates["redis"], rates["local"]))
        r = paired(lambda: first_event(api), lambda: first_event(local), PAIRS)
        report_value(ISSUE, "job submission to its first event: across Redis minus one serve",
                     "%.1f ms vs %.1f ms (median of %d pairs)" % (r["a_ms"], r["b_ms"], PAIRS),
                     r["diff_ms"], "ms", 10.0)
        a, b = api.connect(), local.connect()
        r = paired(lambda: prompt(a), lambda: prompt(b), PAIRS)
        report_value(ISSUE, "POST /api/v1/prompt: API node + worker minus one serve",
                     "%.1f ms vs %.1f ms (median of %d pairs)" % (r["a_ms"], r["b_ms"], PAIRS),
                     r["diff_ms"], "ms", 15.0)
        shared = Server(dict(LIMITED, CLINVK_SERVER_STORE=redis.url))
        own = Server(LIMITED)
        started += [shared, own]
        a, b = shared.connect(), own.connect()
        r = paired(lambda: backends(a), lambda: backends(b), PAIRS * 5)
        report_value(ISSUE, "rate-limited GET /api/v1/backends: buckets in Redis minus in-process",
                     "%.2f ms vs %.2f ms (median of %d pairs)" % (r["a_ms"], r["b_ms"],
                                                                  PAIRS * 5),
                     r["diff_ms"], "ms", 2.0, fmt="%.2f")
    finally:
        for process in reversed(started):
            process.stop()
        redis.stop()


if __name__ == "__main__":
    main()
