"""Every failure the server reports, as an HTTP status plus an error body in the caller's style.

Handlers and pipeline steps raise ``ApiError`` (or let an engine error through:
``from_exception`` maps ``execute.ExecError``, ``schema.ValidationError``,
``policy.PolicyError`` and session errors). The status decision
lives here once; the body shape belongs to the API style of the route, chosen by the route's
OpenAPI tag, or for a path without a route by its prefix. The native style is
``{"error": <code>, "message": <text>}``; the OpenAI and Anthropic layers register their own
renderers on the App's ``ErrorStyles``.

Validation errors are 400, not 422: a bad value is a bad request whether the schema or the
engine catches it (``backend: "foo"`` is 400 either way), and the OpenAI and Anthropic APIs,
whose clients must see the same statuses, answer 400 too.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import execute, session_record
from ..execute import ErrorKind
from ..policy import PolicyError
from ..schema import ValidationError
from ..textutil import printable
from .http import dump_json
from .openapi import META, NATIVE

# How much of a client's method or path an error message echoes.
_ECHOED_CHARS = 200


class ApiError(Exception):
    """A failure to report: ``status``, a stable ``code`` (``invalid_request``,
    ``backend_not_installed``, ...), a ``message`` that says how to fix it, the request
    ``field`` it concerns (``tasks[1].backend``; "" when none), extra response ``headers``
    (``Retry-After``), and ``extra`` members a native body carries (``session_id``)."""

    def __init__(self, status: int, code: str, message: str, field: str = "",
                 headers: Optional[Dict[str, str]] = None,
                 extra: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def __repr__(self) -> str:
        return "ApiError(%d, %r, %r)" % (self.status, self.code, self.message)


Renderer = Callable[[ApiError], Dict[str, Any]]


def native_body(err: ApiError) -> Dict[str, Any]:
    """``{"error": code, "message": text}``, plus ``field`` and any extra members."""
    body: Dict[str, Any] = {"error": err.code, "message": err.message}
    if err.field:
        body["field"] = err.field
    body.update(err.extra)
    return body


def native_json(err: ApiError) -> bytes:
    """The native body as JSON bytes: for the errors answered before any route is known."""
    return dump_json(native_body(err))


class ErrorStyles:
    """The error body each API style writes, and the style of each path prefix. Every App
    owns one; an API style's ``register(app)`` adds its renderer. Native (and meta) routes,
    unknown styles and unclaimed paths get the native body."""

    def __init__(self) -> None:
        self._renderers: Dict[str, Renderer] = {NATIVE: native_body, META: native_body}
        self._prefixes: List[Tuple[str, str]] = []

    def register(self, style: str, renderer: Renderer, path_prefix: str = "") -> None:
        """Render errors of routes tagged ``style`` with ``renderer``; with ``path_prefix``,
        also errors of unmatched paths under it (a 404 under ``/openai/`` is an OpenAI
        error). The longest registered prefix wins."""
        self._renderers[style] = renderer
        if path_prefix:
            kept = [p for p in self._prefixes if p[0] != path_prefix]
            self._prefixes = sorted(kept + [(path_prefix, style)], key=lambda p: -len(p[0]))

    def for_path(self, path: str) -> str:
        """The API style of a path no route matched (native unless a style claimed its
        prefix)."""
        for prefix, style in self._prefixes:
            if path.startswith(prefix):
                return style
        return NATIVE

    def render(self, err: ApiError, style: str) -> bytes:
        """The JSON body of ``err`` in ``style`` (the native style for an unknown one)."""
        return dump_json(self._renderers.get(style, native_body)(err))


# -- the status of each failure ----------------------------------------------------------------

# execute.ExecError kinds -> (status, code); SESSION depends on the cause (below). A backend
# the server cannot run is 503, so a client can tell "this server cannot do that now" from
# "you asked for nonsense".
_EXEC_KINDS = {
    ErrorKind.INVALID: (400, "invalid_request"),
    ErrorKind.UNKNOWN_BACKEND: (400, "unknown_backend"),
    ErrorKind.DISABLED: (503, "backend_disabled"),
    ErrorKind.NOT_INSTALLED: (503, "backend_not_installed"),
    ErrorKind.START: (500, "backend_start_failed"),
}


def from_exception(exc: BaseException) -> Optional[ApiError]:
    """The ApiError for an engine exception, or None when it is not one we know (a bug)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValidationError):
        return invalid(exc.message, exc.path)
    if isinstance(exc, PolicyError):
        return invalid(str(exc), exc.field)
    if isinstance(exc, execute.ExecError):
        if exc.kind == ErrorKind.SESSION:
            return _session_error(exc.__context__, str(exc), exc.field)
        status, code = _EXEC_KINDS.get(exc.kind, (500, "internal_error"))
        return ApiError(status, code, str(exc), exc.field)
    if isinstance(exc, session_record.SessionError):
        return _session_error(exc, str(exc), "")
    return None


