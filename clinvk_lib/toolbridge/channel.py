"""The wire between ``clinvk tool-bridge`` (the MCP server an agent CLI starts) and the serving
process: JSON objects, one per line, over a Unix socket in the serving process's private
run-files directory (0700, see ``runfiles``), so only this user can connect; each run has its
own random token besides, so one run's MCP server cannot reach another run's tools.

The bridge says ``{"op": "hello", "token": T}`` and is answered ``{"tools": [MCP tool
listings]}`` (or ``{"error": text}`` and the socket is closed); then ``{"op": "call", "id": N,
"name": tool, "arguments": {...}, "meta": {...}}`` for each tool call, answered
``{"id": N, "result": CallToolResult}`` whenever the client sends its result, in any order.

The ticket is the run file the bridge's argv names: ``{"socket": path, "token": T}``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any, Dict, Iterator, Optional

# A line longer than this ends the connection: tool results are client text, bounded by the
# server's request body limit well below this.
MAX_LINE_BYTES = 64 * 1024 * 1024


def new_token() -> str:
    return os.urandom(24).hex()


def ticket_text(socket_path: str, token: str) -> str:
    return json.dumps({"socket": socket_path, "token": token})


def read_ticket(path: str) -> Dict[str, str]:
    """The ticket at ``path``: {"socket", "token"}; ValueError naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            ticket = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError("cannot read the tool bridge ticket %s: %s" % (path, exc))
    if not isinstance(ticket, dict) or not all(isinstance(ticket.get(k), str)
                                               for k in ("socket", "token")):
        raise ValueError("the tool bridge ticket %s has no socket and token" % path)
    return ticket


class Line:
    """One end of a connection: ``send(obj)`` (whole lines, under a lock, from any thread),
    ``messages()`` (each JSON object received, until the peer closes), ``close()``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._lock = threading.Lock()

    def send(self, obj: Dict[str, Any]) -> bool:
        """False when the peer is gone."""
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def messages(self) -> Iterator[Dict[str, Any]]:
        while True:
            try:
                raw = self._reader.readline(MAX_LINE_BYTES + 1)
            except OSError:
                return
            if not raw or len(raw) > MAX_LINE_BYTES:
                return
            try:
                msg = json.loads(raw.decode("utf-8"))
            except ValueError:
                return
            if isinstance(msg, dict):
                yield msg

    def close(self) -> None:
        # Shut down first: it wakes a thread blocked reading, which holds the reader's lock
        # that closing the reader takes.
        for closing in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self._reader.close,
                        self.sock.close):
            try:
                closing()
            except OSError:
                pass


def connect(socket_path: str, timeout: Optional[float] = 10.0) -> Line:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return Line(sock)
