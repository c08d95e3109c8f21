"""One request as handlers and pipeline steps see it: what was asked (method, path, headers,
body as validated JSON), who asked (client address, API key), and the server's way to run a
backend for it (``prepare`` / ``run`` / ``stream``: the server's policy, timeout, run slots and
the watch for a client hanging up).

Handlers never start processes themselves: ``ctx.prepare`` / ``ctx.run`` / ``ctx.stream`` go
through ``execute``. The Context reaches the App and the connection only through the
attributes it is given (``ctx.app``, the connection layer's handler), so it imports neither.
"""

from __future__ import annotations

import os
import re
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional
from urllib.parse import parse_qs

from .. import execute, jsontext
from ..runslots import Abandoned, Busy
from ..schema import validate
from ..sessions import Access
from . import errors, remote_run
from .http import is_json_media_type
from .keys import KeyIdentity
from .openapi import NATIVE, Operation
from .profiles import requested_profile
from .ratelimit import Decision
from .runs import Run
from .watcher import Watch

_SANE_HOST = re.compile(r"([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?\Z")


def new_request_id() -> str:
    return os.urandom(8).hex()


class Endpoint:
    """What the router holds for a route: its OpenAPI operation, its handler, and whether the
    OpenAPI document lists it (an alias path is served but not documented twice)."""

    __slots__ = ("spec", "handler", "documented")

    def __init__(self, spec: Operation, handler: Callable[["Context"], Any],
                 documented: bool = True) -> None:
        self.spec = spec
        self.handler = handler
        self.documented = documented


