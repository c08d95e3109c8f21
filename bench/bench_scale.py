"""Issue 8 benchmarks: scale-out (run: python3 bench/bench_scale.py).

1. Through nginx vs direct: how much later the first NDJSON event reaches a client through
   deploy/nginx.conf (TLS, Debian's nginx, two clinvk instances sharing one CLINVK_HOME) than
   straight from an instance. Both sides measure from the moment the fake backend flushed its
   first line (the marking fake of bench_server.py) to the client having the event, on a
   connection opened (and its TLS handshake done) beforehand; median of 100 alternating pairs.
   Target: the proxy adds at most 5 ms.
2. 1,000 concurrent streaming requests on one instance, each held 5 s by a zero-work shell
   fake (the Python fake's own stream-json lines, a sleep after the first): all succeed; the
   server's peak RSS (VmHWM), peak thread count and peak open files are recorded. The bench
   raises its open-file limit (the server inherits it).

Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from bench_server import wait_mark, write_marking_fake  # noqa: E402
from common import (Server, concurrent_clients, dry_run_command, fake_env,  # noqa: E402
                    holding_fake, machine, need_pyz, paired, raise_nofile, report_value,
                    stream_outcomes)
from tests.test_nginx import (HOSTNAME, NGINX, free_port, main_config,  # noqa: E402
                              self_signed_certificate, site_config)

ISSUE = "8"
STREAM_BODY = json.dumps({"backend": "claude", "prompt": "hi", "output_format": "stream-json",
                          "ephemeral": True}).encode()
HEADERS = {"Content-Type": "application/json", "Host": HOSTNAME}


# -- 1. first event through nginx ----------------------------------------------------------------


class Nginx:
    """nginx running deploy/nginx.conf in front of ``ports``; a context manager."""

    def __init__(self, ports: List[int]) -> None:
        self.tmp = tempfile.mkdtemp(prefix="clinvk-bench-nginx-")
        self.port = free_port()
        self.cert, key = self_signed_certificate(self.tmp)
        site = os.path.join(self.tmp, "clinvk.conf")
        with open(site, "w") as f:
            f.write(site_config(ports, self.port, free_port(), self.cert, key,
                                os.path.join(self.tmp, "access.log")))
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(main_config(self.tmp, site))
        self.proc = subprocess.Popen([NGINX, "-p", self.tmp, "-c", conf, "-e",
                                      os.path.join(self.tmp, "error.log")],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("nginx did not start")

    def connect(self) -> http.client.HTTPConnection:
        if self.cert:
            ctx = ssl.create_default_context(cafile=self.cert)
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.connect()
        return conn

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "Nginx":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def first_event_after_mark(conn: http.client.HTTPConnection, mark_file: str) -> float:
    """Seconds from the fake's first line leaving it to this client having the init event,
    on an open connection (closed afterwards, which cancels the run)."""
    os.truncate(mark_file, 0)
    try:
        conn.request("POST", "/api/v1/prompt", body=STREAM_BODY, headers=HEADERS)
        resp = conn.getresponse()
        line = resp.readline()
        got = time.monotonic()
        if resp.status != 200 or json.loads(line)["type"] != "init":
            raise RuntimeError("unexpected first event (%d): %r" % (resp.status, line))
        return got - wait_mark(mark_file)
    finally:
        conn.close()


def bench_proxy_first_event(pairs: int = 100) -> None:
    if not os.access(NGINX, os.X_OK):
        print("SKIP | %s | nginx is not installed (apt-get install nginx)" % ISSUE)
        return
    bindir = tempfile.mkdtemp(prefix="clinvk-bench-marking-fake-")
    _, mark_file = write_marking_fake(bindir)
    home = tempfile.mkdtemp(prefix="clinvk-bench-home-")
    env = {"CLINVK_HOME": home, "FAKE_CLI_MODE": "slow", "FAKE_CLI_DELAY": "0.05",
           "BENCH_FIRST_LINE_FILE": mark_file, "CLINVK_SERVER_TRUSTED_PROXIES": "127.0.0.1",
           "CLINVK_SERVER_ALLOWED_HOSTS": HOSTNAME}
    env["PATH"] = bindir + os.pathsep + fake_env()["PATH"]
    try:
        with Server(env) as one, Server(env) as two, Nginx([one.port, two.port]) as nginx:
            direct = lambda: first_event_after_mark(one.connect(), mark_file)  # noqa: E731
            proxied = lambda: first_event_after_mark(nginx.connect(), mark_file)  # noqa: E731
            r = paired(proxied, direct, pairs)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    report_value(ISSUE, "first NDJSON event through nginx minus direct",
                 "through nginx (%s) %.2f ms vs direct %.2f ms after the backend's first line "
                 "(median of %d pairs)" % ("TLS" if nginx.cert else "plain HTTP", r["a_ms"],
                                           r["b_ms"], r["pairs"]),
                 r["diff_ms"], "ms", 5.0, fmt="%.2f")


# -- 2. 1,000 concurrent streams ------------------------------------------------------------------


def _status_field(pid: int, name: str) -> int:
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"%s:\s+(\d+)" % name, f.read()).group(1))


class Sampler:
    """Peak thread count and open files of a process, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = self.fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.threads = max(self.threads, _status_field(self.pid, "Threads"))
                self.fds = max(self.fds, len(os.listdir("/proc/%d/fd" % self.pid)))
            except (OSError, AttributeError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def stream(server: Server, body: bytes) -> Tuple[int, List[Dict[str, Any]]]:
    conn = server.connect(timeout=120)
    try:
        conn.request("POST", "/api/v1/prompt", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, [json.loads(x) for x in data.splitlines() if x.strip()]
    finally:
        conn.close()


def bench_concurrent_streams(clients: int = 1000, hold: float = 5.0) -> None:
    limit = raise_nofile()
    body = {"backend": "claude", "prompt": "hi", "output_format": "stream-json",
            "ephemeral": True}
    with Server() as probe:
        conn = probe.connect()
        command, workdir = dry_run_command(conn, body)
        conn.close()
    bindir = tempfile.mkdtemp(prefix="clinvk-bench-holding-fake-")
    # What the Python fake prints for this stream-json run, replayed by a zero-work shell fake
    # so 1,000 of them run at once where 1,000 Python fakes could not on a small machine.
    lines = subprocess.run(command, input=b"hi", stdout=subprocess.PIPE, cwd=workdir,
                           env=fake_env(), check=True).stdout.decode().splitlines()
    holding_fake(bindir, "claude", lines, hold)
    env = {"PATH": bindir + os.pathsep + fake_env()["PATH"],
           "CLINVK_SERVER_MAX_CONCURRENT_RUNS": str(clients + 100),
           "CLINVK_SERVER_QUEUE_TIMEOUT_SECS": "120"}
    data = json.dumps(body).encode()
    try:
        with Server(env) as server:
            sampler = Sampler(server.proc.pid)
            results, wall = concurrent_clients(clients, lambda: stream(server, data), 300)
            sampler.stop()
            rss = server.peak_rss_mb()
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    ok, held, failures = stream_outcomes(results)
    held = held or [0.0]
    report_value(ISSUE, "%d concurrent streams held %gs on one instance: succeeded"
                 % (clients, hold),
                 "%d of %d ended with done/exit 0 in %.1f s wall (each held %.1f-%.1f s, median "
                 "%.1f s; open-file limit %d)%s"
                 % (ok, clients, wall, held[0], held[-1], statistics.median(held), limit,
                    "; first failures: %r" % failures if failures else ""),
                 ok, "streams", clients, at_least=True, fmt="%d")
    print("RECORD | %s | %d concurrent streams: server peak RSS %.1f MiB, peak threads %d, "
          "peak open files %d" % (ISSUE, clients, rss, sampler.threads, sampler.fds))
    sys.stdout.flush()


def main() -> None:
    need_pyz()
    print("# %s" % machine())
    bench_proxy_first_event()
    bench_concurrent_streams()


if __name__ == "__main__":
    main()
