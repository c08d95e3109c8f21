"""Shared helpers for the benchmarks: paired timings measured side by side in one run.

Every benchmark runs clinvk and its baseline alternately in the same run and reports the
ratio, so a slow or busy machine moves both sides together.

The interpreter: a virtual environment made from the running Python (cached in the temp
dir, no packages). Two things on a developer machine would otherwise swamp the figures: a
site-packages ``.pth`` file that imports a package at every interpreter start (this
machine's sandbox adds one that imports certifi: +30 ms per start), and a pyenv shim found
as ``python3`` on PATH (a bash script: +150 ms per spawn of a ``#!/usr/bin/env python3``
fake). The venv's ``bin`` goes first on PATH, so clinvk, the fakes it spawns and every
baseline run on the same clean interpreter.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_BIN = os.path.join(ROOT, "tests", "fakes", "bin")
PYZ = os.path.join(ROOT, "dist", "clinvk.pyz")
CACHE = os.path.join(tempfile.gettempdir(), "clinvk-bench-cache")


def clean_python() -> str:
    """A venv python made from the running interpreter, with no site-packages of its own
    (created once, then reused)."""
    base = getattr(sys, "_base_executable", sys.executable)
    key = hashlib.sha256((base + sys.version).encode()).hexdigest()[:12]
    venv = os.path.join(CACHE, "venv-%d.%d-%s" % (sys.version_info[:2] + (key,)))
    python = os.path.join(venv, "bin", "python3")
    if not os.path.exists(python):
        os.makedirs(CACHE, exist_ok=True)
        subprocess.run([base, "-m", "venv", "--without-pip", venv], check=True)
    return python


PY = clean_python()


def need_pyz() -> None:
    if not os.path.exists(PYZ):
        sys.exit("build first: ./build_pyz.sh")


def fake_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """An environment whose PATH finds the clean python3 and the fake CLIs first, and in
    which Python may write bytecode caches (a developer shell or test runner may have set
    PYTHONDONTWRITEBYTECODE; a user's does not, and without caches every Python fake would
    compile its modules at every start)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = os.pathsep.join([os.path.dirname(PY), FAKE_BIN, env.get("PATH", "")])
    env.update(extra or {})
    return env


def time_command(argv: Sequence[str], stdin: bytes = b"", env=None,
                 cwd: Optional[str] = None) -> float:
    """Wall seconds of one run of argv (stdout and stderr read and discarded); raises if it
    fails."""
    start = time.perf_counter()
    subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   env=env, cwd=cwd, check=True, start_new_session=True)
    return time.perf_counter() - start


def paired(a: Callable[[], float], b: Callable[[], float], pairs: int) -> Dict[str, float]:
    """Run a and b alternately ``pairs`` times; medians and the ratio median(a)/median(b)."""
    xs: List[float] = []
    ys: List[float] = []
    a()
    b()                                  # warm-up: page cache, pyc files
    for _ in range(pairs):
        xs.append(a())
        ys.append(b())
    ma, mb = statistics.median(xs), statistics.median(ys)
    return {"a_ms": ma * 1000, "b_ms": mb * 1000, "ratio": ma / mb if mb else float("inf"),
            "diff_ms": (ma - mb) * 1000, "pairs": pairs}


def _emit(issue: str, name: str, figures: str, value: str, target: str, ok: bool) -> str:
    # One greppable line per result; run_all.py collects the lines that start with RESULT.
    line = "RESULT | %s | %s | %s | %s | %s | %s" % (issue, name, figures, value, target,
                                                   "OK" if ok else "OVER")
    print(line)
    sys.stdout.flush()
    return line


def record(issue: str, name: str, figures: str) -> None:
    """A figure with no target, printed for context (run_all.py lists these apart)."""
    print("RECORD | %s | %s | %s" % (issue, name, figures))
    sys.stdout.flush()


def report(issue: str, name: str, result: Dict[str, float], limit: float, a_label: str,
           b_label: str) -> bool:
    """A ratio result (median a / median b) against ``limit``; True when within it."""
    ok = result["ratio"] <= limit
    _emit(issue, name, "%s %.1f ms vs %s %.1f ms (median of %d pairs)"
          % (a_label, result["a_ms"], b_label, result["b_ms"], result["pairs"]),
          "%.2fx" % result["ratio"], "<= %.2fx" % limit, ok)
    return ok


