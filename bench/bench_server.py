"""Issue 5 benchmarks: the HTTP server (run: python3 bench/bench_server.py).

Every baseline spawns the very command the server runs (its argv from a ``dry_run`` request,
the prompt on stdin, the same workdir), each in its own session like clinvk's runner.

1. `POST /api/v1/prompt` on the zero-work fake against spawning that fake directly, median of
   100 pairs, target <= 1.5x: once with ``ephemeral: true`` and once the default way (a
   session is saved).
2. First NDJSON event: how long after the backend printed its first line the client has the
   event it became, against how long a direct reader of the backend's stdout takes to see that
   line; target: at most 5 ms later. The fake runs in ``FAKE_CLI_MODE=slow`` (it stalls before
   every line), through a wrapper that notes ``time.monotonic()`` (one clock for every process
   on Linux) right after it flushed its first line.
3. 500 concurrent streaming requests (sessions saved), each held 5 s by a zero-work shell
   fake (the Python fake's own stream-json lines, a sleep after the first: 500 Python fakes
   would spend seconds of CPU just starting on 2 cores, and the streams would not overlap):
   all succeed, server peak RSS (VmHWM) <= 150 MB; ``CLINVK_SERVER_MAX_CONCURRENT_RUNS=600``.
4. Throughput at concurrency 16 on the zero-work fake: at least 95% (issue 20) of the rate of
   the same spawns from a plain 16-thread pool; once with 16 run slots and once with the
   server's default limit (``max(4, 2 x CPUs)``, so requests beyond it queue). The requests
   run in a fresh directory outside any git repository (``server.default_workdir``); inside
   one, every run first reads the repository's git configuration (``backends/gitenv.py``),
   recorded apart. Where the time goes: the CPU the server process and its children (its
   process supervisor and the fakes) spend per request, against the pool's children per spawn,
   from ``/proc/<pid>/stat`` and ``getrusage``.
5. Start-up and idle memory (issue 20): from starting ``clinvk serve`` to its first ``200``
   on ``GET /health`` (polled every 2 ms on a port chosen beforehand), median of 10 starts,
   target <= 0.15 s; its resident memory (VmRSS) one second after that, target <= 25 MB.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (FAKE_BIN, PY, PYZ, ROOT, Server, concurrent_clients,  # noqa: E402
                    dry_run_command, fake_env, holding_fake, need_pyz, paired, post_ok,
                    raise_nofile, record, report, report_value, stream_outcomes)

ISSUE = "5"
ISSUE_20 = "20"   # throughput, start-up and idle memory targets of performance round 2
PROMPT = "hi"
STREAM_BODY = {"backend": "claude", "prompt": PROMPT, "output_format": "stream-json",
               "ephemeral": True}

# A fake claude that notes when its first line is out (see 2. above).
MARKING_FAKE = """#!/usr/bin/env python3
import os, sys, time
sys.path.insert(0, %r)
import fake_cli
_write = fake_cli.Run._write
def write(self, text):
    _write(self, text)
    if self.lines_written == 0:
        with open(os.environ["BENCH_FIRST_LINE_FILE"], "a") as f:
            f.write("%%.9f\\n" %% time.monotonic())
