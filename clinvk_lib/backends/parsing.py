"""What a CLI prints, turned into unified events and a ``Result``: the stream parser every
backend's parser builds on, the tolerant JSON decoding of stdout (CLIs mix noise lines into
it), the one line of an error text that says what went wrong, and the class of a failure
(the CLI cannot authenticate, or its model API rate-limited it) from the CLI's own words.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, List, Optional, Tuple

from .. import events as ev

# The ``code`` of a fatal error event whose failure has a class every front end reports alike:
# the CLI cannot authenticate to its model API (not logged in, key refused), or the model API
# refused the call for its rate or quota. ``retry_after`` (seconds) rides along when the CLI
# said when to come back.
NOT_AUTHENTICATED = "not_authenticated"
RATE_LIMITED = "rate_limited"
# The codes the parsers give an API error with an HTTP status (claude's api_error_status,
# gemini's error.code): the status alone decides the class.
_STATUS_CLASSES = {"api_error_401": NOT_AUTHENTICATED, "api_error_403": NOT_AUTHENTICATED,
                   "api_error_429": RATE_LIMITED}
# How the CLIs and the APIs behind them say when to retry: "Please retry in 37.5s" (Gemini
# API), "Please try again in 1.5s" / "in 20 seconds" (OpenAI API), "retry after 30 seconds",
# "Retry-After: 7".
_RETRY_AFTER = re.compile(r"(?:retry|try again)(?:[- ]after)?:?\s*(?:in\s*)?(\d+(?:\.\d+)?)\s*"
                          r"(ms|milliseconds?|s|secs?|seconds?)?\b", re.IGNORECASE)


class Result:
    """The outcome of one finished run, parsed from the backend's output."""

    __slots__ = ("backend", "text", "backend_session_id", "model", "usage", "error",
                 "exit_code", "duration_ms", "events", "structured")

    def __init__(self, backend: str, text: str = "", backend_session_id: str = "",
                 model: str = "", usage: Optional[ev.Usage] = None, error: str = "",
                 exit_code: int = 0, duration_ms: int = 0,
                 events: Optional[List[ev.Event]] = None, structured: Any = None) -> None:
        self.backend = backend
        self.text = text
        self.backend_session_id = backend_session_id
        self.model = model
        self.usage = usage or ev.Usage()
        self.error = error
        self.exit_code = exit_code
        self.duration_ms = duration_ms
        self.events = events or []
        # The value a CLI that enforces an output schema reported apart from its text
        # (claude's structured_output); None when there is none.
        self.structured = structured

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error

    def __repr__(self) -> str:
        return ("Result(backend=%r, text=%r, sid=%r, exit=%r, error=%r)"
                % (self.backend, self.text[:60], self.backend_session_id, self.exit_code,
                   self.error))


