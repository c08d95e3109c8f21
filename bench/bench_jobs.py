"""Issue 18 benchmark: durable jobs (run: python3 bench/bench_jobs.py).

On one `clinvk serve` with the zero-work fake claude:
- submission to first event: from sending `POST /api/v1/jobs` to reading the job's ``init``
  event on its event stream (opened right after the 202), against sending `POST
  /api/v1/prompt` with `output_format: stream-json` to reading its ``init`` event; median of
  PAIRS alternating pairs, target at most +10 ms;
- 1,000 queued jobs: a server with one run slot held by a job that sleeps, then 1,000 jobs
  submitted one after another: the submission latency (median, p99) and the server's resident
  memory before and after (recorded, no target);
- listing one page of 100,000 jobs (``JobStore.list``, limit 100): a store written directly
  (LISTED records, 60% of them succeeded), then the first page read by a fresh store (which
  reads the index file whole), a second page by the same store (which reads only what was
  appended since), and, for comparison, reading every record as the listing did before the
  index; plus rebuilding the index from the records, what a server does at start (recorded).
  ``python3 bench/bench_jobs.py listing`` runs only this part (it needs no zipapp).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Server, need_pyz, paired, post, record, report_value  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clinvk_lib.job_store import Job, JobStore, new_job_id  # noqa: E402
from clinvk_lib.jsontext import dumps_compact  # noqa: E402

ISSUE = "18"
PAIRS = 40
QUEUED = 1000
LISTED = 100000
PROMPT = {"backend": "claude", "prompt": "hi", "ephemeral": True}


def _first_init(resp: http.client.HTTPResponse) -> None:
    while True:
        line = resp.readline()
        if not line:
            raise RuntimeError("the stream ended before its init event")
        if json.loads(line)["type"] == "init":
            return


def job_first_event(server: Server) -> float:
    """Seconds from sending the job to having its init event; waits for the job to end."""
    submit, follow = server.connect(), server.connect()
    start = time.perf_counter()
    status, raw = post(submit, "/api/v1/jobs", {"kind": "prompt", "request": PROMPT})
    if status != 202:
        raise RuntimeError("POST /api/v1/jobs answered %d: %r" % (status, raw[:300]))
    job_id = json.loads(raw)["id"]
    follow.request("GET", "/api/v1/jobs/%s/events" % job_id)
    resp = follow.getresponse()
    _first_init(resp)
    took = time.perf_counter() - start
    resp.read()                                  # to the job's final event
    submit.close()
    follow.close()
    return took


def stream_first_event(server: Server) -> float:
    conn = server.connect()
    start = time.perf_counter()
    conn.request("POST", "/api/v1/prompt", body=json.dumps(dict(
        PROMPT, output_format="stream-json")).encode(),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    _first_init(resp)
    took = time.perf_counter() - start
    resp.read()
    conn.close()
    return took


def rss_mb(server: Server) -> float:
    with open("/proc/%d/status" % server.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def bench_first_event() -> None:
    with Server() as server:
        r = paired(lambda: job_first_event(server), lambda: stream_first_event(server), PAIRS)
    report_value(ISSUE, "job submission to its first event, minus the synchronous stream's",
                 "job %.1f ms vs POST /api/v1/prompt stream-json %.1f ms to the init event "
                 "(median of %d pairs)" % (r["a_ms"], r["b_ms"], r["pairs"]),
                 r["diff_ms"], "ms", 10.0)


def bench_queued() -> None:
    env = {"CLINVK_SERVER_MAX_CONCURRENT_RUNS": "1",
           "CLINVK_SERVER_MAX_QUEUED_JOBS": str(QUEUED + 10),
           "CLINVK_SERVER_SHUTDOWN_GRACE_SECS": "0"}
    with Server(env) as server:
        conn = server.connect()
        blocker: Dict[str, Any] = {"kind": "prompt", "request": dict(
            PROMPT, prompt="FAKE_SLEEP: 600\nhold the slot")}
        post(conn, "/api/v1/jobs", blocker)
        before = rss_mb(server)
        took = []
        for i in range(QUEUED):
            start = time.perf_counter()
            status, raw = post(conn, "/api/v1/jobs",
                               {"kind": "prompt", "request": dict(PROMPT, prompt="job %d" % i)})
            took.append(time.perf_counter() - start)
            if status != 202:
                raise RuntimeError("job %d: %d %r" % (i, status, raw[:300]))
        after = rss_mb(server)
        conn.close()
    took.sort()
    record(ISSUE, "%d queued jobs: submission latency" % QUEUED,
           "median %.2f ms, p99 %.2f ms, max %.2f ms" % (
               statistics.median(took) * 1000, took[int(len(took) * 0.99)] * 1000,
               took[-1] * 1000))
    record(ISSUE, "%d queued jobs: server resident memory" % QUEUED,
           "%.1f MiB before, %.1f MiB after (+%.1f MiB)" % (before, after, after - before))


def write_records(directory: str, count: int) -> None:
    """``count`` finished prompt job records, written plainly (no fsync: setup, not measured)."""
    os.makedirs(directory)
    for i in range(count):
        job = Job(new_job_id(), "prompt", dict(PROMPT, prompt="job %d" % i),
                  status="succeeded" if i % 5 < 3 else "failed",
                  created_at="2026-01-01T00:00:00.000Z", finished_at="2026-01-01T00:00:01.000Z",
                  result={"backend": "claude", "exit_code": 0, "output": "echo: job %d" % i},
                  owner="k%d" % (i % 10))
        with open(os.path.join(directory, job.id + ".json"), "w") as f:
            f.write(dumps_compact(job.to_dict()))


def timed_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def bench_listing() -> None:
    home = tempfile.mkdtemp(prefix="clinvk-bench-jobs-")
    try:
        write_records(os.path.join(home, "jobs"), LISTED)
        rebuild = timed_ms(JobStore(home).rebuild_index)
        store = JobStore(home)
        first = timed_ms(lambda: store.list(limit=100))
        again = timed_ms(lambda: store.list(limit=100, offset=100))
        filtered = timed_ms(lambda: store.list(status="failed", limit=100))
        every = timed_ms(lambda: [store.read(job_id) for job_id in store.ids()])
    finally:
        shutil.rmtree(home, ignore_errors=True)
    record(ISSUE, "one page (100) of %d jobs" % LISTED,
           "a fresh store %.0f ms (it reads the index whole), then %.0f ms (status filter "
           "%.0f ms); reading every record, as listing did before the index, %.0f ms"
           % (first, again, filtered, every))
    record(ISSUE, "rebuilding the index of %d jobs (server start)" % LISTED, "%.0f ms" % rebuild)


def main() -> None:
    if sys.argv[1:] == ["listing"]:
        bench_listing()
        return
    need_pyz()
    for name in [k for k in os.environ if k.startswith("CLINVK_")]:
        del os.environ[name]                 # the server must not pick up the caller's settings
    bench_first_event()
    bench_queued()
    bench_listing()


if __name__ == "__main__":
    main()
