"""The HTTP server: connections, the request pipeline, running backends for handlers, shutdown.

One request goes: request line and headers (``http.server``) -> ``Context`` -> route match ->
the pipeline ``App.steps`` (each may answer instead of the handler) -> the route's handler ->
``App.response_hooks`` add headers -> the response is written -> one access-log line.

Extension points for the layers above this one:
- ``App.add_route(spec, handler)``: ``spec`` is an ``openapi.Route`` (method, path template,
  tag = API style, request schema, ``public``); ``handler(ctx)`` returns a ``Response`` or a
  ``StreamResponse``, or raises (``errors.ApiError`` or an engine error).
- ``App.steps``: callables ``step(ctx) -> Optional[Response]`` run in order before the handler,
  for every request, matched or not (``ctx.endpoint`` is None for an unknown path); a step
  answers by returning a Response or raising an ApiError. Auth, Host check, CORS preflight
  and rate limiting go here, after ``assign_request_id`` (the first step).
- ``App.response_hooks``: callables ``hook(ctx, headers)`` that may append ``(name, value)``
  pairs to every response, errors and streams included (CORS headers).
- ``errors.register_style``: how an API style renders errors.

Handlers never start processes themselves: ``ctx.prepare`` / ``ctx.run`` / ``ctx.stream`` go
through ``execute`` with the server's policy, timeout, run-slot limit and disconnect watch.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email.utils
import io
import json
import os
import queue
import re
import select
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs

from .. import __version__, execute, jsontext, runner
from ..backends import probe
from ..policy import Policy
from . import errors, framing
from .limits import Abandoned, Busy, ConnectionLimiter, RunLimiter
from .openapi import NATIVE, Route as Spec
from .router import Router
from .schema import validate

JSON_TYPE = "application/json"
MAX_LINE = 65536                   # request line and header line limit, as http.server's


def is_json_media_type(content_type: str) -> bool:
    """True for ``application/json`` and ``application/*+json`` (RFC 6839), any case, with
    or without parameters (``; charset=utf-8``). False for a missing Content-Type: a browser
    page can send a Blob body with none and no CORS preflight, so a body is JSON only when it
    says so."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json"))


# -- responses ---------------------------------------------------------------------------------


class Response:
    """A whole response: status, body bytes, headers as (name, value) pairs."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes = b"", content_type: str = JSON_TYPE,
                 headers: Iterable[Tuple[str, str]] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)
        if body or content_type != JSON_TYPE:
            self.headers.insert(0, ("Content-Type", content_type))


class StreamResponse:
    """A response whose body is written chunk by chunk as ``chunks`` yields them, each sent
    to the client at once (HTTP/1.1 chunked encoding). With ``keepalive_secs``, the
    ``keepalive_chunk`` is sent whenever ``chunks`` stays silent that long (SSE comments)."""

    def __init__(self, chunks: Iterable[bytes], content_type: str, status: int = 200,
                 headers: Iterable[Tuple[str, str]] = (), keepalive_secs: float = 0.0,
                 keepalive_chunk: bytes = b"") -> None:
        self.chunks = chunks
        self.content_type = content_type
        self.status = status
        self.headers = list(headers)
        self.keepalive_secs = keepalive_secs
        self.keepalive_chunk = keepalive_chunk


def json_response(obj: Any, status: int = 200,
                  headers: Iterable[Tuple[str, str]] = ()) -> Response:
    return Response(status, dump_json(obj), JSON_TYPE, headers)


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Endpoint:
    """What the router holds for a route: its OpenAPI spec, its handler, and whether the
    OpenAPI document lists it (an alias path is served but not documented twice)."""

    __slots__ = ("spec", "handler", "documented")

    def __init__(self, spec: Spec, handler: Callable[["Context"], Any],
                 documented: bool = True) -> None:
        self.spec = spec
        self.handler = handler
        self.documented = documented


# -- the request context -----------------------------------------------------------------------


class Context:
    """One request as handlers and pipeline steps see it."""

    def __init__(self, app: "App", conn: "Handler", method: str, target: str,
                 headers, client: str) -> None:
        self.app = app
        self.method = method
        self.target = target
        path, _, self.query_string = target.partition("?")
        self.path = path
        self.headers = headers               # email.message.Message: case-insensitive get()
        self.client = client                 # the peer address (issue 7 may refine it)
        self.scheme = "http"                 # https when a trusted proxy terminated TLS
        self.api_key = None                  # keys.KeyIdentity, set by the authenticate guard
        self.request_id = ""
        self.endpoint: Optional[Endpoint] = None
        self.params: Dict[str, str] = {}
        self.style = NATIVE
        self.cancel = execute.Cancel()
        self.started = time.monotonic()
        self.max_body = app.max_body
        self.body_consumed = False
        self._conn = conn
        self._body: Optional[bytes] = None
        self._cleanups: List[Callable[[], None]] = []
        self._watch_depth = 0
        self._watch: Optional["_Watch"] = None

    # -- reading the request ----------------------------------------------------------------

    @property
    def route_template(self) -> str:
        """The matched template (for metrics and logs), or "unmatched"."""
        return self.endpoint.spec.path if self.endpoint is not None else "unmatched"

    def query(self) -> Dict[str, str]:
        """The query parameters (the first value of each)."""
        parsed = parse_qs(self.query_string, keep_blank_values=True, errors="replace")
        return {k: v[0] for k, v in parsed.items()}

    @property
    def declared_length(self) -> Optional[int]:
        """The Content-Length the connection layer checked (None when chunked or absent)."""
        return self._conn.body_length

    def has_body(self) -> bool:
        return self._conn.chunked or bool(self._conn.body_length)

    def read_body(self) -> bytes:
        """The raw body (Content-Length or chunked), at most ``max_body`` bytes (else 413)."""
        if self._body is None:
            self._body = self._conn.read_body(self)
            self.body_consumed = True
        return self._body

    def json_body(self) -> Dict[str, Any]:
        """The body as a JSON object, validated against the route's request schema (unknown
        fields dropped, defaults filled in). 415 / 400 / 413 otherwise."""
        content_type = self.headers.get("Content-Type", "")
        if not is_json_media_type(content_type):
            raise errors.unsupported_media_type(content_type)
        raw = self.read_body()
        if not raw.strip():
            raise errors.bad_body("the request body is empty: send a JSON object")
        try:
            data = jsontext.loads(raw)
        except ValueError as exc:
            raise errors.bad_body("the request body is not valid JSON: %s" % exc)
        if not isinstance(data, dict):
            raise errors.bad_body("the request body must be a JSON object, got %s"
                                  % _json_kind(data))
        # Checked on the whole body, unknown fields included, before any handler sees it: a
        # lone surrogate cannot be written to a backend's stdin, a session file or a reply.
        where = jsontext.lone_surrogate_path(data)
        if where is not None:
            raise errors.invalid("not Unicode text: it holds a lone surrogate escape (one of "
                                 "\\ud800-\\udfff without its pair), which cannot be encoded "
                                 "as UTF-8; send the character itself or a complete pair",
                                 where)
        schema = self.endpoint.spec.request if self.endpoint is not None else None
        return validate(schema, data) if schema is not None else data

    # -- running backends -------------------------------------------------------------------

    def prepare(self, request: execute.Request, stream: bool = False) -> execute.Prepared:
        """``execute.prepare`` with the server's policy and request timeout, the sessions the
        caller may use and how long a busy session is waited for; engine errors become
        ApiErrors (400 / 404 / 409 / 503)."""
        if not request.timeout and self.app.request_timeout:
            request.timeout = self.app.request_timeout
        request.access = self.session_access()
        request.session_wait = self.app.cfg.get("server.session_busy_wait_secs")
        try:
            return execute.prepare(request, self.app.cfg, self.app.store, self.app.policy,
                                   stream=stream)
        except Exception as exc:
            raise errors.from_exception(exc) or exc

    def session_access(self):
        """The sessions this request may use (a ``sessions.Access``): without API keys, all;
        with keys, those created with its key, or all of them for an admin key."""
        from ..sessions import Access
        if not self.app.guards.keys:
            return Access()
        if self.api_key is None:             # a public route: no key was checked
            return Access("", everything=False)
        return Access(self.api_key.key_id, everything=self.api_key.admin)

    def run(self, prepared: execute.Prepared) -> execute.Outcome:
        """Run to completion in a run slot, cancelled if the client hangs up. A run killed by
        the request timeout is a 504; one cancelled by the server (shutdown) a 503."""
        release = self.hold_run_slot()
        try:
            outcome = execute.run(prepared, self.app.store, self.cancel)
        except execute.ExecError as exc:
            raise errors.from_exception(exc) or exc
        finally:
            release()
        self.app.record_run(prepared.backend.name, outcome_label(outcome),
                            outcome.result.duration_ms, outcome.result.usage)
        if outcome.timed_out:
            raise errors.timeout(outcome.result.error, outcome.session_id)
        if outcome.cancelled:
            raise errors.cancelled(outcome.result.error or "the run was cancelled")
        return outcome

    def stream(self, prepared: execute.Prepared) -> Iterator[Any]:
        """The run's unified events. The run slot is taken now (so a full server is still a
        503, before any byte is sent) and released when the events end or the response is
        done, whichever comes first."""
        release = self.hold_run_slot()
        return self._events(prepared, release)

    def _events(self, prepared: execute.Prepared, release: Callable[[], None]) -> Iterator[Any]:
        collected: List[execute.Outcome] = []
        events = execute.stream(prepared, self.app.store, self.cancel, collected)
        try:
            for event in events:
                yield event
        finally:
            events.close()
            release()
        if collected:
            outcome = collected[0]
            self.app.record_run(prepared.backend.name, outcome_label(outcome),
                                outcome.result.duration_ms, outcome.result.usage)

    def hold_run_slot(self, count: int = 1) -> Callable[[], None]:
        """Take ``count`` run slots (one per backend process the request may run at once),
        waiting in the queue (503 when none free up in time) while watching for the client
        hanging up; returns the idempotent release, which also runs when the request ends."""
        self.watch_client()
        try:
            taken = self.app.limiter.acquire(count, abandoned=lambda: self.cancel.fired)
        except Busy as exc:
            self.unwatch_client()
            raise errors.busy(exc.retry_after, exc.limit, exc.waited)
        except Abandoned:
            self.unwatch_client()
            raise errors.cancelled("the request was cancelled while it waited for a run slot "
                                   "(client gone or server shutting down)")
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):
                self.app.limiter.release(taken)
                self.unwatch_client()
        self._cleanups.append(release)
        return release

    def watch_client(self) -> None:
        """Fire ``self.cancel`` if the client hangs up before ``unwatch_client``; nests."""
        self._watch_depth += 1
        if self._watch_depth == 1:
            self._watch = self.app.watcher.watch(self._conn.connection, self.cancel.fire)

    def unwatch_client(self) -> None:
        self._watch_depth -= 1
        if self._watch_depth == 0 and self._watch is not None:
            self._watch.stop()
            self._watch = None

    def base_url(self) -> str:
        """``http://`` plus the Host the client used (when sane), else the bound address."""
        host = self.headers.get("Host", "")
        if _SANE_HOST.match(host):
            return "%s://%s" % (self.scheme, host)
        return server_url(self._conn.server)

    def on_finish(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the response has been written (or abandoned)."""
        self._cleanups.append(fn)

    def finish(self) -> None:
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception:  # noqa: BLE001 - one failing cleanup must not skip the others
                self.app.log.error("cleanup failed", self.request_id, traceback.format_exc())


def outcome_label(outcome: execute.Outcome) -> str:
    """The metrics label of a finished run."""
    if outcome.timed_out:
        return "timeout"
    if outcome.cancelled:
        return "cancelled"
    return "success" if outcome.ok else "failure"


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


# -- pipeline steps and hooks of this issue ----------------------------------------------------

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}\Z")
_SANE_HOST = re.compile(r"([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?\Z")


def new_request_id() -> str:
    return os.urandom(8).hex()


def assign_request_id(ctx: Context) -> None:
    """Keep the client's X-Request-Id when it is short and printable, else make one."""
    given = ctx.headers.get("X-Request-Id", "")
    ctx.request_id = given if _SANE_REQUEST_ID.match(given) else new_request_id()


def refuse_while_draining(ctx: Context) -> Optional[Response]:
    """During shutdown, a new request on a kept-alive connection gets 503 and a close."""
    if ctx.app.draining:
        raise errors.shutting_down()
    return None


def refuse_oversized_body(ctx: Context) -> Optional[Response]:
    """A Content-Length over the limit is refused before reading any of the body."""
    length = ctx.declared_length
    if length is not None and length > ctx.max_body:
        raise errors.too_large(ctx.max_body)
    return None


def echo_request_id(ctx: Context, headers: List[Tuple[str, str]]) -> None:
    headers.append(("X-Request-Id", ctx.request_id))


# -- the application ---------------------------------------------------------------------------


class App:
    """The server's state: configuration, session store, policy, run limiter, routes,
    pipeline, metrics, access log; ``handle(ctx)`` answers one request."""

    def __init__(self, cfg, store=None, log: Optional["AccessLog"] = None) -> None:
        from ..sessions import SessionStore
        self.cfg = cfg
        self.store = store if store is not None else SessionStore(cfg.home)
        self.policy = Policy.from_config(cfg)
        self.limiter = RunLimiter(cfg.get("server.max_concurrent_runs"),
                                  cfg.get("server.queue_timeout_secs"))
        self.request_timeout = cfg.get("server.request_timeout_secs") or None
        self.max_body = cfg.get("server.max_request_body_bytes")
        self.read_timeout = cfg.get("server.read_timeout_secs")
        self.idle_timeout = cfg.get("server.idle_timeout_secs")
        self.write_timeout = cfg.get("server.write_timeout_secs") or None
        self.log = log or AccessLog(cfg.get("server.log_format"))
        self.metrics = None
        if cfg.get("server.metrics_enabled"):
            from .metrics import ServerMetrics
            self.metrics = ServerMetrics(__version__, self.store.count)
        self.router = Router()
        self.steps: List[Callable[[Context], Optional[Response]]] = [
            assign_request_id, refuse_while_draining, refuse_oversized_body]
        self.response_hooks: List[Callable[[Context, List[Tuple[str, str]]], None]] = [
            echo_request_id]
        from . import guards
        self.guards = guards.install(self)      # auth, rate limit, Host, CORS (issue 7)
        self.watcher = DisconnectWatcher()
        self.started = time.monotonic()
        self.draining = False
        self._busy = threading.Condition()
        self._in_flight: Dict[Context, None] = {}
        from . import anthropic, native, openai
        for api in (native, openai, anthropic):
            api.register(self)

    def add_route(self, spec: Spec, handler: Callable[[Context], Any], path: str = "",
                  documented: bool = True) -> None:
        """Serve ``spec`` (at ``path`` instead of ``spec.path`` for an alias, which is then
        usually not ``documented``) with ``handler``."""
        self.router.add(spec.method, path or spec.path, Endpoint(spec, handler, documented))

    def specs(self) -> List[Spec]:
        """The OpenAPI specs of the documented routes, in registration order."""
        return [r.target.spec for r in self.router.routes if r.target.documented]

    def handle(self, ctx: Context) -> Any:
        """Route, run the steps, call the handler; every failure becomes an error response."""
        match = self.router.match(ctx.method, ctx.path)
        if match.route is not None:
            ctx.endpoint = match.route.target
            ctx.params = match.params
            ctx.style = ctx.endpoint.spec.tag
        else:
            ctx.style = errors.style_for_path(ctx.path)
        try:
            for step in self.steps:
                answer = step(ctx)
                if answer is not None:
                    return answer
            if ctx.endpoint is None:
                if not match.allow:
                    raise errors.not_found(ctx.method, ctx.path)
                if ctx.method == "OPTIONS":
                    return Response(204, headers=[("Allow", ", ".join(match.allow))])
                raise errors.method_not_allowed(ctx.method, ctx.path, match.allow)
            return ctx.endpoint.handler(ctx)
        except Exception as exc:  # noqa: BLE001 - every failure is answered
            return self.error_response(ctx, exc)

    def error_for(self, ctx: Context, exc: BaseException) -> errors.ApiError:
        """The ApiError for ``exc``; an unexpected one is logged with its traceback and
        becomes a 500 that names the request id."""
        err = errors.from_exception(exc)
        if err is None:
            self.log.error("unhandled error", ctx.request_id, "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)))
            err = errors.internal(ctx.request_id)
        return err

    def error_response(self, ctx: Context, exc: BaseException) -> Response:
        err = self.error_for(ctx, exc)
        return Response(err.status, errors.render(err, ctx.style), JSON_TYPE,
                        err.headers.items())

    def record_run(self, backend: str, outcome: str, duration_ms: int, usage=None) -> None:
        """Count a finished backend run (outcome: success, failure, timeout, cancelled)."""
        if self.metrics is not None:
            self.metrics.run_finished(backend, outcome, duration_ms / 1000.0, usage)

    # -- requests in flight (for shutdown) ----------------------------------------------------

    def request_started(self, ctx: Context) -> None:
        with self._busy:
            self._in_flight[ctx] = None
        if self.metrics is not None:
            self.metrics.request_started()

    def request_finished(self, ctx: Context, status: int) -> None:
        seconds = time.monotonic() - ctx.started
        if self.metrics is not None:
            self.metrics.request_finished(ctx.method, ctx.route_template, status, seconds)
        self.log.request(ctx, status, seconds)
        with self._busy:
            self._in_flight.pop(ctx, None)
            self._busy.notify_all()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def cancel_all(self) -> int:
        """Fire the cancel token of every request in flight: their backends are stopped and
        nothing new starts for them (a parallel run's waiting tasks included)."""
        with self._busy:
            pending = list(self._in_flight)
        for ctx in pending:
            ctx.cancel.fire()
        return len(pending)

    def wait_idle(self, seconds: float, interrupted: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no request is in flight; False after ``seconds`` or once
        ``interrupted()`` turns true."""
        deadline = time.monotonic() + seconds
        with self._busy:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or interrupted():
                    return False
                self._busy.wait(min(left, 0.1))
        return True


# -- the access log ----------------------------------------------------------------------------


class AccessLog:
    """One line per request on stderr (text or JSON lines), plus server events. Never a
    prompt, a body or a header value: only method, path, status, duration, id, client."""

    def __init__(self, fmt: str = "text", stream=None) -> None:
        self.json = fmt == "json"
        self._stream = stream
        self._lock = threading.Lock()

    def request(self, ctx: Context, status: int, seconds: float) -> None:
        fields = {"method": _printable(ctx.method), "path": _printable(ctx.path),
                  "status": status, "duration_ms": round(seconds * 1000, 1),
                  "request_id": ctx.request_id, "client": ctx.client}
        if self.json:
            self._write(dict({"time": _now(), "level": "info", "msg": "request"}, **fields))
        else:
            self._write_text("%s %s %s %d %.1fms id=%s %s" % (
                _now(), fields["method"], fields["path"], status, fields["duration_ms"],
                ctx.request_id, ctx.client))

    def info(self, msg: str, **fields: Any) -> None:
        if self.json:
            self._write(dict({"time": _now(), "level": "info", "msg": msg}, **fields))
        else:
            self._write_text("%s %s" % (_now(), msg))

    def error(self, msg: str, request_id: str = "", details: str = "") -> None:
        if self.json:
            self._write({"time": _now(), "level": "error", "msg": msg, "request_id": request_id,
                         "details": details})
        else:
            self._write_text("%s ERROR %s%s%s" % (_now(), msg, " id=%s" % request_id
                                                  if request_id else "",
                                                  "\n" + details.rstrip() if details else ""))

    def _write(self, record: Dict[str, Any]) -> None:
        self._write_text(json.dumps(record, ensure_ascii=False, separators=(",", ":")))

    def _write_text(self, line: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass


def _now() -> str:
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def _printable(text: str, limit: int = 300) -> str:
    """A request value made safe for a log line (no control characters), cut to ``limit``."""
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


# -- noticing clients that hang up -------------------------------------------------------------


class _Watch:
    """One watched connection; ``stop()`` ends the watch (idempotent)."""

    def __init__(self, watcher: "DisconnectWatcher", sock: socket.socket,
                 on_gone: Callable[[], None]) -> None:
        self.watcher = watcher
        self.sock = sock
        self.on_gone = on_gone
        self.registered = False

    def stop(self) -> None:
        self.watcher.unwatch(self)


class DisconnectWatcher:
    """One thread for the whole server that notices when a client hangs up while its request
    is running: its socket turns readable and a peek reads end-of-file (or a reset).

    A client that sends more bytes (a pipelined request) cannot be told apart from one that is
    still there, so its watch simply ends. A client that half-closes its side after sending
    the request counts as gone.
    """

    SELECT_SECS = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: Optional[selectors.BaseSelector] = None

    def watch(self, sock: socket.socket, on_gone: Callable[[], None]) -> _Watch:
        w = _Watch(self, sock, on_gone)
        with self._lock:
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
                threading.Thread(target=self._loop, name="clinvk-disconnect-watcher",
                                 daemon=True).start()
            try:
                self._selector.register(sock, selectors.EVENT_READ, w)
                w.registered = True
            except (KeyError, ValueError, OSError):
                pass                      # closed already, or watched by an outer watch
        return w

    def unwatch(self, w: _Watch) -> None:
        with self._lock:
            if w.registered:
                w.registered = False
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(w.sock)

    def _loop(self) -> None:
        while True:
            try:
                ready = self._selector.select(self.SELECT_SECS)
            except (OSError, ValueError):
                time.sleep(self.SELECT_SECS)
                continue
            for key, _ in ready:
                w = key.data
                gone = _peer_gone(w.sock)
                with self._lock:
                    if not w.registered:
                        continue
                    w.registered = False
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        self._selector.unregister(w.sock)
                if gone:
                    w.on_gone()


def _no_request_arriving(sock: socket.socket) -> bool:
    """True unless bytes (or an end) wait on ``sock``: an idle connection whose request has
    just started to arrive is spared when a slot is reclaimed. poll, not recv: a socket with
    a timeout makes Python's recv wait for data even with MSG_DONTWAIT, and select() cannot
    take descriptors past 1023."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def _peer_gone(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


# -- connections -------------------------------------------------------------------------------


class _DeadlineSocketIO(socket.SocketIO):
    """The connection as the request reader sees it: while ``deadline`` (a monotonic time) is
    set, each read waits only for what is left of it, so a client that trickles its request
    a byte at a time is cut off at server.read_timeout_secs all the same."""

    deadline: Optional[float] = None

    def readinto(self, b) -> Optional[int]:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("the request took longer than server.read_timeout_secs")
            self._sock.settimeout(left)
        return super().readinto(b)


class Handler(BaseHTTPRequestHandler):
    """One connection: reads requests (keep-alive), hands them to the App, writes responses."""

    protocol_version = "HTTP/1.1"
    server_version = "clinvk/" + __version__
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()        # replaced by a reader that honours the request deadline
        self._reader = _DeadlineSocketIO(self.connection, "rb")
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        app: App = self.server.app
        slots: ConnectionLimiter = self.server.connections
        try:
            # Idle keep-alive: wait for the first byte; from then on the whole request
            # (line, headers, body) must arrive within read_timeout.
            self._reader.deadline = None
            self.connection.settimeout(app.idle_timeout)
            slots.mark_idle(self.connection)
            self.rfile.peek(1)
            if not slots.mark_head(self.connection):
                self.close_connection = True        # its slot went to a newer connection
                return
            self._reader.deadline = time.monotonic() + app.read_timeout
            self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > MAX_LINE:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
            return
        if not self._parse_head():
            return
        if self.request_version == "HTTP/0.9":
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return
        if not self._check_framing():
            return
        if not slots.mark_served(self.connection):
            self.close_connection = True            # too slow: its slot went to a newcomer
            return
        self._serve(app)

    def _parse_head(self) -> bool:
        """``parse_request`` with the raw header lines kept for ``_check_framing``: the
        stdlib's parser (an e-mail parser) silently drops what it cannot read as a header."""
        recorder = framing.LineRecorder(self.rfile)
        self._header_lines = recorder.lines
        self.body_length: Optional[int] = None
        self.chunked = False
        self._framing_checked = False
        self.rfile = recorder
        try:
            return self.parse_request()
        except OSError:
            self.close_connection = True
            return False
        finally:
            self.rfile = recorder.inner

    def _serve(self, app: App) -> None:
        target = self.path
        if not target.startswith("/") and "://" in target:
            # absolute-form (RFC 9112 3.2.2), as sent to proxies: keep the path and query
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        ctx = Context(app, self, self.command, target, self.headers, self.client_address[0])
        app.request_started(ctx)
        status = 0
        try:
            answer = app.handle(ctx)
            if isinstance(answer, StreamResponse):
                status = self._send_stream(ctx, answer)
            else:
                status = self._send(ctx, answer)
        finally:
            ctx.finish()
            app.request_finished(ctx, status)

    # -- writing ----------------------------------------------------------------------------

    def _head(self, ctx: Context, status: int, headers: List[Tuple[str, str]]) -> bytes:
        for hook in ctx.app.response_hooks:
            hook(ctx, headers)
        if self.close_connection or ctx.app.draining or (ctx.has_body()
                                                         and not ctx.body_consumed):
            # An unread body would be taken for the next request: end the connection.
            self.close_connection = True
        if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
            self.close_connection = True
        elif self.close_connection:
            headers.append(("Connection", "close"))
        elif self.request_version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        lines = ["HTTP/1.1 %d %s" % (status, _phrase(status)),
                 "Server: " + self.server_version,
                 "Date: " + email.utils.formatdate(usegmt=True)]
        lines.extend("%s: %s" % (k, _header_value(v)) for k, v in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def _send(self, ctx: Context, resp: Response) -> int:
        headers = list(resp.headers)
        if resp.status >= 200 and resp.status not in (204, 304):
            headers.append(("Content-Length", str(len(resp.body))))
        head = self._head(ctx, resp.status, headers)
        body = b"" if ctx.method == "HEAD" or resp.status in (204, 304) else resp.body
        try:
            self.connection.settimeout(ctx.app.write_timeout)
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True
        return resp.status

    def _send_stream(self, ctx: Context, resp: StreamResponse) -> int:
        chunked = self.request_version != "HTTP/1.0"
        headers = [("Content-Type", resp.content_type), ("Cache-Control", "no-cache"),
                   ("X-Accel-Buffering", "no")] + resp.headers
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True       # an HTTP/1.0 stream ends with the connection
        chunks = _with_keepalive(resp) if resp.keepalive_secs > 0 else iter(resp.chunks)
        try:
            self.connection.settimeout(ctx.app.write_timeout)
            self.wfile.write(self._head(ctx, resp.status, headers))
            if ctx.method == "HEAD":
                return resp.status
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            # The client hung up (or stalled past the write timeout): stop the run.
            self.close_connection = True
            ctx.cancel.fire()
        except Exception:  # noqa: BLE001 - a broken stream writer: cut the stream, keep serving
            ctx.app.log.error("stream failed", ctx.request_id, traceback.format_exc())
            self.close_connection = True
            ctx.cancel.fire()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return resp.status

    # -- the request head and body (RFC 9112 5, 6 and 7.1) -----------------------------------

    def _check_framing(self) -> bool:
        """Refuse (and close) a request whose header lines or body framing are not exactly
        what RFC 9112 allows; else set ``body_length`` / ``chunked`` and return True."""
        if self._framing_checked:
            return True
        self._framing_checked = True
        try:
            self.body_length, self.chunked = framing.request_framing(
                self._header_lines, self.headers, self.request_version)
        except framing.FramingError as exc:
            self.send_error(exc.status, exc.message)
            return False
        return True

    def read_body(self, ctx: Context) -> bytes:
        """The request body as ``_check_framing`` found it framed (Content-Length or
        chunked), at most ``ctx.max_body`` bytes (413 beyond); a framing error is a 400 and
        ends the connection."""
        try:
            if self.chunked:
                return self._read_chunked(ctx.max_body)
            if self.body_length is None:
                return b""
            length = self.body_length
            if length > ctx.max_body:
                raise errors.too_large(ctx.max_body)
            body = self.rfile.read(length)
        except socket.timeout:
            self.close_connection = True
            raise errors.ApiError(408, "request_timeout", "the request body did not arrive "
                                  "within server.read_timeout_secs")
        except OSError as exc:
            self.close_connection = True
            raise errors.bad_body("the request body could not be read: %s" % exc)
        if len(body) < length:
            self.close_connection = True
            raise errors.bad_body("the request body ended after %d of %d bytes"
                                  % (len(body), length))
        return body

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body (RFC 9112 7.1), refused as soon as it passes ``limit`` bytes; any
        deviation from the grammar is a 400 that ends the connection (the rest of the
        stream can no longer be trusted to start a request)."""
        try:
            return framing.read_chunked(self.rfile, limit)
        except framing.FramingError as exc:
            self.close_connection = True
            if exc.status == 413:
                raise errors.too_large(limit)
            raise errors.ApiError(exc.status, "bad_request", exc.message)

    # -- http.server hooks -------------------------------------------------------------------

    def send_error(self, code: int, message: Optional[str] = None,
                   explain: Optional[str] = None) -> None:
        """Errors http.server itself detects (bad request line, too many headers): the native
        error body, and the connection is closed."""
        code = int(code)
        err = errors.ApiError(code, _PROTOCOL_ERRORS.get(code, "bad_request"),
                              message or _phrase(code))
        body = errors.render(err, NATIVE)
        head = ["HTTP/1.1 %d %s" % (code, _phrase(code)), "Server: " + self.server_version,
                "Date: " + email.utils.formatdate(usegmt=True),
                "Content-Type: " + JSON_TYPE, "Content-Length: %d" % len(body),
                "X-Request-Id: " + new_request_id(), "Connection: close"]
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.server.app.log.info("rejected malformed request: %d %s" % (code, message or ""))

    def handle_expect_100(self) -> bool:
        """Refuse a malformed or an announced oversized body before the client sends it."""
        if not self._check_framing():
            return False
        limit = self.server.app.max_body
        if self.body_length is not None and self.body_length > limit:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, errors.too_large(limit).message)
            return False
        return super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own logging is replaced by the App's access log."""


# The codes of the errors http.server detects before a request reaches the App.
_PROTOCOL_ERRORS = {413: "request_too_large", 414: "request_line_too_long",
                    431: "headers_too_large", 501: "not_implemented",
                    505: "http_version_not_supported"}


# How many chunks a stream's producer may run ahead of the client. Past it the producer waits,
# so the backend's stdout pipe fills and the backend itself waits: a client that stops reading
# holds this many chunks plus the socket buffers, however much the backend prints.
STREAM_BUFFER_CHUNKS = 16


def _with_keepalive(resp: StreamResponse) -> Iterator[bytes]:
    """``resp.chunks`` read by a helper thread, so that silence longer than
    ``resp.keepalive_secs`` can be filled with ``resp.keepalive_chunk``. The thread runs at
    most STREAM_BUFFER_CHUNKS ahead of the writer, and when the writer stops (client gone) it
    stops too and closes ``resp.chunks``."""
    items: "queue.Queue[Any]" = queue.Queue(STREAM_BUFFER_CHUNKS)
    end = object()
    stop = threading.Event()

    def pump() -> None:
        source = iter(resp.chunks)
        try:
            for chunk in source:
                items.put(chunk)            # waits while the writer is STREAM_BUFFER_CHUNKS behind
                if stop.is_set():
                    break
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
            items.put(end)

    threading.Thread(target=pump, name="clinvk-stream-pump", daemon=True).start()
    try:
        while True:
            try:
                item = items.get(timeout=resp.keepalive_secs)
            except queue.Empty:
                yield resp.keepalive_chunk
                continue
            if item is end:
                return
            yield item
    finally:
        stop.set()
        # Free the queue so a pump waiting in put() wakes, sees ``stop`` and closes the
        # source; after ``stop`` it puts at most two more items (a chunk and ``end``).
        with contextlib.suppress(queue.Empty):
            while True:
                items.get_nowait()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _header_value(value: str) -> str:
    # A header value never carries a line break (response splitting).
    return str(value).replace("\r", " ").replace("\n", " ")


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with the App attached, TCP_NODELAY on every connection, a deep
    listen backlog, no reverse-DNS lookup of the bind address at start, and at most
    ``server.max_connections`` connections (``connections``, a ConnectionLimiter): past it,
    an idle connection (or one dripping its request head) is closed to make room, and when
    there is none the newcomer gets a 503 and is closed at once, by the accepting thread,
    without starting a thread."""

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
        super().__init__(address, Handler)

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
        body = errors.render(err, NATIVE)
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


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(app: App, host: str, port: int) -> Server:
    """A bound, listening server (IPv6 when ``host`` is an IPv6 address)."""
    cls = Server6 if ":" in host else Server
    return cls((host.strip("[]"), port), app)


def server_url(server: Server) -> str:
    host, port = server.server_address[:2]
    return "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)


# -- clinvk serve ------------------------------------------------------------------------------


def serve_command(argv: List[str]) -> int:
    """``clinvk serve [--host H] [--port P] [--config PATH] [--log-format text|json]``:
    serve until SIGTERM/SIGINT, then drain; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="clinvk serve",
        description="HTTP server: the native REST API (/api/v1), the OpenAI- and "
                    "Anthropic-compatible APIs, /health, /metrics, /openapi.json and /docs.")
    parser.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", "-p", type=_port, help="port (default: server.port, 8080; "
                        "0 = any free port)")
    parser.add_argument("--config", metavar="PATH", help="config file")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="access log format on stderr (default: server.log_format)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="serve a non-loopback address without API keys (only behind "
                             "something that authenticates clients itself)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from .. import config
    from .guards import is_loopback_host
    # --host goes into the config: the Host check needs to know whether the bind is loopback.
    flags = {"server.log_format": args.log_format, "server.host": args.host or None}
    try:
        cfg = config.load(args.config, flags=flags)
        app = App(cfg)
    except config.ConfigError as exc:
        sys.stderr.write("clinvk serve: %s\n" % exc)
        return 2
    host = cfg.get("server.host")
    port = cfg.get("server.port") if args.port is None else args.port
    if not app.guards.keys and not args.allow_unauthenticated and not is_loopback_host(host):
        sys.stderr.write(
            "clinvk serve: refusing to listen on %r without API keys: anyone who can reach it "
            "could run agents on this machine. Set CLINVK_API_KEYS=KEY1,KEY2 (or "
            "server.api_keys_file / server.api_keys_gopass_path), or pass "
            "--allow-unauthenticated if something in front of the server authenticates "
            "clients.\n" % host)
        return 2
    try:
        server = make_server(app, host, port)
    except OSError as exc:
        sys.stderr.write("clinvk serve: cannot listen on %s:%d: %s\n"
                         % (host, port, exc.strerror or exc))
        return 1
    return run_until_signalled(app, server)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("expected a port number from 0 to 65535, got %r" % text)
    return int(text)


def announce(app: App, server: Server) -> None:
    """The start-up line: where the server listens, its docs, and which backends it can run."""
    url = server_url(server)
    installed = probe.availability(ttl=0)
    have = [n for n, ok in installed.items() if ok]
    missing = [n for n, ok in installed.items() if not ok]
    keys = app.guards.keys
    auth = "on (%d key%s)" % (len(keys), "" if len(keys) == 1 else "s") if keys else \
        "off (no API keys)"
    if app.log.json:
        app.log.info("listening", url=url, docs=url + "/docs", version=__version__,
                     backends=installed, auth="on" if keys else "off", api_keys=len(keys))
    else:
        app.log.info("clinvk %s listening on %s (docs: %s/docs); backends installed: %s%s; "
                     "auth: %s" % (__version__, url, url, ", ".join(have) or "none",
                                   "; not installed: " + ", ".join(missing) if missing else "",
                                   auth))


def run_until_signalled(app: App, server: Server) -> int:
    """Serve until SIGTERM or SIGINT. Then: stop accepting, give in-flight requests
    ``server.shutdown_grace_secs`` to finish, cancel the backends still running (their
    requests answer at once), and return 0. A second signal skips the grace period."""
    signals = []

    def on_signal(signum: int, frame: Any) -> None:
        signals.append(signum)            # only a list append: safe at any point of the loop

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name="clinvk-accept", daemon=True)
        worker.start()
        announce(app, server)
        while not signals:
            time.sleep(0.1)
        drain(app, server, lambda: len(signals) > 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def drain(app: App, server: Server, hurry: Callable[[], bool] = lambda: False) -> None:
    """Stop accepting, wait for in-flight requests (up to the grace period, or until
    ``hurry()``), then cancel every backend still running and wait for the answers."""
    grace = app.cfg.get("server.shutdown_grace_secs")
    # Close the listener first: a connection nginx opens meanwhile is refused (and retried on
    # another instance), not accepted only to be answered 503.
    server.shutdown()
    server.server_close()
    app.draining = True
    app.log.info("shutting down: %d request(s) in flight, up to %ds to finish"
                 % (app.in_flight, grace))
    if not app.wait_idle(grace, hurry):
        cancelled = app.cancel_all()
        app.log.info("grace period over: cancelled %d request(s) still running" % cancelled)
        app.wait_idle(runner.DEFAULT_GRACE + 3.0)
    # Nothing this process started may outlive it (a run that slipped past the cancel).
    runner.kill_all()
    app.log.info("stopped")
