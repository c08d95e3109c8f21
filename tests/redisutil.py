"""A real ``redis-server`` (Debian's package) for tests: on a free 127.0.0.1 port, in a
temporary directory, with nothing saved to disk, killed when the test ends.

    with RedisServer(tmp_path) as redis:
        Client(redis.url)

Without redis-server the tests that need it are skipped with a message saying how to get it;
under CI=true they fail instead (test.sh installs the package there).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Dict, List, Optional

import pytest

from tests.serveproc import CLINVK, dump_yaml, fake_cli_env
from tests.serverutil import wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
OPENSSL = shutil.which("openssl")


def require_redis_server() -> None:
    """Skip the calling test without redis-server, or fail it under CI=true."""
    if os.access(REDIS_SERVER, os.X_OK):
        return
    message = "redis-server is not installed (Debian package redis-server; test.sh installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + ": CI must have it")
    pytest.skip(message)


def store_settings(redis: "RedisServer", **server: Any) -> Dict[str, Any]:
    """A ``clinvk serve`` / ``clinvk worker`` config on ``redis``'s store, its jobs reclaimed
    after 3 s unheard, with the other ``server.*`` settings given."""
    return {"server": dict({"store": redis.url, "job_visibility_timeout_secs": 3}, **server)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A started redis-server. ``url`` reaches it (with ``password`` when one is required);
    ``tls_url`` too when started with ``tls=True`` (then ``ca_file`` signs its certificate).
    ``stop()`` kills it and ``start()`` brings it back on the same port, empty."""

    def __init__(self, directory: str, password: str = "", tls: bool = False) -> None:
        require_redis_server()
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.ca_file = ""
        if tls:
            self._make_certificate()
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    @property
    def tls_url(self) -> str:
        auth = ":%s@" % self.password if self.password else ""
        return "rediss://%slocalhost:%d/0" % (auth, self.tls_port)

    def argv(self) -> List[str]:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--logfile", os.path.join(self.directory, "redis.log")]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.tls_port:
            d = self.directory
            argv += ["--tls-port", str(self.tls_port), "--tls-cert-file",
                     os.path.join(d, "server.crt"), "--tls-key-file",
                     os.path.join(d, "server.key"), "--tls-ca-cert-file", self.ca_file,
                     "--tls-auth-clients", "no"]
        return argv

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(self._listening, 10.0) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("redis-server did not start listening on 127.0.0.1:%d; its "
                               "log: %s" % (self.port, self.log_tail()))

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log")) as f:
                return " | ".join(f.read().splitlines()[-5:])
        except OSError as exc:
            return str(exc)

    def _listening(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return True     # exited: start() reports it
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait()

    def _make_certificate(self) -> None:
        if not OPENSSL:
            pytest.skip("openssl is not installed: no certificate for the TLS test")
        d = self.directory
        self.ca_file = os.path.join(d, "server.crt")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", os.path.join(d, "server.key"), "-out", self.ca_file],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class WorkerProcess:
    """A started ``clinvk worker`` driving the fake CLIs, in a process group of its own (so
    ``kill()`` takes its backend runs with it, as the death of a machine would); every line
    of its stderr lands in ``log_lines``."""

    def __init__(self, home: str, config: Dict[str, Any],
                 env: Optional[Dict[str, str]] = None) -> None:
        os.makedirs(home, exist_ok=True)
        path = os.path.join(home, "worker.yaml")
        with open(path, "w") as f:
            f.write(dump_yaml(config))
        self.proc = subprocess.Popen(
            [sys.executable, CLINVK, "worker", "--config", path], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=home,
            env=fake_cli_env(home, os.path.join(home, "fake-state"), env),
            start_new_session=True)
        self.log_lines: List[str] = []
        while not any(" worker " in line for line in self.log_lines):   # its start-up line
            line = self.proc.stderr.readline().decode("utf-8", "replace")
            if not line:
                self.kill()
                raise AssertionError("clinvk worker did not start: %r" % self.log_lines)
            self.log_lines.append(line.rstrip("\n"))
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        for raw in self.proc.stderr:
            self.log_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def kill(self) -> None:
        """SIGKILL the worker and everything it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (the worker drains), then the exit code; SIGKILL if it does not come."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)    # nothing may outlive it
        except ProcessLookupError:
            pass
        return code