class Context:
    """One request as handlers and pipeline steps see it.

    ``app`` is the App serving it (``app.App``); ``conn`` the connection that read it
    (``connection.ConnectionHandler``: the body framing, the socket, the listening server).
    The pipeline steps fill in ``request_id``, ``client`` and ``scheme`` (behind trusted
    proxies), ``rate_limit`` and ``api_key``; routing fills in ``endpoint``, ``params`` and
    ``style``."""

    def __init__(self, app: Any, conn: Any, method: str, target: str,
                 headers, client: str) -> None:
        self.app = app
        self.method = method
        self.target = target
        path, _, self.query_string = target.partition("?")
        self.path = path
        self.headers = headers               # email.message.Message: case-insensitive get()
        self.client = client                 # the peer, or X-Forwarded-For behind a trusted proxy
        self.scheme = "http"                 # https when a trusted proxy terminated TLS
        # Set by the authenticate guard: whose sessions the request may use.
        self.api_key: Optional[KeyIdentity] = None
        # Set by the rate-limit guard, read by its response hook (RateLimit-* headers).
        self.rate_limit: Optional[Decision] = None
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
        self._watch: Optional[Watch] = None
        # The entry of the run in flight in ``app.runs`` (the console's Runs page), if any.
        self.run_entry: Optional[Run] = None

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
        caller may use, how long a busy session is waited for and the run profile the request
        asks for (``profiles``, when the front end chose none); engine errors become
        ApiErrors (400 / 404 / 409 / 503)."""
        if not request.timeout and self.app.request_timeout:
            request.timeout = self.app.request_timeout
        request.access = self.session_access()
        request.session_wait = self.app.cfg.get("server.session_busy_wait_secs")
        if not request.profile:
            request.profile = requested_profile(self.headers, self.app.cfg)
        try:
            return execute.prepare(request, self.app.cfg, self.app.store, self.app.policy,
                                   stream=stream, elsewhere=remote_run.is_api_node(self.app))
        except Exception as exc:
            raise errors.from_exception(exc) or exc

    def session_access(self) -> Access:
        """The sessions this request may use: without API keys, all; with keys, those created
        with its key, or all of them for an admin key."""
        guards = self.app.guards
        if guards is None or not guards.keys:
            return Access()
        if self.api_key is None:             # a public route: no key was checked
            return Access("", everything=False)
        return Access(self.api_key.key_id, everything=self.api_key.admin)

    def run(self, prepared: execute.Prepared) -> execute.Outcome:
        """Run to completion in a run slot, cancelled if the client hangs up. A run killed by
        the request timeout is a 504; one cancelled by the server (shutdown) a 503; one whose
        CLI could not authenticate a 401, one its model API rate-limited a 429."""
        release = self.hold_run_slot()
        self.tag_run(prepared.backend.name, "request")
        try:
            outcome = self.run_to_end(prepared)
        except execute.ExecError as exc:
            raise errors.from_exception(exc) or exc
        finally:
            release()
        self.count_run(prepared.backend.name, outcome)
        if outcome.timed_out:
            raise errors.timeout(outcome.result.error, outcome.session_id)
        if outcome.cancelled:
            raise errors.cancelled(outcome.result.error or "the run was cancelled")
        failure = failure_class_error(outcome)
        if failure is not None:
            raise failure
        return outcome

    def run_to_end(self, prepared: execute.Prepared) -> execute.Outcome:
        """How ``run`` runs the backend once it holds its slot: ``execute.run``. A hook for a
        context whose runs are watched as they go (a durable job records their events). On an
        API node (server.role: api) a worker runs it (``remote_run``)."""
        if remote_run.is_api_node(self.app):
            return remote_run.run(self, prepared)
        return execute.run(prepared, self.app.store, self.cancel,
                           on_stderr=self._record_stderr if self.run_entry else None)

    # Whether ``fan_out_progress`` is told each backend's unified events too (``"event"``
    # reports: the fan-out's CLIs then run in streaming mode).
    wants_item_events = False

    def fan_out_progress(self, kind: str, index: int, item: Any) -> None:
        """A hook told each ``orchestrate`` progress report of the request's fan-out (see
        ``orchestrate``'s ``on_progress``): here the run in flight shows it; a durable job
        records them as its events."""
        if self.run_entry is not None:
            self.app.runs.add_backend(self.run_entry, item.backend)
            self.record_run_event({"type": "item_" + kind, "backend": item.backend,
                                   "content": {"index": index}})

    def stream(self, prepared: execute.Prepared) -> Iterator[Any]:
        """The run's unified events. The run slot is taken now, or when the events are first
        read if ``slot_waits_in_stream``; released when the events end or the response is
        done, whichever comes first."""
        if self.slot_waits_in_stream():
            return self._events(prepared, None)
        return self._events(prepared, self.hold_run_slot())

    def slot_waits_in_stream(self) -> bool:
        """Whether a stream waits for its run slot after its headers have gone out: with a
        queue (``server.queue_timeout_secs`` > 0), so that its headers and keep-alives go out
        while it waits in line (a slot that never frees up ends the stream in an error);
        without one a full server is a 503 before any byte is sent."""
        return self.app.limiter.queue_timeout > 0

    def _events(self, prepared: execute.Prepared,
                release: Optional[Callable[[], None]]) -> Iterator[Any]:
        if release is None:
            release = self.hold_run_slot()
        self.tag_run(prepared.backend.name, "stream")
        collected: List[execute.Outcome] = []
        if remote_run.is_api_node(self.app):
            events = remote_run.events(self, prepared, collected)
        else:
            events = execute.stream(prepared, self.app.store, self.cancel, collected)
        try:
            for event in events:
                self.record_run_event(event.to_dict())
                yield event
        finally:
            events.close()
            release()
        if collected:
            outcome = collected[0]
            self.count_run(prepared.backend.name, outcome)

    def count_run(self, backend: str, outcome: execute.Outcome) -> None:
        """Count a finished run in the metrics, under the key that asked for it."""
        self.app.record_run(backend, outcome_label(outcome), outcome.result.duration_ms,
                            outcome.result.usage, self.key_id)

    def hold_run_slot(self, count: int = 1,
                      outlive_request: bool = False) -> Callable[[], None]:
        """Take ``count`` run slots (one per backend process the request may run at once),
        waiting in the queue (503 when none free up in time) while watching for the client
        hanging up; returns the idempotent release, which also runs when the request ends
        unless ``outlive_request`` (a parked run keeps its slot after its request).
        Until released the run is in ``app.runs``, where an operator can watch and cancel it."""
        self.watch_client()
        entry = self.run_entry = self.app.runs.register(
            self.method, self.route_template, self.client, self.key_id, self.request_id,
            self.cancel.fire)
        try:
            taken = self.app.limiter.acquire(count, abandoned=lambda: self.cancel.fired)
        except Busy as exc:
            self.app.runs.unregister(entry)
            self.unwatch_client()
            raise errors.busy(exc.retry_after, exc.limit, exc.waited)
        except Abandoned:
            self.app.runs.unregister(entry)
            self.unwatch_client()
            raise errors.cancelled("the request was cancelled while it waited for a run slot "
                                   "(client gone or server shutting down)")
        self.app.runs.started(entry)
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):
                self.app.limiter.release(taken)
                self.app.runs.unregister(entry)
                if not outlive_request:
                    self.unwatch_client()
        self._cleanups.append(self.unwatch_client if outlive_request else release)
        return release

    @property
    def key_id(self) -> str:
        """The id of the API key the request carried ("" without keys or on a public route)."""
        return self.api_key.key_id if self.api_key is not None else ""

    def tag_run(self, backend: str, kind: str) -> None:
        """Name the backend (and kind: request, stream) of the run in flight."""
        if self.run_entry is not None:
            self.run_entry.kind = kind
            self.app.runs.add_backend(self.run_entry, backend)

    def record_run_event(self, event: Dict[str, Any]) -> None:
        """Show ``event`` (a unified event's dict) to those watching the run in flight."""
        if self.run_entry is not None:
            self.app.runs.record(self.run_entry, event)

    def _record_stderr(self, line: str) -> None:
        self.record_run_event({"type": "stderr", "content": {"text": line}})

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
        return self._conn.server.url

    def on_finish(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the response has been written (or abandoned)."""
        self._cleanups.append(fn)

    def finish(self) -> None:
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception:  # noqa: BLE001 - one failing cleanup must not skip the others
                self.app.log.error("cleanup failed", self.request_id, traceback.format_exc())


def failure_class_error(outcome: execute.Outcome) -> Optional[errors.ApiError]:
    """The 401 or 429 of a run that failed for want of credentials or for its model API's
    rate limit, else None."""
    r = outcome.result
    if outcome.error_kind == execute.ErrorKind.NOT_AUTHENTICATED:
        return errors.backend_not_authenticated(r.backend, r.error, outcome.session_id)
    if outcome.error_kind == execute.ErrorKind.RATE_LIMITED:
        return errors.backend_rate_limited(r.backend, r.error, outcome.retry_after,
                                           outcome.session_id)
    return None


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
