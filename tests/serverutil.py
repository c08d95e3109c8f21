"""The HTTP server running in-process for tests: 127.0.0.1, a free port, the fake CLIs on
PATH, a private CLINVK_HOME. Use the ``server`` fixture (default settings) or
``start_server`` (``start_server(**{"server.max_concurrent_runs": 1})``).

Test modules import the fixtures: ``from tests.serverutil import server, start_server``.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

from clinvk_lib import config
from clinvk_lib.server import app as server_app


class Reply:
    """A finished HTTP exchange: status, headers, body bytes."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return "Reply(%d, %r)" % (self.status, self.body[:300])


class RunningServer:
    """A started server; ``stop()`` shuts it down like SIGTERM would (drain, then cancel)."""

    def __init__(self, app: server_app.App, httpd: server_app.Server) -> None:
        self.app = app
        self.httpd = httpd
        self.port = httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._stopped = False

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None,
                headers: Optional[Dict[str, str]] = None, timeout: float = 30.0) -> Reply:
        """One request on a fresh connection. A dict or list ``body`` is sent as JSON with
        Content-Type application/json; bytes are sent as they are."""
        conn = self.connection(timeout)
        try:
            data = body
            sent_headers = dict(headers or {})
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode("utf-8")
                sent_headers.setdefault("Content-Type", "application/json")
            conn.request(method, path, data, sent_headers)
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            server_app.drain(self.app, self.httpd)
            self._thread.join(5)


class _NullLog(server_app.AccessLog):
    """Keeps access-log lines in memory instead of stderr (tests read them)."""

    def __init__(self, fmt: str = "text") -> None:
        super().__init__(fmt)
        self.lines: List[str] = []

    def _write_text(self, line: str) -> None:
        self.lines.append(line)


def make_server(settings: Dict[str, Any]) -> RunningServer:
    """A running server with ``settings`` ({dotted key: value}) as command-line flags over
    the environment (CLINVK_HOME and PATH as the fixtures set them). The shutdown grace is
    short unless given, so a test that leaves a run behind does not hold up the next."""
    settings = dict({"server.shutdown_grace_secs": 2}, **settings)
    cfg = config.load(None, env=dict(os.environ), flags=settings)
    app = server_app.App(cfg, log=_NullLog(cfg.get("server.log_format")))
    return RunningServer(app, server_app.make_server(app, "127.0.0.1", 0))


@pytest.fixture
def start_server(clinvk_home, fake_path):
    """``start_server(**settings)`` -> RunningServer; every server is stopped afterwards."""
    started: List[RunningServer] = []

    def start(**settings: Any) -> RunningServer:
        running = make_server(settings)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def server(start_server) -> RunningServer:
    """A server with the default settings."""
    return start_server()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, seconds: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``seconds`` pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def read_pid(path: str, seconds: float = 5.0) -> int:
    """The pid a fake CLI wrote to FAKE_CLI_PIDFILE (waits for the file)."""
    assert wait_for(lambda: os.path.exists(path) and open(path).read().strip(), seconds), \
        "the fake CLI never wrote %s" % path
    with open(path) as f:
        return int(f.read().strip())
