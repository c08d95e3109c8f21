"""Slow clients: connections that send their headers a byte per second. Each one holds only
its own thread (a thread per connection), so a normal request is still served at once, and
``server.read_timeout_secs`` bounds how long a request may take to arrive, so they do not
hold those threads for ever.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from typing import List

import pytest

from tests.serveproc import ServeProcess
from tests.serverutil import wait_for

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 200


class Drippers:
    """``count`` connections that started a request and then send one more header byte to
    each connection every second, until ``stop()``."""

    def __init__(self, port: int, count: int) -> None:
        self.socks: List[socket.socket] = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            self.socks.append(s)
        self.cut: List[socket.socket] = []       # closed by the server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        while not self._stop.wait(1.0):
            for s in list(self.open()):
                try:
                    s.sendall(b"a")
                except OSError:
                    self.cut.append(s)

    def open(self) -> List[socket.socket]:
        """The connections the server has not closed or answered yet."""
        readable, _, _ = select.select(self.socks, [], [], 0)
        for s in readable:
            if s not in self.cut:
                self.cut.append(s)           # the server answered (408) or closed it
        return [s for s in self.socks if s not in self.cut]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


@pytest.fixture
def slow_clients(tmp_path):
    """``slow_clients(read_timeout_secs)`` -> (server, Drippers) with SLOW_CLIENTS dripping."""
    started = []

    def start(read_timeout: int):
        srv = ServeProcess(str(tmp_path / ("home-%d" % len(started))),
                           config={"server": {"read_timeout_secs": read_timeout}})
        drippers = Drippers(srv.port, SLOW_CLIENTS)
        started.append((srv, drippers))
        return srv, drippers

    yield start
    for srv, drippers in started:
        drippers.stop()
        srv.stop()


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def test_normal_requests_are_served_within_a_second_beside_200_slow_clients(slow_clients):
    srv, drippers = slow_clients(30)
    time.sleep(2.0)                                  # every slow client has dripped twice
    assert len(drippers.open()) == SLOW_CLIENTS

    def health() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=1)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()

    def prompt() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=1)
        conn.request("POST", "/api/v1/prompt", json.dumps({"backend": "codex", "prompt": "hi"}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["output"] == "echo: hi"
        conn.close()

    assert timed(health) < 1.0
    assert timed(prompt) < 1.0
    assert len(drippers.open()) == SLOW_CLIENTS      # they were still holding on meanwhile


def test_a_request_still_arriving_after_the_read_timeout_is_cut_off(slow_clients):
    srv, drippers = slow_clients(2)
    # Each byte arrives well within the timeout; the request as a whole never does.
    assert wait_for(lambda: not drippers.open(), 2 + 3, step=0.2), \
        "%d of %d slow clients still connected after read_timeout_secs=2" % (
            len(drippers.open()), SLOW_CLIENTS)
    assert srv.get("/health", timeout=1).status == 200