def _session_error(cause: Optional[BaseException], message: str, field: str) -> ApiError:
    if isinstance(cause, session_record.SessionError):
        message = cause.public                  # the same words without the server's paths
    if isinstance(cause, LookupError):          # not found, or an ambiguous prefix
        return ApiError(404, "session_not_found", message, field)
    if isinstance(cause, session_record.SessionBusy):
        return ApiError(409, "session_busy", message, field)
    if isinstance(cause, session_record.SessionElsewhere):
        return ApiError(409, "session_worker_elsewhere", message, field)
    if isinstance(cause, session_record.StoreUnavailable):
        return ApiError(503, "session_store_unavailable", message, field)
    # The session exists but cannot be continued (no backend session id, workdir gone, ...).
    return ApiError(409, "session_not_resumable", message, field)


def invalid(message: str, field: str = "") -> ApiError:
    """400: a value the request may not have; ``field`` names it."""
    if field and not message.startswith(field + ":"):
        message = "%s: %s" % (field, message)
    return ApiError(400, "invalid_request", message, field)


def bad_body(message: str) -> ApiError:
    """400: the body is not JSON, or not a JSON object."""
    return ApiError(400, "invalid_json", message)


def unsupported_media_type(content_type: str) -> ApiError:
    """415: a body not declared JSON (``content_type`` is "" when the header is missing)."""
    got = "got %r" % content_type[:100] if content_type.strip() else "the header is missing"
    return ApiError(415, "unsupported_media_type",
                    "the request body must be JSON: send Content-Type: application/json "
                    "(or another application/*+json type); %s" % got)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large",
                    "request body exceeds the size limit of %d bytes "
                    "(server.max_request_body_bytes)" % limit)


def not_found(method: str, path: str) -> ApiError:
    return ApiError(404, "not_found", "no route for %s %s; the API is described at /docs"
                    % (method, printable(path, _ECHOED_CHARS)))


def method_not_allowed(method: str, path: str, allow: Tuple[str, ...]) -> ApiError:
    return ApiError(405, "method_not_allowed", "%s is not allowed on %s (allowed: %s)"
                    % (printable(method, _ECHOED_CHARS), printable(path, _ECHOED_CHARS),
                       ", ".join(allow)),
                    headers={"Allow": ", ".join(allow)})


def busy(retry_after: int, limit: int, waited: float) -> ApiError:
    """503 from the concurrency limiter."""
    return ApiError(503, "server_busy",
                    "all %d run slots are busy (server.max_concurrent_runs) and none freed "
                    "up within %gs (server.queue_timeout_secs); retry later" % (limit, waited),
                    headers={"Retry-After": str(retry_after)})


def shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "the server is shutting down; retry on another "
                    "instance or after it restarts", headers={"Retry-After": "5",
                                                               "Connection": "close"})


def timeout(message: str, session_id: str = "") -> ApiError:
    """504: the backend run exceeded server.request_timeout_secs and was killed."""
    return ApiError(504, "timeout", message + " (server.request_timeout_secs)",
                    extra={"session_id": session_id} if session_id else None)


def backend_not_authenticated(backend: str, message: str, session_id: str = "") -> ApiError:
    """401 ``backend_not_authenticated``: the backend's CLI on the server could not authenticate
    to its model API (the message says how to fix it on the server). Not the client's key:
    clinvk's own key check answers 401 ``unauthorized``."""
    return ApiError(401, "backend_not_authenticated", "the %s backend on the server cannot "
                    "authenticate: %s" % (backend, message),
                    extra={"session_id": session_id} if session_id else None)


def backend_rate_limited(backend: str, message: str, retry_after: Optional[int] = None,
                         session_id: str = "") -> ApiError:
    """429 ``backend_rate_limited``: the backend's model API refused the call for its rate or
    quota, with Retry-After when the CLI said when to come back. Not clinvk's own limit,
    which answers 429 ``rate_limited``."""
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return ApiError(429, "backend_rate_limited", "the %s backend's model API rate-limited the "
                    "run: %s" % (backend, message), headers=headers,
                    extra={"session_id": session_id} if session_id else None)


def cancelled(message: str) -> ApiError:
    """503: the run was stopped by the server (shutdown) before it finished."""
    return ApiError(503, "cancelled", message)


def internal(request_id: str) -> ApiError:
    """500 for a bug: the details go to the server log, never to the client."""
    return ApiError(500, "internal_error", "internal server error; the server log has the "
                    "details under request id %s" % request_id)