def report_value(issue: str, name: str, figures: str, value: float, unit: str, limit: float,
                 at_least: bool = False, fmt: str = "%.1f") -> bool:
    """An absolute result against ``limit`` (at most, or ``at_least``)."""
    ok = value >= limit if at_least else value <= limit
    _emit(issue, name, figures, (fmt % value + " " + unit).strip(),
          ("%s " % (">=" if at_least else "<=")) + (fmt % limit + " " + unit).strip(), ok)
    return ok


def machine() -> str:
    return "%s, %d cores, Python %s" % (platform.platform(terse=True), os.cpu_count() or 0,
                                        platform.python_version())


def holding_fake(bindir: str, name: str, lines: Sequence[str], hold: float) -> str:
    """Write a zero-work fake CLI ``bindir/name``: a shell script that reads its stdin to the
    end, prints ``lines[0]``, sleeps ``hold`` seconds, then prints the other lines. A shell
    and a sleep cost a few hundred kilobytes and no CPU, so hundreds of them really run at
    once, where as many Python fakes would spend seconds of CPU just starting."""
    quoted = ["'%s'" % line.replace("'", "'\\''") for line in lines]
    script = ("#!/bin/sh\nwhile IFS= read -r _; do :; done\nprintf '%%s\\n' %s\nsleep %g\n"
              "printf '%%s\\n' %s\n" % (quoted[0], hold, " ".join(quoted[1:])))
    path = os.path.join(bindir, name)
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o755)
    return path


# (status, NDJSON events, seconds the client waited) of one streaming client.
StreamResult = Tuple[int, List[Dict[str, Any]], float]


def concurrent_clients(clients: int, one: Callable[[], Tuple[int, List[Dict[str, Any]]]],
                       seconds: float) -> Tuple[List[StreamResult], float]:
    """Run ``one()`` -> (status, events) in ``clients`` threads (256 KiB stacks) released
    together, waiting for them until ``seconds`` after the start; a client that raises counts
    as status -1 with one client_error event. ([StreamResult], wall seconds)."""
    results: List[StreamResult] = []
    lock = threading.Lock()
    gate = threading.Barrier(clients)

    def client() -> None:
        gate.wait()
        started = time.monotonic()
        try:
            status, events = one()
        except Exception as exc:  # noqa: BLE001 - a failed client is counted, not raised
            status, events = -1, [{"type": "client_error", "error": repr(exc)}]
        with lock:
            results.append((status, events, time.monotonic() - started))

    threading.stack_size(256 * 1024)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    threading.stack_size(0)
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, seconds - (time.monotonic() - began)))
    return results, time.monotonic() - began


def stream_outcomes(results: List[StreamResult]) -> Tuple[int, List[float], List[Any]]:
    """(how many streams ended with done, exit code 0 and no error event; every client's
    wait, sorted; the first three failures as (status, last event))."""
    succeeded = sum(1 for status, events, _ in results
                    if status == 200 and events and events[-1]["type"] == "done"
                    and events[-1]["content"].get("exit_code") == 0
                    and not any(e["type"] == "error" for e in events))
    held = sorted(d for _, _, d in results)
    failures = [(s, e[-1] if e else None) for s, e, _ in results
                if not (s == 200 and e and e[-1]["type"] == "done")][:3]
    return succeeded, held, failures


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- a clinvk server under test ---------------------------------------------------------------