fake_cli.Run._write = write
sys.exit(fake_cli.main("claude", sys.argv[1:]))
""" % os.path.dirname(FAKE_BIN)


def spawn(command: List[str], workdir: str, env: Dict[str, str]) -> None:
    """Run ``command`` the way the server's runner does; raise if it fails."""
    subprocess.run(command, input=PROMPT.encode(), stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, cwd=workdir, env=env, check=True,
                   start_new_session=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- 1. prompt overhead --------------------------------------------------------------------------


def bench_prompt_overhead() -> None:
    with Server() as server:
        conn = server.connect()
        for label, body in (("ephemeral", {"backend": "claude", "prompt": PROMPT,
                                           "ephemeral": True}),
                            ("with session", {"backend": "claude", "prompt": PROMPT})):
            command, workdir = dry_run_command(conn, body)
            r = paired(lambda: timed(lambda: post_ok(conn, "/api/v1/prompt", body)),
                       lambda: timed(lambda: spawn(command, workdir, server.env)), 100)
            report(ISSUE, "POST /api/v1/prompt (%s) vs fake direct" % label, r, 1.5,
                   "server", "fake direct")
        conn.close()


# -- 2. first NDJSON event ---------------------------------------------------------------------


def _marks(path: str) -> List[float]:
    try:
        with open(path) as f:
            return [float(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _first_line_direct(command: List[str], workdir: str, env: Dict[str, str],
                       mark_file: str) -> float:
    """Seconds between the fake's first line leaving it and this reader having it."""
    os.truncate(mark_file, 0)
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=workdir, env=env,
                            start_new_session=True)
    proc.stdin.write(PROMPT.encode())
    proc.stdin.close()
    line = proc.stdout.readline()
    got = time.monotonic()
    mark = wait_mark(mark_file) if line else 0.0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    if not line:
        raise RuntimeError("the fake printed nothing")
    return got - mark


def _first_event_server(server: Server, mark_file: str) -> float:
    """Seconds between the fake's first line leaving it and the client having the NDJSON event
    made from it (the ``init`` event carrying the backend's session id)."""
    os.truncate(mark_file, 0)
    conn = server.connect()
    conn.request("POST", "/api/v1/prompt", body=json.dumps(STREAM_BODY).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    line = resp.readline()
    got = time.monotonic()
    mark = wait_mark(mark_file)
    conn.close()                     # the server cancels the run when the client goes
    event = json.loads(line)
    if resp.status != 200 or event["type"] != "init" or not event["content"].get(
            "backend_session_id"):
        raise RuntimeError("unexpected first event (%d): %r" % (resp.status, line))
    return got - mark


def write_marking_fake(bindir: str) -> Tuple[str, str]:
    """MARKING_FAKE as ``bindir/claude``: (its path, the empty file it writes its marks to)."""
    fake = os.path.join(bindir, "claude")
    with open(fake, "w") as f:
        f.write(MARKING_FAKE)
    os.chmod(fake, 0o755)
    mark_file = os.path.join(bindir, "first-line")
    open(mark_file, "w").close()
    return fake, mark_file


def wait_mark(mark_file: str) -> float:
    """The first mark in ``mark_file``. The mark is written just after the line is flushed:
    the reader may be a hair earlier, so it waits for it (before the fake is stopped)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        marks = _marks(mark_file)
        if marks:
            return marks[0]
        time.sleep(0.001)
    raise RuntimeError("the fake left no first-line mark")


def bench_first_event() -> None:
    bindir = tempfile.mkdtemp(prefix="clinvk-bench-marking-fake-")
    fake, mark_file = write_marking_fake(bindir)
    extra = {"FAKE_CLI_MODE": "slow", "FAKE_CLI_DELAY": "0.1",
             "BENCH_FIRST_LINE_FILE": mark_file}
    env = fake_env(extra)
    env["PATH"] = bindir + os.pathsep + env["PATH"]
    with Server(env) as server:
        conn = server.connect()
        command, workdir = dry_run_command(conn, STREAM_BODY)
        conn.close()
        if command[0] != fake:
            raise RuntimeError("the server would run %s, not the marking fake" % command[0])
        r = paired(lambda: _first_event_server(server, mark_file),
                   lambda: _first_line_direct(command, workdir, server.env, mark_file), 20)
        report_value(ISSUE, "first NDJSON event after the backend's first line, minus a direct "
                     "reader's", "server %.2f ms vs direct read %.2f ms after the line left the "
                     "fake (median of %d pairs)" % (r["a_ms"], r["b_ms"], r["pairs"]),
                     r["diff_ms"], "ms", 5.0, fmt="%.2f")


# -- 3. 500 concurrent streams ------------------------------------------------------------------


def _stream_lines(conn_factory, body: Dict[str, Any]) -> Tuple[int, List[Dict[str, Any]]]:
    conn = conn_factory()
    try:
        conn.request("POST", "/api/v1/prompt", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            return resp.status, []
        return resp.status, [json.loads(x) for x in data.splitlines() if x.strip()]
    finally:
        conn.close()


def bench_concurrent_streams(clients: int = 500, hold: float = 5.0) -> None:
    raise_nofile()
    body = {"backend": "claude", "prompt": PROMPT, "output_format": "stream-json"}
    with Server() as probe:
        conn = probe.connect()
        command, workdir = dry_run_command(conn, body)
        conn.close()
    lines = subprocess.run(command, input=PROMPT.encode(), stdout=subprocess.PIPE, cwd=workdir,
                           env=probe.env, check=True).stdout.decode().splitlines()
    bindir = tempfile.mkdtemp(prefix="clinvk-bench-holding-fake-")
    holding_fake(bindir, "claude", lines, hold)
    env = {"PATH": bindir + os.pathsep + fake_env()["PATH"],
           "CLINVK_SERVER_MAX_CONCURRENT_RUNS": str(clients + 100)}
    with Server(env) as server:
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], server.running_children())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results, wall = concurrent_clients(
            clients, lambda: _stream_lines(lambda: server.connect(timeout=120), body), 180)
        done.set()
        sampler.join()
        rss = server.peak_rss_mb()
    succeeded, held, failures = stream_outcomes(results)
    report_value(ISSUE, "%d concurrent streams held %gs: succeeded" % (clients, hold),
                 "%d of %d streams ended with done/exit 0 in %.1f s wall (each held %.1f-%.1f s,"
                 " median %.1f s; at most %d backends running at once)%s"
                 % (succeeded, clients, wall, held[0] if held else 0, held[-1] if held else 0,
                    statistics.median(held) if held else 0, peak[0],
                    "; first failures: %r" % failures if failures else ""),
                 succeeded, "streams", clients, at_least=True, fmt="%d")
    report_value(ISSUE, "%d concurrent streams: server peak RSS (VmHWM)" % clients,
                 "clinvk serve peak RSS %.1f MiB" % rss, rss, "MiB", 150)


# -- 4. throughput at concurrency 16 -------------------------------------------------------------


def bench_throughput(slots: Optional[int] = None, width: int = 16, requests: int = 128,
                     rounds: int = 3, in_repository: bool = False, pyz: str = PYZ) -> None:
    """``slots``: server.max_concurrent_runs (None: the server's default). ``in_repository``:
    the requests run in this checkout (a git repository) instead of a fresh directory.
    ``pyz``: the build served (another one's figures are recorded, not checked)."""
    body = {"backend": "claude", "prompt": PROMPT, "ephemeral": True}
    env = {"CLINVK_SERVER_MAX_CONCURRENT_RUNS": str(slots)} if slots else {}
    workdir = ROOT if in_repository else tempfile.mkdtemp(prefix="clinvk-bench-workdir-")
    env["CLINVK_SERVER_DEFAULT_WORKDIR"] = workdir
    with Server(env, pyz=pyz) as server:
        conn = server.connect()
        command, workdir = dry_run_command(conn, body)
        conn.close()
        local = threading.local()

        def request(_: int) -> None:
            if getattr(local, "conn", None) is None:
                local.conn = server.connect()
            post_ok(local.conn, "/api/v1/prompt", body)

        def via_server() -> float:
            with ThreadPoolExecutor(width) as ex:
                return timed(lambda: list(ex.map(request, range(requests))))

        def via_pool() -> float:
            with ThreadPoolExecutor(width) as ex:
                return timed(lambda: list(ex.map(lambda _: spawn(command, workdir, server.env),
                                                 range(requests))))

        served, spawned = cpu_of(server.proc.pid), children_cpu()
        r = paired(via_server, via_pool, rounds)
        served, spawned = cpu_of(server.proc.pid) - served, children_cpu() - spawned
    server_rate = requests / (r["a_ms"] / 1000)
    pool_rate = requests / (r["b_ms"] / 1000)
    limit = ("max_concurrent_runs=%d" % slots if slots
             else "default max_concurrent_runs=max(4, 2 x CPUs)=%d"
             % max(4, 2 * (os.cpu_count() or 1)))
    where = "in a git repository" if in_repository else "outside any repository"
    if pyz != PYZ:
        where += ", %s" % os.path.basename(pyz)
    name = ("throughput at concurrency %d (%s, %s): server rate / %d-thread pool rate"
            % (width, limit, where, width))
    figures = ("server %.1f req/s vs pool %.1f spawns/s (%d requests per round, median of %d "
               "rounds)" % (server_rate, pool_rate, requests, rounds))
    if in_repository or pyz != PYZ:
        record(ISSUE_20, name, "%s: %.0f%%" % (figures, 100.0 * server_rate / pool_rate))
    else:
        report_value(ISSUE_20, name, figures, 100.0 * server_rate / pool_rate, "%", 95.0,
                     at_least=True)
    n = requests * (rounds + 1)          # paired() adds one warm-up run of each side
    record(ISSUE_20, "CPU per request, %s, %s: server process / its children (supervisor and "
           "fakes) / the pool's children per spawn" % (limit, where),
           "%.1f ms / %.1f ms / %.1f ms (user+system)" % (served.own * 1000 / n,
                                                          served.children * 1000 / n,
                                                          spawned * 1000 / n))


class _Cpu:
    """CPU seconds of a process: its own (every thread) and its reaped children's."""

    def __init__(self, own: float, children: float) -> None:
        self.own = own
        self.children = children

    def __sub__(self, other: "_Cpu") -> "_Cpu":
        return _Cpu(self.own - other.own, self.children - other.children)


def cpu_of(pid: int) -> _Cpu:
    """``pid``'s CPU; its children's includes its live process supervisor's, own and reaped
    children's (the fakes it started are not yet counted as the server's children)."""
    own, children = _stat_cpu(pid)
    for child in _children(pid):
        try:
            with open("/proc/%d/cmdline" % child, "rb") as f:
                if b"# clinvk-supervisor" not in f.read():
                    continue
            children += sum(_stat_cpu(child))
        except OSError:
            pass
    return _Cpu(own, children)


def _stat_cpu(pid: int) -> Tuple[float, float]:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = [int(x) / os.sysconf("SC_CLK_TCK") for x in fields[11:15]]
    return ticks[0] + ticks[1], ticks[2] + ticks[3]


def _children(pid: int) -> List[int]:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- 5. start-up and idle memory -----------------------------------------------------------------


def _start_to_health(port: int, env: Dict[str, str], pyz: str = PYZ) -> Tuple[float, float]:
    """(seconds from starting ``clinvk serve`` (``pyz``) to its first 200 on /health, its VmRSS
    in MiB one second later)."""
    started = time.perf_counter()
    proc = subprocess.Popen([PY, pyz, "serve", "--host", "127.0.0.1", "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    took = time.perf_counter() - started
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("clinvk serve exited with %d" % proc.returncode)
                time.sleep(0.002)
            finally:
                conn.close()
        time.sleep(1.0)
        with open("/proc/%d/status" % proc.pid) as f:
            rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024.0
        return took, rss
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def bench_start_and_idle_memory(starts: int = 10, before: str = "") -> None:
    """Start-up and idle RSS of dist/clinvk.pyz; with ``before``, of that build too, the
    starts of the two alternating (RECORD lines for both)."""
    env = fake_env({"CLINVK_HOME": tempfile.mkdtemp(prefix="clinvk-bench-home-")})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    builds = [before, PYZ] if before else [PYZ]
    for pyz in builds:
        _start_to_health(port, env, pyz)                 # warm-up: page cache, unpacked copy
    runs: Dict[str, List[Tuple[float, float]]] = {pyz: [] for pyz in builds}
    for _ in range(starts):
        for pyz in builds:
            runs[pyz].append(_start_to_health(port, env, pyz))
    if before:
        for label, pyz in (("before", before), ("after", PYZ)):
            record(ISSUE_20, "server start to its first /health and idle RSS, %s (%s)"
                   % (label, os.path.basename(pyz)),
                   "%.3f s, %.1f MiB (medians of %d alternating starts)"
                   % (statistics.median(t for t, _ in runs[pyz]),
                      statistics.median(m for _, m in runs[pyz]), starts))
        return
    took = statistics.median(t for t, _ in runs[PYZ])
    rss = statistics.median(m for _, m in runs[PYZ])
    report_value(ISSUE_20, "server start to its first /health", "median of %d starts" % starts,
                 took, "s", 0.15, fmt="%.3f")
    report_value(ISSUE_20, "server idle RSS (VmRSS) one second after its first /health",
                 "median of %d starts" % starts, rss, "MiB", 25.0)


PARTS = ("prompt", "first-event", "streams", "throughput", "startup")


def main() -> None:
    """``bench_server.py [PART...] [--before OTHER.pyz]``: every part (PARTS) or the ones
    named; ``--before``: start-up, idle memory and in-repository throughput of another build
    beside this one's."""
    need_pyz()
    args = sys.argv[1:]
    before = ""
    if "--before" in args:
        at = args.index("--before")
        before = os.path.abspath(args[at + 1])
        del args[at:at + 2]
    parts = args or list(PARTS)
    if before:
        bench_start_and_idle_memory(before=before)
        for pyz in (before, PYZ):
            bench_throughput(slots=16, in_repository=True, pyz=pyz)
        return
    if "prompt" in parts:
        bench_prompt_overhead()
    if "first-event" in parts:
        bench_first_event()
    if "streams" in parts:
        bench_concurrent_streams()
    if "throughput" in parts:
        bench_throughput(slots=16)
        bench_throughput()
        bench_throughput(slots=16, in_repository=True)
    if "startup" in parts:
        bench_start_and_idle_memory()


if __name__ == "__main__":
    main()
