"""The listening server: accepts connections, at most ``server.max_connections`` of them
(an idle one is closed to make room for a newcomer, else the newcomer gets a 503), and hands
each to a ``connection.ConnectionHandler`` thread.
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import sys
import time
import traceback
from http.server import ThreadingHTTPServer
from typing import Any, Tuple

from . import errors
from .app import App
from .connection import ConnectionHandler
from .http import JSON_TYPE
from .limits import ConnectionLimiter


class HttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the App attached, TCP_NODELAY on every connection, a deep
    listen backlog, no reverse-DNS lookup of the bind address at start, and at most
    ``server.max_connections`` connections (``connections``, a ConnectionLimiter): past it,
    an idle connection (or one dripping its request head) is closed to make room, and when
    there is none the newcomer gets a 503 and is closed at once, by the accepting thread,
    without starting a thread."""

    handler_class = ConnectionHandler
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    # Refusals are logged at most this often (a flood must not flood the log too).
    REFUSAL_LOG_SECS = 10.0

    def __init__(self, address: Tuple[str, int], app: App) -> None:
        self.app = app
        self.connections = ConnectionLimiter(app.cfg.get("server.max_connections"))
        self._refused = 0
        self._refusal_logged = 0.0
        super().__init__(address, self.handler_class)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit a new connection within ``server.max_connections`` (closing an idle or a
        dripping one to make room if needed); False refuses it with a 503."""
        admitted, victim = self.connections.admit(request, quiet=_no_request_arriving)
        if victim is not None:
            with contextlib.suppress(OSError):
                victim.shutdown(socket.SHUT_RDWR)   # its thread wakes, closes and ends
        if not admitted:
            self._refuse(request)
        return admitted

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release(request)       # no thread started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(request)

    def _refuse(self, sock: socket.socket) -> None:
        """A minimal 503 without waiting (a new socket's send buffer is empty); the caller
        closes the connection."""
        limit = self.connections.limit
        err = errors.ApiError(503, "too_many_connections",
                              "the server has all %d connections busy (server.max_connections); "
                              "retry shortly" % limit)
        body = errors.native_json(err)
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: %s\r\nContent-Length: %d"
                "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" % (JSON_TYPE, len(body)))
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(head.encode("ascii") + body)
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= self.REFUSAL_LOG_SECS:
            self._refusal_logged = now
            self.app.log.info("refused %d connection(s): all %d busy (server.max_connections)"
                              % (self._refused, limit))
            self._refused = 0

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the bound address (an IPv6 host in brackets)."""
        host, port = self.server_address[:2]
        return "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self) -> Tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return                          # a client that vanished mid-request
        self.app.log.error("connection error from %s" % (client_address[0],), "",
                           traceback.format_exc())


class HttpServer6(HttpServer):
    address_family = socket.AF_INET6


def make_server(app: App, host: str, port: int) -> HttpServer:
    """A bound, listening server (IPv6 when ``host`` is an IPv6 address)."""
    cls = HttpServer6 if ":" in host else HttpServer
    return cls((host.strip("[]"), port), app)


def _no_request_arriving(sock: socket.socket) -> bool:
    """True unless bytes (or an end) wait on ``sock``: an idle connection whose request has
    just started to arrive is spared when a slot is reclaimed. poll, not recv: a socket with
    a timeout makes Python's recv wait for data even with MSG_DONTWAIT, and select() cannot
    take descriptors past 1023."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)