class StreamParser:
    """Turns one run's stdout lines into unified events, keeping what it learns.

    ``feed(line)`` returns the events for that line (possibly none); ``finish(exit_code,
    stderr)`` returns the closing events (an ``error`` if the run failed and none was seen,
    then exactly one ``done``, whose content also has ``structured_output`` when the CLI
    reported one). After ``finish``, ``result()`` gives the collected Result.
    Subclasses implement ``parse_line``; the bookkeeping here is shared.
    """

    backend_name = ""
    # The ``type`` values of the line a complete run always ends with. A run that exits 0
    # without one printed something else than its protocol (invalid JSON, a crash message),
    # and that is a failure, not an empty answer.
    final_types: Tuple[str, ...] = ()
    # Lower-case pieces of this CLI's error texts (stdout or stderr) that mean it cannot
    # authenticate, or that its model API rate-limited it; each backend lists its CLI's words.
    auth_failure_markers: Tuple[str, ...] = ()
    rate_limit_markers: Tuple[str, ...] = ()

    def __init__(self) -> None:
        self.events: List[ev.Event] = []
        self.backend_session_id = ""
        self.model = ""
        self.usage = ev.Usage()
        self.error = ""
        self.saw_final = False
        self.first_noise = ""         # the first stdout line that was not JSON
        self.structured: Any = None   # see Result.structured
        self._finished = False

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        """Events for one decoded JSON value (``obj``) from stdout. Override per backend."""
        raise NotImplementedError

    def feed(self, line: str) -> List[ev.Event]:
        line = line.strip()
        if not line:
            return []
        obj = decode_json_line(line)
        if obj is None:
            self.first_noise = self.first_noise or line[:200]
            return []               # CLI noise on stdout: never shown as model output
        return self.feed_value(obj, line)

    def feed_value(self, obj: Any, line: str = "") -> List[ev.Event]:
        """Like ``feed`` for a value already decoded (an element of a JSON array output)."""
        if isinstance(obj, dict) and obj.get("type") in self.final_types:
            self.saw_final = True
        out = self.parse_line(obj, line)
        for e in out:
            if e.type == ev.ERROR and e.content.get("fatal", True):
                self.classify(e)
                self.error = self.error or e.content.get("message", "")
        self.events.extend(out)
        return out

    def classify(self, event: ev.Event, more_text: str = "") -> None:
        """Give a fatal error event the code of its class (NOT_AUTHENTICATED, RATE_LIMITED) when
        its code (an HTTP status or the API's status name), its message or ``more_text`` (the
        CLI's stderr) says so, and a rate-limited one the ``retry_after`` seconds the text
        names."""
        code = event.content.get("code", "")
        text = "%s\n%s\n%s" % (code, event.content.get("message", ""), more_text)
        kind = _STATUS_CLASSES.get(code) or failure_class(text, self.auth_failure_markers,
                                                          self.rate_limit_markers)
        if not kind:
            return
        event.content["code"] = kind
        wait = retry_after_secs(text) if kind == RATE_LIMITED else None
        if wait is not None:
            event.content["retry_after"] = wait

    def finish(self, exit_code: int, stderr: str = "") -> List[ev.Event]:
        if self._finished:
            return []
        self._finished = True
        out: List[ev.Event] = []
        if exit_code != 0 and not self.error:
            self.error = failure_message(self.backend_name, exit_code, stderr)
            out.append(ev.error(self.backend_name, self.error, code="exit_%d" % exit_code))
            self.classify(out[-1], stderr)
        elif exit_code == 0 and not self.error and not self.saw_final:
            self.error = ("%s printed no JSON result: it exited 0 without the line that "
                          "ends a run%s" % (self.backend_name, (
                              " (first line that is not JSON: %r)" % self.first_noise)
                              if self.first_noise else ""))
            out.append(ev.error(self.backend_name, self.error, code="no_result"))
        done = ev.done(self.backend_name, self.usage, self.model, self.backend_session_id,
                       exit_code)
        if self.structured is not None:
            done.content["structured_output"] = self.structured
        out.append(done)
        self.events.extend(out)
        return out

    def result(self, exit_code: int, duration_ms: int = 0) -> Result:
        return Result(self.backend_name, ev.collect_text(self.events), self.backend_session_id,
                      self.model, self.usage, self.error, exit_code, duration_ms,
                      list(self.events), self.structured)


def decode_json_line(line: str) -> Any:
    """The JSON value of one stdout line, or None when the line is not JSON (CLI noise)."""
    if not line or line[0] not in "{[":
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def decode_json_document(text: str) -> Any:
    """The JSON value in a whole stdout, tolerating noise lines before and after it.

    Accepts one (possibly pretty-printed) object or array, or NDJSON (returns the list of
    decoded lines). Returns None when nothing decodes.
    """
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    values = []
    i = 0
    while i < len(text):
        start = min((p for p in (text.find("{", i), text.find("[", i)) if p >= 0), default=-1)
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        values.append(value)
        i = end
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def classified_failure(result: Result) -> Tuple[str, Optional[ev.Event]]:
    """(NOT_AUTHENTICATED or RATE_LIMITED, its error event) when a failed run's first fatal
    error has one of those classes, else ("", None)."""
    first = next((e for e in result.events
                  if e.type == ev.ERROR and e.content.get("fatal", True)), None)
    kind = first.content.get("code", "") if first is not None and not result.ok else ""
    if kind in (NOT_AUTHENTICATED, RATE_LIMITED):
        return kind, first
    return "", None


