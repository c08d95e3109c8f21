"""``clinvk tool-bridge TICKET``, the tool bridge's composition root: the MCP server (stdio) an
agent CLI starts for a run that carries the HTTP client's tools. It offers exactly the tools the
serving process lists for the run and forwards each call to it over the Unix socket the ticket
names (``toolbridge.channel``); the call's result is whatever the client sends in its next
request. Not a command for people: the server writes its argv into the CLI's MCP config.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Dict, List

from .. import __version__
from ..toolbridge import channel
from .protocol import Call, Server, Tool, error_result

# How often a waiting call checks whether the CLI cancelled it.
CANCEL_POLL_SECS = 0.5


class Upstream:
    """The serving process as the bridge sees it: ``call(name, arguments, meta, call)``
    blocks until the result comes (or the call is cancelled, or the server goes away)."""

    def __init__(self, line: channel.Line) -> None:
        self.line = line
        self._lock = threading.Lock()
        self._next_id = 0
        self._waiting: Dict[int, List[Any]] = {}
        self.gone = threading.Event()

    def read_answers(self) -> None:
        try:
            for msg in self.line.messages():
                with self._lock:
                    slot = self._waiting.get(msg.get("id"))
                if slot is not None and isinstance(msg.get("result"), dict):
                    slot[1] = msg["result"]
                    slot[0].set()
        finally:
            self.gone.set()
            with self._lock:
                slots = list(self._waiting.values())
            for slot in slots:
                slot[0].set()

    def call(self, name: str, arguments: Dict[str, Any], meta: Dict[str, Any],
             call: Call) -> Dict[str, Any]:
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            slot: List[Any] = [threading.Event(), None]
            self._waiting[request_id] = slot
        try:
            if not self.line.send({"op": "call", "id": request_id, "name": name,
                                   "arguments": arguments, "meta": meta}):
                return error_result("clinvk: the server that offered %s is gone" % name)
            while not slot[0].wait(CANCEL_POLL_SECS):
                if call.cancel.fired:
                    return error_result("cancelled")
            if slot[1] is None:
                return error_result("clinvk: the run ended before the client sent the "
                                    "result of %s" % name)
            return slot[1]
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)


def bridged_tool(upstream: Upstream, listing: Dict[str, Any]) -> Tool:
    name = listing["name"]

    def bind(arguments: Dict[str, Any]) -> Callable[[Call], Dict[str, Any]]:
        return lambda call: upstream.call(name, arguments, call.meta, call)
    return Tool(name, listing.get("description") or "", listing.get("inputSchema") or
                {"type": "object"}, bind, listing.get("annotations"))


def bridge_command(argv: List[str]) -> int:
    """Serve the run's tools on stdin/stdout until the CLI closes stdin; 2 when the ticket
    cannot be read or the server refuses it (named on stderr)."""
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: clinvk tool-bridge TICKET (started by clinvk serve)\n")
        return 2
    try:
        ticket = channel.read_ticket(argv[0])
        line = channel.connect(ticket["socket"])
    except (ValueError, OSError) as exc:
        sys.stderr.write("clinvk tool-bridge: %s\n" % exc)
        return 2
    line.send({"op": "hello", "token": ticket["token"]})
    hello = next(line.messages(), None) or {}
    if not isinstance(hello.get("tools"), list):
        sys.stderr.write("clinvk tool-bridge: %s\n" % (hello.get("error") or "no answer"))
        return 2
    upstream = Upstream(line)
    threading.Thread(target=upstream.read_answers, daemon=True).start()
    out = sys.stdout.buffer
    sys.stdout = sys.stderr           # stdout is the protocol channel
    server = Server([bridged_tool(upstream, t) for t in hello["tools"]], out,
                    name="clinvk", version=__version__, progress_interval=0)
    try:
        server.serve(sys.stdin.buffer)
    finally:
        line.close()
    return 0
