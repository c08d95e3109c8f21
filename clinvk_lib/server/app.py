"""The App: the server's state and the request pipeline, independent of sockets and of the
API styles served.

One request goes: request line and headers (``connection``) -> ``Context`` -> route match ->
the pipeline ``App.steps`` (each may answer instead of the handler) -> the route's handler ->
``App.response_hooks`` add headers -> the response is written -> one access-log line.

Extension points for the layers above this one (``serve.build_app`` wires them):
- ``App.add_route(spec, handler)``: ``spec`` is an ``openapi.Operation`` (method, path
  template, tag = API style, request schema, ``public``); ``handler(ctx)`` returns a
  ``Response`` or a ``StreamResponse``, or raises (``errors.ApiError`` or an engine error).
- ``App.steps``: callables ``step(ctx) -> Optional[Response]`` run in order before the handler,
  for every request, matched or not (``ctx.endpoint`` is None for an unknown path); a step
  answers by returning a Response or raising an ApiError. Auth, Host check, CORS preflight
  and rate limiting go here, after ``assign_request_id`` (the first step).
- ``App.response_hooks``: callables ``hook(ctx, headers)`` that may append ``(name, value)``
  pairs to every response, errors and streams included (CORS headers).
- ``App.error_styles.register``: how an API style renders errors.

A route whose Operation has ``starts_runs`` answers a retry carrying the same
``Idempotency-Key`` with the first request's answer (``App.idempotency``), never a second run.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import __version__
from ..config import Config
from ..policy import Policy
from ..runslots import RunLimiter
from ..sessions import SessionStore
from . import errors
from .accesslog import AccessLog
from .context import Context, Endpoint, new_request_id
from .http import JSON_TYPE, Response
from .idempotency import IdempotencyKeys
from .openapi import Operation
from .router import Router
from .runs import RunRegistry
from .watcher import DisconnectWatcher

# -- the steps every App runs ------------------------------------------------------------------

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}\Z")


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
    pipeline, error styles, metrics, access log; ``handle(ctx)`` answers one request.

    A new App serves no route and checks nothing beyond its own steps: ``serve.build_app``
    installs the guards (``guards``) and registers the API styles' routes."""

    def __init__(self, cfg: Config, store: Optional[SessionStore] = None,
                 log: Optional[AccessLog] = None) -> None:
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
            # lazy: start-up. Metrics are off by default and their import costs 5-15 ms,
            # about 5% of `clinvk serve`'s imports (measured on CPython 3.11).
            from .metrics import ServerMetrics
            self.metrics = ServerMetrics(__version__, self.store.count)
        self.router = Router()
        self.error_styles = errors.ErrorStyles()
        self.steps: List[Callable[[Context], Optional[Response]]] = [
            assign_request_id, refuse_while_draining, refuse_oversized_body]
        self.response_hooks: List[Callable[[Context, List[Tuple[str, str]]], None]] = [
            echo_request_id]
        self.guards: Any = None                 # a guards.Guards once serve.build_app installs it
        self.jobs: Any = None                   # a job_runner.JobRunner, likewise
        self.tool_bridge: Any = None            # a toolcalls.Bridge, likewise
        self.shared_store: Any = None           # a redisclient.Client when server.store is set
        self.shared_usage: Any = None           # a usage_shared.SharedUsage, likewise (metrics on)
        self.idempotency = IdempotencyKeys.from_config(cfg)
        self.runs = RunRegistry()               # the runs in flight (GET /api/v1/runs)
        self.watcher = DisconnectWatcher()
        self.started = time.monotonic()
        self.draining = False
        self._busy = threading.Condition()
        self._in_flight: Dict[Context, None] = {}

    def add_route(self, spec: Operation, handler: Callable[[Context], Any], path: str = "",
                  documented: bool = True) -> None:
        """Serve ``spec`` (at ``path`` instead of ``spec.path`` for an alias, which is then
        usually not ``documented``) with ``handler``."""
        self.router.add(spec.method, path or spec.path, Endpoint(spec, handler, documented))

    def specs(self) -> List[Operation]:
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
            ctx.style = self.error_styles.for_path(ctx.path)
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
            if ctx.endpoint.spec.starts_runs:
                return self.idempotency.answer(ctx, self.call_handler)
            return ctx.endpoint.handler(ctx)
        except Exception as exc:  # noqa: BLE001 - every failure is answered
            return self.error_response(ctx, exc)

    def call_handler(self, ctx: Context) -> Any:
        """The route handler's answer, a failure answered as an error response (so that an
        idempotency key keeps failures as well)."""
        try:
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
        return Response(err.status, self.error_styles.render(err, ctx.style), JSON_TYPE,
                        err.headers.items())

    def record_run(self, backend: str, outcome: str, duration_ms: int, usage=None,
                   key_id: str = "") -> None:
        """Count a finished backend run (outcome: success, failure, timeout, cancelled), and
        for the API key (its id) that asked for it, when there is one."""
        if self.metrics is not None:
            self.metrics.run_finished(backend, outcome, duration_ms / 1000.0, usage, key_id)
        if self.shared_usage is not None:
            self.shared_usage.count_run(backend, outcome, duration_ms / 1000.0, usage, key_id)

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
        if self.shared_usage is not None:
            self.shared_usage.count_request(ctx.method, ctx.route_template, seconds, ctx.key_id)
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
