"""Bridged runs: an agent run whose CLI was given the client's tools, read round by round, and
the table of runs parked between rounds.

A round is what one HTTP response carries: the run's events until the agent calls bridged
tools (the round ends with those calls, and the run is parked: its CLI waits in the MCP call)
or until the run ends. The client's next request brings the results (``resume``), which go to
the waiting MCP calls, and the next round is that request's answer.

Which calls end a round: the first bridged MCP call that arrives, plus every other bridged
call of the same model turn, known from the CLI's tool_use events or arriving within
``settle_secs`` after it (a CLI that runs its calls one after another reports them all before
the first runs; one that runs them at once makes them within moments). A call that comes
later still is not lost: it ends the next round.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from .. import events as ev
from ..backends import base
from ..backends.options import BRIDGE_SERVER

SETTLE_SECS = 0.3
# How often a round waiting for the CLI checks whether its client hung up.
POLL_SECS = 0.5


class ToolSpec(NamedTuple):
    """One tool of the client's, as every dialect gives it: name, description, JSON Schema
    of its arguments."""

    name: str
    description: str
    parameters: Dict[str, Any]

    def listing(self) -> Dict[str, Any]:
        schema = dict(self.parameters) if self.parameters else {}
        schema.setdefault("type", "object")
        return {"name": self.name, "description": self.description, "inputSchema": schema,
                # claude 2.1.197 runs the calls of one turn at once only for read-only tools.
                "annotations": {"readOnlyHint": True}}


class ToolCall:
    """One call of a client tool: the ``id`` the client echoes, the client's tool ``name``,
    its ``arguments``; ``backend_id`` (the CLI's tool_use id, when it reported one), ``mcp``
    (the waiting MCP call, once it arrived) and ``result`` (once the client sent it)."""

    def __init__(self, call_id: str, name: str, arguments: Dict[str, Any],
                 backend_id: str = "") -> None:
        self.id = call_id
        self.name = name
        self.arguments = arguments
        self.backend_id = backend_id
        self.mcp: Any = None
        self.result: Optional[Tuple[str, bool]] = None

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)

    def deliver(self) -> None:
        """Answer the MCP call when both it and the result are here."""
        if self.mcp is not None and self.result is not None:
            text, is_error = self.result
            self.mcp.answer({"content": [{"type": "text", "text": text}], "isError": is_error})


# Why clinvk stopped a bridged run (BridgedRun.stop_kind): a timeout (a round over
# server.request_timeout_secs, or no result within server.tool_result_timeout_secs), or
# cancelled (the client hung up while the run answered, the server is shutting down).
TIMED_OUT, CANCELLED = "timed_out", "cancelled"


class BridgedRun:
    """One bridged run. The server starts it (``start``), reads each round
    (``round_events``; then ``round_calls`` holds the calls that ended it, empty when the run
    ended), and resumes it with the client's results (``resume``)."""

    def __init__(self, tools: List[ToolSpec], owner: str, id_prefix: str, instance: str,
                 forced: str = "", cancel: Any = None) -> None:
        self.tools = {t.name: t for t in tools}
        self.owner = owner
        self.id_prefix = id_prefix
        self.instance = instance
        self.forced = forced
        self.cancel = cancel
        self.session_id = ""
        self.backend = ""
        self.round_calls: List[ToolCall] = []
        self.parked = False
        self.ended = False
        self.stop_reason = ""
        self.stop_kind = ""
        self.settle_secs = SETTLE_SECS
        self._calls: List[ToolCall] = []
        self._queue: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None

    # -- the bridge's side (hub threads) ------------------------------------------------------

    def listing(self) -> List[Dict[str, Any]]:
        tools = [self.tools[self.forced]] if self.forced else list(self.tools.values())
        return [t.listing() for t in tools]

    def on_call(self, call: Any) -> None:
        self._queue.put(("call", call))

    # -- the CLI's side (the pump thread) -----------------------------------------------------

    def start(self, events: Iterator[ev.Event], on_end: Callable[[], None],
              session_id: str) -> None:
        """Read ``events`` in a thread of its own (the run's session is taken and released
        there), then call ``on_end``. Nothing waits for the CLI here: ``session_id`` is the
        run's session, known before it starts, and a failure to start is raised by the first
        round's ``round_events``."""
        self.session_id = session_id
        threading.Thread(target=self._pump, args=(events, on_end), name="bridged-run",
                         daemon=True).start()

    def _pump(self, events: Iterator[ev.Event], on_end: Callable[[], None]) -> None:
        try:
            for event in events:
                self._queue.put(("event", event))
        except Exception as exc:  # noqa: BLE001 - reported to the reader, who answers it
            self._queue.put(("failed", exc))
        finally:
            self._queue.put(("end", None))
            with self._lock:
                self.ended = True
                self._stop_timer()
            on_end()

    # -- rounds (the HTTP request's thread) ---------------------------------------------------

    def round_events(self, abandoned: Callable[[], bool]) -> Iterator[ev.Event]:
        """The events of one round (bridged tool events left out); when it ends on tool
        calls, they are in ``round_calls`` and the run is parked. ``abandoned()`` true (the
        client hung up) stops the run."""
        self.round_calls = []
        ending_at: Optional[float] = None
        while True:
            if ending_at is not None and time.monotonic() >= ending_at:
                if self._end_round():
                    return
                ending_at = None
            kind, value = self._next(ending_at)
            if kind == "idle":
                if abandoned() and not self.stop_reason:
                    self.stop("the client hung up while the run was answering", CANCELLED)
                continue
            if kind == "end":
                return
            if kind == "failed":
                raise value
            if kind == "call":
                if self._take_call(value) and ending_at is None:
                    ending_at = time.monotonic() + self.settle_secs
                continue
            if self._bridged_event(value):
                continue
            yield value

    def _next(self, ending_at: Optional[float]) -> Tuple[str, Any]:
        wait = POLL_SECS if ending_at is None else max(0.0, min(
            POLL_SECS, ending_at - time.monotonic()))
        try:
            return self._queue.get(timeout=wait)
        except queue.Empty:
            return ("idle", None)

    def _end_round(self) -> bool:
        """Park with the calls still waiting for a result; False when there are none."""
        with self._lock:
            waiting = [c for c in self._calls if c.result is None]
            if not waiting or self.ended:
                return False
            self.round_calls = waiting
            self.parked = True
        return True

    def _take_call(self, incoming: Any) -> bool:
        """Match an MCP call to the call the CLI reported, or record a new one; True when it
        waits for the client (False: its result is already here and was sent)."""
        name = incoming.name
        if name not in self.tools:
            incoming.answer(error_result("no such tool: %s" % name))
            return False
        with self._lock:
            call = self._matching(name, incoming.arguments, incoming.backend_id, "mcp")
            if call is None:
                call = self._new_call(name, incoming.arguments, incoming.backend_id)
            call.mcp = incoming
            if incoming.backend_id and not call.backend_id:
                call.backend_id = incoming.backend_id
            call.deliver()
            return call.result is None

    def _bridged_event(self, event: ev.Event) -> bool:
        """True for the CLI's own report of a bridged tool's use or result (recorded, not
        passed on: the client sees the call in its dialect instead)."""
        if event.type not in (ev.TOOL_USE, ev.TOOL_RESULT):
            return False
        if event.type == ev.TOOL_RESULT:
            return bool(self.client_name(event.content.get("name") or
                                         event.content.get("tool_name") or ""))
        backend_name, arguments, backend_id = base.get(self.backend).bridged_tool_use(
            event.content) if self.backend else ("", {}, "")
        name = self.client_name(backend_name)
        if not name:
            return False
        with self._lock:
            if self._matching(name, arguments, backend_id, "event") is None:
                self._new_call(name, arguments, backend_id)
        return True

    def client_name(self, backend_name: str) -> str:
        """The client's name of a tool as the CLI names it ("" when it is not a bridged one):
        claude 2.1.197 ``mcp__clinvk__NAME``, codex 0.169.0 ``NAME`` (server ``clinvk``),
        gemini 0.61.0 ``mcp_clinvk_NAME``."""
        if backend_name in self.tools:
            return backend_name
        for sep in ("__", ".", "_", "/"):
            head = BRIDGE_SERVER + sep
            if head in backend_name:
                rest = backend_name.split(head, 1)[1]
                if rest in self.tools:
                    return rest
        return ""

    def _matching(self, name: str, arguments: Dict[str, Any], backend_id: str,
                  side: str) -> Optional[ToolCall]:
        """The recorded call this report (``side`` "mcp" or "event") is the other half of."""
        for call in self._calls:
            if side == "mcp" and call.mcp is not None:
                continue
            if side == "event" and call.backend_id and call.backend_id == backend_id:
                return call
            if backend_id and call.backend_id and call.backend_id != backend_id:
                continue
            if side == "event" and call.backend_id:
                continue
            if call.name == name and call.arguments == arguments:
                return call
        return None

    def _new_call(self, name: str, arguments: Dict[str, Any], backend_id: str) -> ToolCall:
        call = ToolCall("%s%s_%s" % (self.id_prefix, self.instance, os.urandom(10).hex()),
                        name, arguments, backend_id)
        self._calls.append(call)
        return call

    # -- between rounds -----------------------------------------------------------------------

    def waiting_ids(self) -> List[str]:
        with self._lock:
            return [c.id for c in self._calls if c.result is None] if self.parked else []

    def resume(self, results: Dict[str, Tuple[str, bool]]) -> None:
        """Hand the client's results to the waiting calls and unpark. ValueError naming the
        calls a result is missing for (every call of the round needs one); LookupError when
        the run is not parked (another request resumed it)."""
        with self._lock:
            if not self.parked:
                raise LookupError("not parked")
            waiting = [c for c in self._calls if c.result is None]
            missing = [c.id for c in waiting if c.id not in results]
            if missing:
                raise ValueError(", ".join(missing))
            self.parked = False
            self._stop_timer()
            for call in waiting:
                call.result = results[call.id]
                call.deliver()

    def park_for(self, seconds: float) -> None:
        """Stop the run unless it is resumed within ``seconds``."""
        with self._lock:
            self._stop_timer()
            if self.parked and not self.ended and seconds > 0:
                self._timer = threading.Timer(seconds, self.expire, args=(seconds,))
                self._timer.daemon = True
                self._timer.start()

    def expire(self, seconds: float) -> None:
        """Stop the run if it is still parked: no result came within ``seconds``."""
        with self._lock:
            if not self.parked:
                return
        self.stop("no tool result came within %gs (server.tool_result_timeout_secs)" % seconds,
                  TIMED_OUT)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop(self, reason: str, kind: str = CANCELLED) -> None:
        """Stop the run (its process group is killed); ``kind`` TIMED_OUT or CANCELLED, the
        first stop's reason and kind are kept."""
        if not self.stop_reason:
            self.stop_reason, self.stop_kind = reason, kind
        if self.cancel is not None:
            self.cancel.fire()


def error_result(text: str) -> Dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


class ParkedRuns:
    """The live bridged runs of this process, by the ids of the calls they wait on:
    ``add(run)``, ``find(call_id)``, ``remove(run)``; ``parked_count()`` for /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: List[BridgedRun] = []

    def add(self, run: BridgedRun) -> None:
        with self._lock:
            self._runs.append(run)

    def remove(self, run: BridgedRun) -> None:
        with self._lock:
            if run in self._runs:
                self._runs.remove(run)

    def find(self, call_id: str) -> Optional[BridgedRun]:
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            if call_id in run.waiting_ids():
                return run
        return None

    def parked_count(self) -> int:
        with self._lock:
            return sum(1 for r in self._runs if r.parked and not r.ended)

    def stop_all(self, reason: str, parked_only: bool = False) -> None:
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            if run.parked or not parked_only:
                run.stop(reason)