class Server:
    """``clinvk serve --port 0`` on loopback with a fresh CLINVK_HOME; a context manager.

    ``env`` holds extra environment (CLINVK_SERVER_* settings, FAKE_CLI_* modes)."""

    def __init__(self, env: Optional[Dict[str, str]] = None, pyz: str = PYZ) -> None:
        self.home = tempfile.mkdtemp(prefix="clinvk-bench-home-")
        self.env = fake_env(dict({"CLINVK_HOME": self.home}, **(env or {})))
        self.log = open(os.path.join(self.home, "server.log"), "w+b")
        self.proc = subprocess.Popen([PY, pyz, "serve", "--host", "127.0.0.1", "--port", "0"],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=self.env,
                                     start_new_session=True)
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.log.seek(0)
            found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", self.log.read())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        self.log.seek(0)
        raise RuntimeError("clinvk serve did not start:\n" + self.log.read().decode())

    def connect(self, timeout: float = 60) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def peak_rss_mb(self) -> float:
        """The server's peak resident set (VmHWM) in MiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            kb = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))
        return kb / 1024.0

    def running_children(self) -> int:
        """How many child processes (backend runs) the server has right now."""
        count = 0
        for task in glob.glob("/proc/%d/task/*/children" % self.proc.pid):
            try:
                with open(task) as f:
                    count += len(f.read().split())
            except OSError:
                pass                    # a thread that just ended
        return count

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def post(conn: http.client.HTTPConnection, path: str, body: Dict[str, Any]) -> Tuple[int, bytes]:
    """POST a JSON body on a keep-alive connection; (status, whole response body)."""
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


class Timed:
    """One timed POST: ``took`` seconds, ``status``, the ``raw`` body, the JSON ``answer`` and
    the ``session`` it names (X-Clinvk-Session-Id, or the native answer's session_id)."""

    def __init__(self, conn: http.client.HTTPConnection, path: str, body: Dict[str, Any],
                 headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(body).encode()
        start = time.perf_counter()
        conn.request("POST", path, body=data,
                     headers=headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        self.raw = resp.read()
        self.took = time.perf_counter() - start
        self.status = resp.status
        self.answer: Dict[str, Any] = json.loads(self.raw)
        self.session = resp.getheader("X-Clinvk-Session-Id") or self.answer.get("session_id")

    def ok(self) -> bool:
        return self.status == 200 and not self.answer.get("exit_code")


def reply_text(timed: Timed, path: str, reply_of: Callable[[Dict[str, Any]], str]) -> str:
    """The reply text of a timed answer; raises when there is none."""
    text = reply_of(timed.answer)
    if not text:
        raise RuntimeError("%s answered without a reply: %s" % (path, timed.raw[:500]))
    return text


def check_same_command(prefix: str, calls: Sequence[Callable[[http.client.HTTPConnection], str]],
                       pairs: Sequence[Tuple[int, int, str]]) -> None:
    """Each of ``calls`` (a request giving its reply text) once, on a server whose fake records
    its runs: for each (a, b, label) of ``pairs``, run b (the ``label`` route) must be the very
    same command (argv, stdin, workdir) as run a, and every reply the same text, or a paired
    comparison would not be like for like."""
    record = os.path.join(tempfile.mkdtemp(prefix=prefix), "runs.jsonl")
    with Server({"FAKE_CLI_RECORD": record}) as server:
        conn = server.connect()
        replies = [call(conn) for call in calls]
        conn.close()
    with open(record) as f:
        runs: List[Dict[str, Any]] = [json.loads(line) for line in f]
    if len(runs) != len(calls):
        raise RuntimeError("expected %d recorded runs, got %d" % (len(calls), len(runs)))
    for a, b, label in pairs:
        for key in ("argv", "stdin", "cwd"):
            if runs[a][key] != runs[b][key]:
                raise RuntimeError("%s runs a different %s than the native route: %r vs %r"
                                   % (label, key, runs[b][key], runs[a][key]))
    if len(set(replies)) != 1:
        raise RuntimeError("the routes answered different texts: %r" % replies)
    print("same command on every route: %s (stdin %r)" % (" ".join(runs[0]["argv"]),
                                                          runs[0]["stdin"]))


def post_ok(conn: http.client.HTTPConnection, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """POST and insist on a 200 whose body is a JSON object without an error."""
    status, data = post(conn, path, body)
    answer = json.loads(data)
    if status != 200 or answer.get("exit_code"):
        raise RuntimeError("%s answered %d: %s" % (path, status, data[:500]))
    return answer


def dry_run_command(conn: http.client.HTTPConnection,
                    body: Dict[str, Any]) -> Tuple[List[str], str]:
    """The exact argv and workdir the server runs for ``body`` (via ``dry_run``), so a
    baseline spawns the very same command."""
    plain = post_ok(conn, "/api/v1/prompt", dict(body, dry_run=True, output_format="json"))
    if body.get("output_format") != "stream-json":
        return plain["command"], plain["workdir"]
    # A streamed dry run tells the command only as text: "would run: ARGV" (shell-quoted).
    status, data = post(conn, "/api/v1/prompt", dict(body, dry_run=True))
    for line in data.splitlines():
        event = json.loads(line)
        text = event.get("content", {}).get("text", "")
        if event["type"] == "message" and text.startswith("would run: "):
            return shlex.split(text[len("would run: "):]), plain["workdir"]
    raise RuntimeError("no command in the streamed dry run (%d): %s" % (status, data[:500]))
