"""JSON-RPC 2.0 over stdio as the Model Context Protocol defines it: framing, lifecycle, dispatch.

Knows the wire and nothing about backends. Promises:
- one JSON object per line in both directions (MCP stdio transport); stdout carries protocol
  messages only, each written whole under a lock and flushed;
- no input stops the reader: a line that is not JSON (invalid UTF-8, nested too deeply to
  parse) gets a parse error, a line longer than ``max_message_bytes`` an invalid request
  error (and is never held in memory whole), a message with a string that is not Unicode
  text (a lone surrogate) an invalid request or params error naming where, and anything
  unforeseen an internal error for that request alone;
- ``initialize`` negotiates the protocol version (the client's when we speak it, else our
  newest); any other request before it, except ``ping``, is refused;
- ``tools/call`` runs in a worker thread, so the reader keeps reading: a
  ``notifications/cancelled`` for it fires its cancel token (the backend's process group is
  killed) and the request then gets no response, as the specification says;
- a ``_meta.progressToken`` on a call gets ``notifications/progress`` every
  ``progress_interval`` seconds while it runs, plus whatever the tool reports itself;
- end of input (the client closed our stdin) cancels every running call and returns.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional

from .. import jsontext
from ..execute import Cancel

log = logging.getLogger("clinvk.mcp")

# Newest first; a client asking for another version gets the first one.
PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

PROGRESS_INTERVAL = 5.0
# How long end of input waits for cancelled runs to be reaped (runner's grace is 2 s).
SHUTDOWN_WAIT = 5.0


class RpcError(Exception):
    """A request that gets a JSON-RPC error response."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Call:
    """One running ``tools/call``: its cancel token and its progress reporting.

    ``progress`` may be called from any thread. Reported values only ever grow, as the
    specification requires: ``completed`` units (tasks, steps) are whole numbers and the
    heartbeats between two of them add fractions that never reach the next whole one.
    """

    def __init__(self, server: "Server", request_id: Any, progress_token: Any) -> None:
        self.server = server
        self.request_id = request_id
        self.progress_token = progress_token
        self.cancel = Cancel()
        self.meta: Dict[str, Any] = {}       # the request's _meta, as the client sent it
        self.finished = threading.Event()
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._completed = 0
        self._beats = 0
        self._total: Optional[int] = None
        self._status = "running"

    def progress(self, message: str, completed: Optional[int] = None,
                 total: Optional[int] = None) -> None:
        """Report ``message`` now (and how many of ``total`` units are done, when known)."""
        with self._lock:
            if total is not None:
                self._total = total
            if completed is not None and completed > self._completed:
                self._completed = completed
                self._beats = 0
            else:
                self._beats += 1
            self._status = message
            self._send(message)

    def heartbeat(self) -> None:
        """Say the call is still running (sent by the ticker thread)."""
        with self._lock:
            self._beats += 1
            self._send("%s (%ds)" % (self._status, time.monotonic() - self.started))

    def _send(self, message: str) -> None:
        # Called under self._lock, so values leave in the order they were computed.
        if self.progress_token is None or self.cancel.fired:
            return
        fraction = self._beats / (self._beats + 1.0)
        params: Dict[str, Any] = {"progressToken": self.progress_token,
                                  "progress": self._completed + fraction if fraction
                                  else self._completed,
                                  "message": message}
        if self._total is not None:
            params["total"] = self._total
        self.server.notify("notifications/progress", params)


