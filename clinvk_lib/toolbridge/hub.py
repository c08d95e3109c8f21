"""The serving process's end of the bridge: one Unix socket (started on first use, in the
process's private run-files directory) that every ``clinvk tool-bridge`` of this process
connects to, and the runs registered on it by token.

A registered run is any object with ``listing()`` (the MCP tool listings to offer) and
``on_call(call)`` (an ``IncomingCall``, answered later with ``call.answer(result)``).
"""

from __future__ import annotations

import atexit
import hmac
import os
import shutil
import socket
import tempfile
import threading
from typing import Any, Dict, Optional

from .. import runfiles
from .channel import Line, new_token, ticket_text


# sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH = 107


def _socket_dir() -> str:
    """The private run-files directory, or, when a socket path in it would be too long for
    the OS (a long TMPDIR), a directory of its own under /tmp (0700 too, removed at exit)."""
    directory = runfiles.private_dir()
    if len(os.path.join(directory, "bridge-000000000000.sock").encode()) <= MAX_SOCKET_PATH:
        return directory
    directory = tempfile.mkdtemp(prefix="clinvk-", dir="/tmp")
    atexit.register(shutil.rmtree, directory, True)
    return directory


class IncomingCall:
    """One ``tools/call`` the agent made: the bridged tool's ``name``, its ``arguments``, the
    MCP ``meta`` (claude 2.1.197 puts its tool_use id under ``claudecode/toolUseId``)."""

    def __init__(self, line: Line, msg: Dict[str, Any]) -> None:
        self.line = line
        self.request_id = msg.get("id")
        self.name = msg.get("name") if isinstance(msg.get("name"), str) else ""
        arguments = msg.get("arguments")
        self.arguments = arguments if isinstance(arguments, dict) else {}
        meta = msg.get("meta")
        self.meta = meta if isinstance(meta, dict) else {}
        self._answered = threading.Lock()

    @property
    def backend_id(self) -> str:
        value = self.meta.get("claudecode/toolUseId")
        return value if isinstance(value, str) else ""

    def answer(self, result: Dict[str, Any]) -> None:
        """Send the CallToolResult once (later answers are dropped)."""
        if self._answered.acquire(blocking=False):
            self.line.send({"id": self.request_id, "result": result})


class Hub:
    """``register(run)`` -> the ticket text for its MCP server; ``unregister(ticket)``;
    ``close()`` removes the socket."""

    backlog = 64

    def __init__(self) -> None:
        self.path = ""
        self._lock = threading.Lock()
        self._runs: Dict[str, Any] = {}
        self._listener: Optional[socket.socket] = None

    def register(self, run: Any) -> str:
        token = new_token()
        with self._lock:
            self._start()
            self._runs[token] = run
        return ticket_text(self.path, token)

    def unregister(self, run: Any) -> None:
        with self._lock:
            for token in [t for t, r in self._runs.items() if r is run]:
                del self._runs[token]

    def _start(self) -> None:
        if self._listener is not None:
            return
        path = os.path.join(_socket_dir(), "bridge-%s.sock" % os.urandom(6).hex())
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(self.backlog)
        except OSError:
            listener.close()
            raise
        self.path, self._listener = path, listener
        threading.Thread(target=self._accept, args=(listener,), name="tool-bridge-hub",
                         daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return              # closed
            threading.Thread(target=self._serve, args=(Line(conn),),
                             name="tool-bridge-conn", daemon=True).start()

    def _find(self, token: Any) -> Any:
        if not isinstance(token, str):
            return None
        with self._lock:
            for known, run in self._runs.items():
                if hmac.compare_digest(known, token):
                    return run
        return None

    def _serve(self, line: Line) -> None:
        try:
            messages = line.messages()
            hello = next(messages, None)
            run = self._find((hello or {}).get("token"))
            if run is None:
                line.send({"error": "unknown or finished run: the tool bridge ticket is "
                                    "no longer valid"})
                return
            line.send({"tools": run.listing()})
            for msg in messages:
                if msg.get("op") == "call":
                    run.on_call(IncomingCall(line, msg))
        finally:
            line.close()

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)     # wakes the accept() on Linux
            except OSError:
                pass
            listener.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass
