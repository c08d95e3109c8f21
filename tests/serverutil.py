"""The HTTP server running in-process for tests: 127.0.0.1, a free port, the fake CLIs on
PATH, a private CLINVK_HOME. Use the ``server`` fixture (default settings) or
``start_server`` (``start_server(**{"server.max_concurrent_runs": 1})``).

Test modules import the fixtures: ``from tests.serverutil import server, start_server``.
``HttpClient`` (JSON requests on fresh connections) also serves ``serveproc.ServeProcess``;
``raw_request`` and ``stream_until`` are for what the client classes cannot say.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

from clinvk_lib import config
from clinvk_lib.backends import probe
from clinvk_lib.server import serve
from clinvk_lib.server.accesslog import AccessLog
from clinvk_lib.server.app import App
from clinvk_lib.server.listener import HttpServer, make_server as listen


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


def encode_body(body: Any, headers: Optional[Dict[str, str]] = None
                ) -> Tuple[Any, Dict[str, str]]:
    """(data, headers) to send: a dict or list ``body`` as JSON, with Content-Type
    application/json unless ``headers`` names one; anything else as it is."""
    sent = dict(headers or {})
    if isinstance(body, (dict, list)):
        sent.setdefault("Content-Type", "application/json")
        return json.dumps(body).encode("utf-8"), sent
    return body, sent


def send_request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None,
                 headers: Optional[Dict[str, str]] = None) -> Reply:
    """One request on ``conn``, closed afterwards; ``body`` as ``encode_body`` sends it."""
    try:
        conn.request(method, path, *encode_body(body, headers))
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


class HttpClient:
    """Requests, each on a fresh connection, to a server on 127.0.0.1 at ``self.port``."""

    port = 0

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None,
                headers: Optional[Dict[str, str]] = None, timeout: float = 30.0) -> Reply:
        """One request on a fresh connection. A dict or list ``body`` is sent as JSON with
        Content-Type application/json; bytes are sent as they are."""
        return send_request(self.connection(timeout), method, path, body, headers)

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)


class RunningServer(HttpClient):
    """A started server; ``stop()`` shuts it down like SIGTERM would (drain, then cancel)."""

    def __init__(self, app: App, httpd: HttpServer) -> None:
        self.app = app
        self.httpd = httpd
        self.port = httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._stopped = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            serve.drain(self.app, self.httpd)
            self._thread.join(5)


class _NullLog(AccessLog):
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
    app = serve.build_app(cfg, log=_NullLog(cfg.get("server.log_format")))
    return RunningServer(app, listen(app, "127.0.0.1", 0))


@pytest.fixture
def fresh_backend_probe():
    """The server caches which CLIs are on PATH for a few seconds; tests change PATH. A module
    that changes PATH between servers uses it as ``pytest.mark.usefixtures`` or autouse."""
    probe._cache.clear()
    yield
    probe._cache.clear()


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


def raw_request(srv: HttpClient, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to ``srv`` (a RunningServer or a ServeProcess); everything the server
    answers until it closes."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(data)
        return read_until_closed(s)


def read_until_closed(s: socket.socket) -> bytes:
    """Everything ``s`` receives until the peer closes (or is silent for the socket's
    timeout)."""
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    """The status code of a raw HTTP answer."""
    return int(raw.split(b" ", 2)[1])


def stream_until(srv: HttpClient, path: str, body: Any, marker: bytes) -> Tuple[int, bytes]:
    """POST ``body`` and read the streamed answer line by line until ``marker`` has arrived
    or the stream ends: (status, what was read; nothing unless the status is 200)."""
    conn = srv.connection()
    try:
        conn.request("POST", path, *encode_body(body))
        resp = conn.getresponse()
        seen = b""
        while resp.status == 200 and marker not in seen:
            line = resp.readline()
            if not line:
                break
            seen += line
        return resp.status, seen
    finally:
        conn.close()


def metrics_once_counted(srv, needle: str, headers: Optional[Dict[str, str]] = None,
                         timeout: float = 5.0) -> str:
    """/metrics once ``needle`` is in it (or after ``timeout``): a request is counted just
    after its response has gone out, so a scrape right behind it may not see it yet."""
    deadline = time.monotonic() + timeout
    while True:
        text = srv.get("/metrics", headers=headers).body.decode()
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def sse_events(body: bytes) -> List[Tuple[Optional[str], Any]]:
    """[(event name or None, decoded data)] of a whole SSE body (``[DONE]`` stays a string)."""
    out: List[Tuple[Optional[str], Any]] = []
    for block in body.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines()
                     if not line.startswith(":"))
        if "data" in lines:
            data = lines["data"]
            out.append((lines.get("event"), data if data == "[DONE]" else json.loads(data)))
    return out