class Tool:
    """A tool as the server needs it: its listing and a function that checks the arguments.

    ``bind(arguments)`` raises RpcError(INVALID_PARAMS, ...) for bad arguments, else returns
    ``run(call) -> CallToolResult dict``; ``run`` reports failures in the result
    (``isError``), not by raising.
    """

    def __init__(self, name: str, description: str, input_schema: Dict[str, Any],
                 bind: Callable[[Dict[str, Any]], Callable[[Call], Dict[str, Any]]],
                 annotations: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.description = description
        self.input_schema = input_schema
        self.bind = bind
        self.annotations = annotations

    def listing(self) -> Dict[str, Any]:
        d = {"name": self.name, "description": self.description, "inputSchema": self.input_schema}
        if self.annotations:
            d["annotations"] = self.annotations
        return d


class Server:
    """An MCP server over a pair of byte streams (stdin/stdout in ``clinvk mcp``)."""

    def __init__(self, tools: List[Tool], out: BinaryIO, name: str, version: str,
                 instructions: str = "", progress_interval: float = PROGRESS_INTERVAL,
                 max_message_bytes: int = 0) -> None:
        self.tools = {t.name: t for t in tools}
        self._tool_order = [t.name for t in tools]
        self.out = out
        self.name = name
        self.version = version
        self.instructions = instructions
        self.progress_interval = progress_interval
        self.max_message_bytes = max_message_bytes      # 0 = no limit
        self.protocol_version = ""          # set by initialize
        self._write_lock = threading.Lock()
        self._closed = False
        self._calls_lock = threading.Lock()
        self._calls: Dict[Any, Call] = {}
        self._threads: List[threading.Thread] = []

    # -- the reader ----------------------------------------------------------------------------

    def serve(self, inp: BinaryIO) -> None:
        """Read messages until end of input, then cancel what is still running."""
        try:
            for raw in self._lines(inp):
                if self._closed:
                    break
                if raw is None:
                    self._error(None, INVALID_REQUEST, "message longer than %d bytes "
                                "(server.max_request_body_bytes): send less text in one call"
                                % self.max_message_bytes)
                else:
                    self.handle_line(raw)
        finally:
            self.shutdown()

    def _lines(self, inp: BinaryIO) -> Iterator[Optional[bytes]]:
        """Each line of input, or None for one longer than ``max_message_bytes``, which is
        read to its end in pieces and dropped, so memory holds at most the limit."""
        limit = self.max_message_bytes
        while True:
            raw = inp.readline(limit + 1) if limit else inp.readline()
            if not raw:
                return
            if not limit or len(raw) <= limit or raw.endswith(b"\n"):
                yield raw
                continue
            while raw and not raw.endswith(b"\n"):
                raw = inp.readline(65536)
            yield None

    def handle_line(self, raw: bytes) -> None:
        """Handle one line of input (one JSON-RPC message). Whatever the line holds, it costs
        at most one error response, never the server."""
        if not raw.strip():
            return
        try:
            msg = jsontext.loads(raw.decode("utf-8"))
        except ValueError as exc:      # UnicodeDecodeError is a ValueError too
            self._error(None, PARSE_ERROR, "parse error: %s" % exc)
            return
        try:
            self._dispatch(msg)
        except Exception:              # a bug must cost one request, not the session
            log.exception("unexpected error handling a message")
            if isinstance(msg, dict) and "id" in msg:
                self._error(_id_of(msg), INTERNAL_ERROR, "internal error: see the server's "
                            "log (stderr)")

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, list):
            # Batches existed only in protocol 2025-03-26 and no client sends them.
            self._error(None, INVALID_REQUEST, "JSON-RPC batches are not supported: send one "
                        "message per line")
            return
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            self._error(_id_of(msg), INVALID_REQUEST,
                        'invalid request: expected a JSON-RPC 2.0 object ("jsonrpc": "2.0")')
            return
        if "method" not in msg:
            return                     # a response to us; we never send requests
        not_text = _not_text(msg)
        if not_text is not None:
            if "id" in msg:
                self._error(_id_of(msg), not_text.code, not_text.message)
            return
        method = msg["method"]
        has_id = "id" in msg
        if has_id and not _valid_id(msg["id"]):
            self._error(None, INVALID_REQUEST, "invalid request: id must be a string or an "
                        "integer")
            return
        if not isinstance(method, str):
            if has_id:
                self._error(msg["id"], INVALID_REQUEST, "invalid request: method must be a string")
            return
        params = msg.get("params", {})
        if not has_id:
            self._notification(method, params if isinstance(params, dict) else {})
            return
        try:
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "params must be an object")
            result = self._request(msg["id"], method, params)
        except RpcError as exc:
            self._error(msg["id"], exc.code, exc.message)
            return
        if result is not None:
            self._respond(msg["id"], result)

    def _notification(self, method: str, params: Dict[str, Any]) -> None:
        if method == "notifications/cancelled":
            self.cancel(params.get("requestId"), params.get("reason") or "")
        elif method == "notifications/initialized":
            log.debug("client initialized")
        # Anything else (progress, roots changed, unknown) needs nothing from a tools server.

    def _request(self, request_id: Any, method: str, params: Dict[str, Any]) -> Optional[dict]:
        """The result of a request, or None when a worker thread will answer it."""
        if method == "ping":
            return {}
        if method == "initialize":
            return self._initialize(params)
        if not self.protocol_version:
            raise RpcError(INVALID_REQUEST, "server not initialized: send initialize before %s"
                           % method)
        if method == "tools/list":
            return {"tools": [self.tools[n].listing() for n in self._tool_order]}
        if method == "tools/call":
            self._start_call(request_id, params)
            return None
        raise RpcError(METHOD_NOT_FOUND, "method not found: %s (this server offers tools only: "
                       "tools/list, tools/call)" % method)

    def _initialize(self, params: Dict[str, Any]) -> dict:
        if self.protocol_version:
            raise RpcError(INVALID_REQUEST, "already initialized")
        asked = params.get("protocolVersion")
        if not isinstance(asked, str):
            raise RpcError(INVALID_PARAMS, "protocolVersion: expected a string such as %r"
                           % PROTOCOL_VERSIONS[0])
        self.protocol_version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        client = params.get("clientInfo")
        client = client if isinstance(client, dict) else {}
        log.info("initialize: client %s %s, protocol %s (asked %s)",
                 client.get("name", "?"), client.get("version", "?"),
                 self.protocol_version, asked)
        result = {"protocolVersion": self.protocol_version,
                  "capabilities": {"tools": {"listChanged": False}},
                  "serverInfo": {"name": self.name, "version": self.version}}
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    # -- tool calls ----------------------------------------------------------------------------

    def _start_call(self, request_id: Any, params: Dict[str, Any]) -> None:
        name = params.get("name")
        if not isinstance(name, str) or name not in self.tools:
            raise RpcError(INVALID_PARAMS, "unknown tool %s (available: %s)"
                           % (json.dumps(name), ", ".join(self._tool_order)))
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "arguments must be an object")
        run = self.tools[name].bind(arguments)
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        call = Call(self, request_id, token if _valid_id(token) else None)
        call.meta = dict(meta) if isinstance(meta, dict) else {}
        with self._calls_lock:
            if request_id in self._calls:
                raise RpcError(INVALID_REQUEST, "request id %s is already in use by a running "
                               "call" % json.dumps(request_id))
            self._calls[request_id] = call
            self._threads = [t for t in self._threads if t.is_alive()]
            worker = threading.Thread(target=self._run_call, args=(call, name, run),
                                      name="mcp-call-%s" % request_id, daemon=True)
            self._threads.append(worker)
        worker.start()
        if call.progress_token is not None and self.progress_interval > 0:
            threading.Thread(target=self._tick, args=(call,), daemon=True).start()

    def _run_call(self, call: Call, name: str, run: Callable[[Call], dict]) -> None:
        try:
            result = run(call)
        except Exception as exc:       # a bug in a tool must not take the server down
            log.exception("tool %s failed", name)
            result = error_result("internal error in %s: %s" % (name, exc))
        finally:
            call.finished.set()
            with self._calls_lock:
                self._calls.pop(call.request_id, None)
        if call.cancel.fired:
            log.info("call %s (%s) cancelled: no response", call.request_id, name)
            return
        self._respond(call.request_id, result)

    def _tick(self, call: Call) -> None:
        while not call.finished.wait(self.progress_interval):
            call.heartbeat()

    def cancel(self, request_id: Any, reason: str = "") -> bool:
        """Cancel a running call; False when no call has that id (finished or never seen)."""
        if not _valid_id(request_id):
            return False
        with self._calls_lock:
            call = self._calls.get(request_id)
        if call is None:
            return False
        log.info("cancelling call %s%s", request_id, ": %s" % reason if reason else "")
        call.cancel.fire()
        return True

    def shutdown(self) -> None:
        """Cancel every running call and wait (bounded) for their backends to be reaped."""
        with self._calls_lock:
            calls = list(self._calls.values())
            threads = list(self._threads)
        for call in calls:
            call.cancel.fire()
        deadline = time.monotonic() + SHUTDOWN_WAIT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- the writer ----------------------------------------------------------------------------

    def notify(self, method: str, params: Dict[str, Any]) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def _respond(self, request_id: Any, result: Dict[str, Any]) -> None:
        self._send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _error(self, request_id: Any, code: int, message: str) -> None:
        self._send({"jsonrpc": "2.0", "id": request_id, "error": {"code": code,
                                                                  "message": message}})

    def _send(self, msg: Dict[str, Any]) -> None:
        data = _encode(msg)
        with self._write_lock:
            if self._closed:
                return
            try:
                self.out.write(data)
                self.out.flush()
                return
            except (OSError, ValueError):
                self._closed = True
        log.warning("stdout is closed: the client is gone; cancelling running calls")
        self._cancel_all()

    def _cancel_all(self) -> None:
        with self._calls_lock:
            calls = list(self._calls.values())
        for call in calls:
            call.cancel.fire()