def failure_class(text: str, auth_markers: Tuple[str, ...],
                  rate_markers: Tuple[str, ...]) -> str:
    """NOT_AUTHENTICATED or RATE_LIMITED when ``text`` holds one of the markers (lower case) of
    that class, else ""."""
    lowered = text.lower()
    if any(m in lowered for m in auth_markers):
        return NOT_AUTHENTICATED
    if any(m in lowered for m in rate_markers):
        return RATE_LIMITED
    return ""


def retry_after_secs(text: str) -> Optional[int]:
    """The whole seconds (rounded up, at least 1) an error text asks to wait before a retry,
    or None when it names no delay."""
    m = _RETRY_AFTER.search(text)
    if not m:
        return None
    value = float(m.group(1))
    if (m.group(2) or "s").lower().startswith("m"):
        value /= 1000.0
    return max(1, int(math.ceil(value)))


def stderr_error(stderr: str) -> Tuple[str, str]:
    """(message, type) of the last ``{"error": {"message": ..., "type": ...}}`` object a CLI
    printed on stderr (qwen-code 0.24.4 and gemini 0.61.0 end a failed json run with one,
    pretty-printed), or ("", "")."""
    doc = decode_json_document(stderr)
    for value in reversed(doc if isinstance(doc, list) else [doc]):
        error = value.get("error") if isinstance(value, dict) else None
        if isinstance(error, dict) and as_str(error.get("message")):
            return as_str(error.get("message")), as_str(error.get("type"))
    return "", ""


def failure_message(backend: str, exit_code: int, stderr: str) -> str:
    """A one-line error for a run that failed without saying why on stdout."""
    tail = error_line(stderr)
    if exit_code < 0:
        what = "%s was killed by signal %d" % (backend, -exit_code)
    else:
        what = "%s exited with code %d" % (backend, exit_code)
    return "%s: %s" % (what, tail) if tail else what


def api_error_detail(message: str) -> Tuple[str, str]:
    """(readable message, code) from an error text that embeds a JSON API error body.

    The CLIs pass a model API's error body through (codex-cli 0.169.0:
    '{"error": {"message": "...", "type": "invalid_request_error"}}'; gemini 0.61.0:
    '[API Error: {"error":{"code":400,"message":"...","status":"INVALID_ARGUMENT"}}]').
    Other texts come back unchanged with an empty code.
    """
    start, end = message.find("{"), message.rfind("}")
    if start < 0 or end < start:
        return message, ""
    try:
        body = json.loads(message[start:end + 1])
    except ValueError:
        return message, ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return message, ""
    code = error.get("status") or error.get("type") or error.get("code") or ""
    return error["message"], str(code)


def error_line(text: str, limit: int = 500) -> str:
    """The line of a CLI's stderr that best says what went wrong.

    The first line starting with "error" (clap's "error: unexpected argument ...", codex's
    "Error: thread/resume ...", gemini's "Error resuming session ..."), which comes before
    usage texts and stack traces; otherwise the last non-blank line.
    """
    for line in (text or "").splitlines():
        line = line.strip()
        if line[:5].lower() == "error":
            return line[:limit]
    return last_meaningful_line(text, limit)


def last_meaningful_line(text: str, limit: int = 500) -> str:
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line:
            return line[:limit]
    return ""


def as_str(value: Any) -> str:
    """A JSON string as it is; anything else is ""."""
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int:
    """A JSON number as int; anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return 0