def _encode(msg: Dict[str, Any]) -> bytes:
    """One message as one line of UTF-8 (json.dumps escapes newlines inside strings). Text
    stays readable (no ``\\u`` escapes), except in a message holding a lone surrogate (a
    client's id echoed back), which UTF-8 cannot encode: that one is all ASCII escapes, which
    a JSON parser reads back to the very value the client sent."""
    text = jsontext.dumps_compact(msg) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(msg, separators=(",", ":")) + "\n").encode("ascii")


def error_result(text: str) -> Dict[str, Any]:
    """A tool result that reports a failure to the model (not a protocol error)."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _not_text(msg: Dict[str, Any]) -> Optional[RpcError]:
    """The error for a message with a string that is not Unicode text (a lone surrogate
    such as ``"\\ud800"``): nothing downstream (a prompt on a pipe, a session file, a log
    line) could encode it. Invalid params when it is in params, else an invalid request."""
    where = jsontext.lone_surrogate_path({k: v for k, v in msg.items() if k != "params"})
    code = INVALID_REQUEST
    if where is None:
        where = jsontext.lone_surrogate_path(msg.get("params"), "params")
        code = INVALID_PARAMS
    if where is None:
        return None
    return RpcError(code, "%s holds a lone surrogate (such as \\ud800), which is not Unicode "
                    "text: send text that can be encoded as UTF-8" % where)


def _id_of(msg: Any) -> Any:
    if isinstance(msg, dict) and _valid_id(msg.get("id")):
        return msg["id"]
    return None
